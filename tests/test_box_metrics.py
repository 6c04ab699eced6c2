"""The registry of box-benchmark metric variants (avlegrad/box_metrics.py) and its wiring into
evaluate(): stored per clip, summarised per method, printed, resumed; every registered variant
checked on hand-made maps."""
import json

import numpy as np
import pytest
from PIL import Image

from avlegrad import metrics
from avlegrad.box_metrics import (BoxMetricVariant, _VARIANTS, box_metric, list_box_metrics,
                                  register_box_metric)
from avlegrad.data import write_audio
from avlegrad.eval import EvalOptions, evaluate, format_table

SR = 16000


def write_bench(root, n=3):
    root.mkdir(parents=True)
    rows = ["clip_id,x0,y0,x1,y1,image_width,image_height"]
    rng = np.random.default_rng(1)
    for k in range(n):
        rows.append(f"c{k},{10 * k},{5 * k},{100 + 20 * k},{120 + 10 * k},200,160")
        (root / "frames").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(root / "frames" / f"c{k}.jpg")
        write_audio(root / "audio" / f"c{k}.wav", 0.3 * np.sin(np.arange(SR) / 5.0), SR)
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def gt_fraction():
    """A test variant: the fraction of the image the ground truth covers, and its mean."""

    @register_box_metric
    class GtFraction(BoxMetricVariant):
        name = "gt-fraction-test"
        description = "the fraction of the image inside the boxes"

        def clip(self, heatmap, gt):
            return float((gt > 0).mean())

        def summarise(self, values):
            return {"n": len(values), "mean": float(np.mean(values))}

    yield GtFraction
    _VARIANTS.pop("gt-fraction-test")


def test_a_registered_variant_is_scored_stored_resumed_and_printed(tmp_path, gt_fraction):
    root = write_bench(tmp_path / "bench")
    opts = dict(dataset="csv-boxes", root=str(root), methods=["center"], out=str(tmp_path / "run"), device="cpu")
    plain = evaluate(EvalOptions(**opts))
    assert "gt-fraction-test" not in plain["methods"]["center"]
    summary = evaluate(EvalOptions(**opts, box_metrics=["gt-fraction-test"]))  # resumes: adds the variant only
    rows = [json.loads(line) for line in (tmp_path / "run" / "clips.jsonl").read_text().splitlines()]
    from avlegrad.data import create_dataset

    ds = create_dataset("csv-boxes", root)
    want = [float((metrics.gt_map(ds[i].boxes, "vggss") > 0).mean()) for i in range(3)]
    assert [r["gt-fraction-test"]["center"] for r in rows] == want
    assert summary["methods"]["center"]["gt-fraction-test"] == {"n": 3, "mean": pytest.approx(np.mean(want))}
    assert summary["methods"]["center"]["ap50"] == plain["methods"]["center"]["ap50"]  # the protocol unchanged
    table = format_table(summary)
    assert "gt-fraction-test:" in table and "center" in table.split("gt-fraction-test:")[1]


def test_unknown_or_misplaced_variants_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown box metric 'nope'; registered:"):
        box_metric("nope")
    with pytest.raises(ValueError, match="not a BoxMetricVariant subclass"):
        register_box_metric(dict)
    root = write_bench(tmp_path / "bench")
    with pytest.raises(ValueError, match="unknown box metric 'nope'"):
        evaluate(EvalOptions(dataset="csv-boxes", root=str(root), methods=["center"], box_metrics=["nope"],
                             out=str(tmp_path / "run"), device="cpu"))


@pytest.mark.parametrize("name", list_box_metrics())
def test_every_registered_variant_on_hand_made_maps(name):
    """Each registered variant: JSON values per clip (a perfect map, a constant map, the centre prior),
    a summary of JSON numbers, and a printable line."""
    variant = box_metric(name)
    gt = metrics.gt_map([[0.25, 0.25, 0.75, 0.75]], "vggss")
    maps = [gt.copy(), np.zeros((7, 7)), metrics.center_prior(), np.random.default_rng(0).random((14, 14))]
    values = [json.loads(json.dumps(variant.clip(m, gt))) for m in maps]
    figures = variant.summarise(values)
    json.dumps(figures, allow_nan=False)
    assert isinstance(variant.table(figures), str) and variant.description
