"""The scoring-kind registry (avlegrad.scoring): every registered kind runs the protocol
``avlegrad.eval.run`` relies on, every dataset's kind is registered, and a new kind is one class."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avlegrad.data.record import ClipRecord
from avlegrad.data.registry import _DATASETS, register_dataset
from avlegrad.eval import EvalOptions, scoring_for
from avlegrad.scoring import _SCORINGS, Scoring, list_scorings, register_scoring, scoring_class

SIZE = 224


def dataset_split_of(kind: str):
    """The first registered (dataset, split) scored by ``kind``."""
    for spec in _DATASETS.values():
        for split in spec.splits:
            if spec.scoring_kind(split) == kind:
                return spec.name, split
    pytest.skip(f"no registered dataset is scored by {kind!r}")


def hand_made_clip():
    """A clip whose annotation is the top half of the frame, both as a box and as a mask, and a map
    falling from the top row to the bottom one (the median threshold keeps the top half: a perfect
    map) beside its reverse (a map whose kept half misses the annotation)."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:SIZE // 2] = True
    frame = np.full((SIZE, SIZE, 3), 127, np.uint8)
    record = ClipRecord("clip/0", frame, np.zeros(16000, np.float32), 16000, boxes=[[0.0, 0.0, 1.0, 0.5]],
                        box_format="vggss", label="dog", meta={"negative": False, "class_id": 1}, mask=mask)
    falling = (1 - torch.arange(SIZE, dtype=torch.float32) / (SIZE - 1))[:, None].expand(SIZE, SIZE)
    return record, {"perfect": falling[None].clone(), "missing": (1 - falling)[None].clone()}


class EncodeImage(torch.nn.Module):
    """Enough of a model for observe_batch: a fixed image embedding."""

    def encode_image(self, images):
        return torch.ones(len(images), 4)


@pytest.mark.parametrize("kind", list_scorings())
def test_every_registered_scoring_kind_runs_the_protocol(kind, tmp_path):
    cls = scoring_class(kind)
    assert issubclass(cls, Scoring) and cls.kind == kind and not getattr(cls, "__abstractmethods__", None)
    dataset, split = dataset_split_of(kind)
    scoring = scoring_for(EvalOptions(dataset=dataset, split=split))
    assert type(scoring) is cls
    record, maps = hand_made_clip()
    scoring.start(tmp_path, EvalOptions(dataset=dataset, split=split), True)
    scoring.observe_batch(EncodeImage(), torch.zeros(1, 3, SIZE, SIZE), torch.ones(1, 4), maps, {})
    row = scoring.score(record, maps, 0, tmp_path)
    assert row["clip_id"] == "clip/0" and json.loads(json.dumps(row)) == row
    assert scoring.is_done(row, tmp_path) and not scoring.is_done({"clip_id": "x", "skipped": "why"}, tmp_path)
    methods = ["perfect", "missing", *scoring.baselines]
    summary = scoring.summarise(tmp_path, [row], methods)
    assert set(summary["methods"]) == set(methods)
    assert all(summary["methods"][m]["n"] == 1 for m in methods)
    if "ap50" in summary["methods"]["perfect"]:  # the box figure, where the kind reports it: by its definition
        assert summary["methods"]["perfect"]["ap50"] == 1 and summary["methods"]["missing"]["ap50"] == 0
    table = scoring.format_table({**summary, "annotation_report": None})
    assert all(m in table for m in ("perfect", "missing"))
    scoring.save_overlay(tmp_path / "overlay.png", record, maps["perfect"][0], SIZE)
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_every_dataset_names_a_registered_kind():
    for spec in _DATASETS.values():
        for split in spec.splits:
            assert spec.scoring_kind(split) in list_scorings(), (spec.name, split)
            assert scoring_class(spec.scoring_kind(split)).kind == spec.scoring_kind(split)


def test_a_new_scoring_kind_is_one_class(tmp_path):
    @register_scoring("x-count")
    class CountScoring(Scoring):
        baselines = ()

        def is_done(self, row, out):
            return "count" in row

        def score(self, record, maps, i, out):
            return {"clip_id": record.clip_id, "count": {m: int((v[i] > 0.5).sum()) for m, v in maps.items()}}

        def save_overlay(self, path, record, heatmap, image_size):
            Path(path).write_bytes(b"")

        def summarise(self, out, scored, methods):
            return {"methods": {m: {"n": len(scored), "count": sum(r["count"][m] for r in scored)} for m in methods}}

        def format_table(self, summary):
            return "\n".join(f"{m} {r['count']}" for m, r in summary["methods"].items())

    try:
        register_dataset("x-counted", scoring="x-count")(lambda root, **kw: None)
        register_dataset("x-mixed", splits=("a", "b"), scoring={"a": "x-count", "b": "boxes"})(lambda root, **kw: None)
        assert "x-count" in list_scorings()
        assert isinstance(scoring_for(EvalOptions(dataset="x-counted")), CountScoring)
        assert isinstance(scoring_for(EvalOptions(dataset="x-mixed", split="a")), CountScoring)
        assert scoring_for(EvalOptions(dataset="x-mixed", split="b")).kind == "boxes"
        record, maps = hand_made_clip()
        scoring = scoring_for(EvalOptions(dataset="x-counted"))
        row = scoring.score(record, maps, 0, tmp_path)
        above = {m: sum(int(v > 0.5) for v in (1 - np.arange(SIZE) / (SIZE - 1))) * SIZE for m in ("perfect",)}
        assert row["count"] == {"perfect": above["perfect"], "missing": SIZE * SIZE - above["perfect"]}
    finally:
        for name in ("x-counted", "x-mixed"):
            _DATASETS.pop(name, None)
        _SCORINGS.pop("x-count", None)


def test_register_scoring_checks_its_arguments():
    with pytest.raises(ValueError, match="is not a subclass of avlegrad.scoring.Scoring"):
        register_scoring("x-bad")(dict)
    with pytest.raises(ValueError, match="'boxes' is already registered by avlegrad.eval.boxes.BoxScoring"):
        scoring_class("boxes")
        register_scoring("boxes")(type("Other", (Scoring,), {}))
    with pytest.raises(ValueError, match="non-empty name"):
        register_scoring("")
    with pytest.raises(ValueError, match="unknown scoring kind 'nope'; valid: boxes, masks, sound-following"):
        scoring_class("nope")
    with pytest.raises(ValueError, match="scoring must give a kind for each split"):
        register_dataset("x-test", splits=("a", "b"), scoring={"a": "boxes"})
    assert "x-bad" not in list_scorings() and "x-test" not in _DATASETS


@pytest.mark.parametrize("dataset, option, message", [
    ("vggsound", {"confidence": "cosine"}, "`confidence` applies to the extended sets"),
    ("vggsound", {"seg_metrics": ["avsbench-official"]}, "`seg_metrics` applies to the segmentation datasets"),
    ("avsbench-s4", {"box_metrics": ["acl-fixed"]}, "box metrics .* apply to the box benchmarks"),
    ("avsbench-s4", {"confidence": "cosine"}, "`confidence` applies to the extended sets"),
    ("is3", {"box_metrics": ["acl-fixed"]}, "box metrics .* apply to the box benchmarks"),
    ("is3", {"seg_metrics": ["avsbench-official"]}, "`seg_metrics` applies to the segmentation datasets"),
    ("is3", {"confidence": "cosine"}, "`confidence` applies to the extended sets"),
])
def test_each_kind_refuses_the_options_of_the_others(dataset, option, message):
    with pytest.raises(ValueError, match=message):
        scoring_for(EvalOptions(dataset=dataset, **option))
