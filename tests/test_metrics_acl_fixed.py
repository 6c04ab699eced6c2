"""The acl-fixed box metric variant (avlegrad/metrics_acl_fixed.py), against its definition
written out here, on hand-made maps with ties, and through evaluate()."""
import json

import numpy as np
import pytest

from avlegrad import metrics
from avlegrad.box_metrics import box_metric, list_box_metrics
from avlegrad.eval import EvalOptions, evaluate

THRESHOLDS = [0.05 * i for i in range(1, 20)]


def ref_ciou_fixed(heatmap, gt, t):
    """EZ-VSL's cIoU with ``infer = normalised map >= t``; the map is already 224 x 224 here."""
    h = np.asarray(heatmap, dtype=np.float64)
    h = (h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else np.zeros_like(h)
    infer = h >= t
    return np.sum(infer * (gt > 0)) / (np.sum(gt) + np.sum(infer * (gt == 0)))


def test_matches_the_definition():
    assert "acl-fixed" in list_box_metrics()
    variant = box_metric("acl-fixed")
    rng = np.random.default_rng(0)
    gt = metrics.gt_map([[0.1, 0.2, 0.6, 0.9]], "vggss")
    ramp = np.tile(np.linspace(0, 1, 224), (224, 1))  # every threshold cuts the ramp
    steps = np.round(rng.random((224, 224)) * 4) / 4  # ties at 0.25, 0.5, 0.75 exactly on the grid
    for heatmap in (ramp, steps, gt.copy(), rng.random((224, 224))):
        got = variant.clip(heatmap, gt)
        want = [ref_ciou_fixed(heatmap, gt, round(t, 2)) for t in THRESHOLDS]
        np.testing.assert_allclose(got, want, atol=1e-12)
    assert variant.clip(gt, gt)[9] == 1.0  # the GT itself: perfect at t = 0.5
    values = [variant.clip(h, gt) for h in (ramp, gt.copy(), np.zeros((224, 224)))]
    figures = variant.summarise(values)
    ap50 = [np.mean([v[j] >= 0.5 for v in values]) for j in range(19)]
    np.testing.assert_allclose(figures["ap50"], ap50)
    assert figures["best"]["threshold"] == figures["thresholds"][int(np.argmax(ap50))]
    assert "best t" in variant.table(figures)


def test_through_evaluate(tmp_path):
    from test_box_metrics import write_bench

    root = write_bench(tmp_path / "bench")
    summary = evaluate(EvalOptions(dataset="csv-boxes", root=str(root), methods=["center"], box_metrics=["acl-fixed"],
                                   out=str(tmp_path / "run"), device="cpu"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "clips.jsonl").read_text().splitlines()]
    prior = metrics.center_prior()
    from avlegrad.data import create_dataset

    ds = create_dataset("csv-boxes", root)
    for i, row in enumerate(rows):
        gt = metrics.gt_map(ds[i].boxes, "vggss")
        np.testing.assert_allclose(row["acl-fixed"]["center"], [ref_ciou_fixed(prior, gt, round(t, 2))
                                                               for t in THRESHOLDS], atol=1e-12)
    assert summary["methods"]["center"]["acl-fixed"]["ap50"][9] == pytest.approx(
        np.mean([r["acl-fixed"]["center"][9] >= 0.5 for r in rows]))
