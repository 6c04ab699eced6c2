"""The registry of segmentation metric variants (avlegrad/mask_metrics/): every registered variant
checked on hand-made maps, the shipped ones equal to the metric functions they wrap (whose
references are in tests/test_segmentation.py), the datasets' defaults registered, a new variant is
one function, and the registry's errors."""
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from avlegrad import segmentation_metrics as sm
from avlegrad.data.record import ClipRecord
from avlegrad.data.registry import _DATASETS, register_dataset
from avlegrad.eval import EvalOptions, scoring_for
from avlegrad.eval.results import json_safe
from avlegrad.mask_metrics import (_VARIANTS, MaskMetricInputs, list_mask_metrics, mask_metric, mask_metrics_help,
                                   register_mask_metric, score_mask_metrics)

SIZE = 32


def hand_made_set():
    """Six clips of two prompt classes and one of a class without positives (an empty mask); the
    maps: perfect (the mask), constant, the centre prior, random (with ties), and at a lower
    resolution than the mask."""
    rng = np.random.default_rng(0)
    gts, classes = [], []
    for i in range(6):
        gt = np.zeros((SIZE, SIZE), bool)
        if i < 5:
            y, x = rng.integers(0, SIZE // 2, 2)
            gt[y:y + 8 + i, x:x + 10] = True
        gts.append(gt)
        classes.append("empty" if i == 5 else i % 2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    center = 1 - np.hypot(yy - SIZE / 2, xx - SIZE / 2) / np.hypot(SIZE / 2, SIZE / 2)
    maps = {"perfect": [g.astype(np.float32) for g in gts],
            "constant": [np.full((SIZE, SIZE), 0.5, np.float32) for _ in gts],
            "center": [center.astype(np.float32) for _ in gts],
            "random": [rng.integers(0, 4, (SIZE, SIZE)).astype(np.float32) / 3 for _ in gts],  # ties
            "low-res": [rng.random((SIZE // 4, SIZE // 4)).astype(np.float32) for _ in gts]}
    return maps, gts, classes


class Lazy:
    """A sequence that loads on indexing (as the stored maps do), counting the loads."""

    def __init__(self, items):
        self.items, self.loads = items, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.loads += 1
        return self.items[i].copy()


@pytest.mark.parametrize("name", list_mask_metrics())
def test_every_registered_variant_on_hand_made_maps(name):
    variant = mask_metric(name)
    assert variant.name == name and variant.figures and variant.description
    maps, gts, classes = hand_made_set()
    for kind, m in maps.items():
        before = [a.copy() for a in m]
        result = variant(MaskMetricInputs(m, gts, classes, batch_frames=4))
        assert json.loads(json.dumps(json_safe(result))) == json_safe(result), (name, kind)  # stored as JSON
        for figure in variant.figures:
            value = result[figure]
            assert isinstance(value, float) and (math.isnan(value) or 0 <= value <= 1), (name, kind, figure, value)
        assert all(np.array_equal(a, b) for a, b in zip(m, before)), (name, kind)  # the maps are only read
        # the same figures from lazily loading sequences (the run's stored maps)
        lazy = variant(MaskMetricInputs(Lazy(m), Lazy(gts), classes, batch_frames=4))
        assert json_safe(lazy) == json_safe(result), (name, kind)
    perfect = variant(MaskMetricInputs(maps["perfect"], gts, classes, batch_frames=4))
    random = variant(MaskMetricInputs(maps["random"], gts, classes, batch_frames=4))
    if not name.startswith("avsbench-official"):  # (the official AVSBench form is meant for logits)
        assert perfect[variant.figures[0]] >= random[variant.figures[0]], name


def test_the_shipped_variants_are_the_metric_functions_they_wrap():
    maps, gts, classes = hand_made_set()
    for kind in ("random", "low-res"):
        m = maps[kind]
        for v in sm.PROMPTED_VARIANTS:
            want = sm.prompted_segmentation_metrics(m, gts, classes, variant=v).as_dict()
            assert mask_metric(v)(MaskMetricInputs(m, gts, classes)) == want
        meter = sm.AVSBenchMeter()
        for pred, gt in zip(m, gts):
            meter.update(sm.resize_maps(torch.from_numpy(pred)[None], gt.shape)[0].numpy(), gt)
        got = score_mask_metrics(MaskMetricInputs(m, gts, classes, batch_frames=4),
                                 ["avsbench-official", "avsbench-dataset"])
        assert got["n"] == len(gts)
        assert got["avsbench-official"] == {"mIoU": meter.official_miou(4), "F": meter.official_fscore(4),
                                            "batch_frames": 4}
        sweep = meter.miou_sweep()
        assert got["avsbench-dataset"]["mIoU"] == sweep["best"]
        assert got["avsbench-dataset"]["F"] == meter.dataset_fscore()["F"]


def test_the_avsbench_variants_share_one_pass_over_the_frames():
    maps, gts, classes = hand_made_set()
    lazy = Lazy(maps["random"])
    score_mask_metrics(MaskMetricInputs(lazy, gts, classes), ["avsbench-official", "avsbench-dataset"])
    assert lazy.loads == len(gts)


def test_every_dataset_default_is_a_registered_variant():
    registered = set(list_mask_metrics())
    for spec in _DATASETS.values():
        for split in spec.splits:
            assert set(spec.default_metrics(split)) <= registered, (spec.name, split)
            if spec.scoring_kind(split) == "masks":  # the shipped segmentation benchmarks declare theirs
                assert spec.default_metrics(split), (spec.name, split)
    assert _DATASETS["ade20k-sound"].default_metrics("taco") == ("taco-per-image", "taco-per-image-fixed")
    assert _DATASETS["ade20k-sound"].default_metrics("test") == ("denseav-global", "taco-per-image")
    assert _DATASETS["avsbench-ms3"].default_metrics("val") == ("avsbench-official", "avsbench-dataset")


def test_a_dataset_declares_its_defaults_per_split(tmp_path):
    try:
        register_dataset("x-masks", splits=("a", "b"), scoring="masks",
                         metrics={"a": ["avsbench-dataset"], "b": "taco-per-image"})(lambda root, **kw: None)
        assert scoring_for(EvalOptions(dataset="x-masks", split="a")).variants == ["avsbench-dataset"]
        assert scoring_for(EvalOptions(dataset="x-masks", split="b")).variants == ["taco-per-image"]
        register_dataset("x-masks-none", scoring="masks")(lambda root, **kw: None)
        with pytest.raises(ValueError, match="'x-masks-none' has no default segmentation metrics: name them "
                                             "with `seg_metrics` \\(among denseav-global, "):
            scoring_for(EvalOptions(dataset="x-masks-none"))
        with pytest.raises(ValueError, match="metrics names splits \\['c'\\] not in"):
            register_dataset("x-masks-bad", splits=("a",), scoring="masks", metrics={"c": ["taco-per-image"]})
    finally:
        for name in ("x-masks", "x-masks-none"):
            _DATASETS.pop(name, None)


@pytest.fixture
def gt_share():
    """A test variant: the mean share of each clip's map inside its mask."""

    @register_mask_metric("gt-share-test", figures=("share",), description="the map's mass inside the mask")
    def gt_share(inputs):
        shares = []
        for i in range(len(inputs.gts)):
            m, g = np.asarray(inputs.maps[i], np.float64), inputs.gts[i]
            shares.append(float(m[g].sum() / m.sum()) if m.sum() > 0 else 0.0)
        return {"share": float(np.mean(shares)), "clips": len(shares)}

    yield gt_share
    _VARIANTS.pop("gt-share-test")


def test_a_new_variant_is_one_function_scored_by_the_mask_scoring(gt_share, tmp_path):
    assert "gt-share-test" in list_mask_metrics() and "gt-share-test: the map's mass" in mask_metrics_help()
    scoring = scoring_for(EvalOptions(dataset="ade20k-sound", seg_metrics=["gt-share-test", "denseav-global"]))
    size = 224  # the benchmarks' mask size (the baselines' maps)
    mask = np.zeros((size, size), bool)
    mask[:size // 4] = True
    record = ClipRecord("clip/0", np.zeros((size, size, 3), np.uint8), np.zeros(16000, np.float32), 16000,
                        mask=mask, label="dog", meta={"class_id": 3})
    heat = torch.zeros(1, size, size)
    heat[0, :size // 2] = 1  # half of its mass inside the mask
    row = scoring.score(record, {"legrad": heat}, 0, tmp_path)
    summary = scoring.summarise(tmp_path, [row], ["legrad", "whole"])
    assert summary["methods"]["legrad"]["gt-share-test"] == {"share": 0.5, "clips": 1}
    assert summary["methods"]["whole"]["gt-share-test"]["share"] == pytest.approx(0.25)
    assert summary["metrics"]["gt-share-test"] == "the map's mass inside the mask"
    table = scoring.format_table(summary)
    assert "gt-share-test:share" in table and "50.00" in table and "denseav-global:mAP" in table


def test_the_cli_help_lists_every_registered_variant(capsys):
    from avlegrad.eval_cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in list_mask_metrics():
        assert f"{name}: " in text, name


def test_registry_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown segmentation metric 'nope'; choose from denseav-global, "):
        mask_metric("nope")
    with pytest.raises(ValueError, match="unknown segmentation metric\\(s\\) nope; choose from denseav-global"):
        scoring_for(EvalOptions(dataset="ade20k-sound", seg_metrics=["nope"]))
    with pytest.raises(ValueError, match="figures must be a non-empty list"):
        register_mask_metric("x", figures=(), description="")
    with pytest.raises(ValueError, match="non-empty name"):
        register_mask_metric("", figures=("a",), description="")
    with pytest.raises(ValueError, match="'denseav-global' is already registered by avlegrad.mask_metrics.builtin"):
        register_mask_metric("denseav-global", figures=("mAP",), description="")(lambda inputs: {})
    try:
        register_mask_metric("x-missing", figures=("mIoU",), description="")(lambda inputs: {"miou": 1.0})
        maps, gts, classes = hand_made_set()
        with pytest.raises(ValueError, match="mask metric 'x-missing' returned no mIoU"):
            mask_metric("x-missing")(MaskMetricInputs(maps["perfect"], gts, classes))
    finally:
        _VARIANTS.pop("x-missing", None)


def test_a_variant_registered_before_the_registrys_first_use_comes_after_the_shipped_ones():
    """In a fresh interpreter, a box and a mask metric variant registered from outside the package
    before anything asked for the registries: the lists (and so the help and the errors) still
    start with the shipped variants."""
    code = textwrap.dedent("""
        from avlegrad.box_metrics import BoxMetricVariant, list_box_metrics, register_box_metric
        from avlegrad.mask_metrics import list_mask_metrics, register_mask_metric

        @register_box_metric
        class Mine(BoxMetricVariant):
            name = "mine-box"

        @register_mask_metric("mine-mask", figures=("x",), description="d")
        def mine(inputs):
            return {"x": 0.0}

        print(list_box_metrics()[-1], list_box_metrics()[0], list_mask_metrics()[-1], list_mask_metrics()[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], text=True,
                         capture_output=True, check=True).stdout.split()
    assert out == ["mine-box", "acl-fixed", "mine-mask", "denseav-global"]
