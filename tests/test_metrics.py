"""Metrics against slow references written from the definitions, and the real VGG-SS figures."""
import json
import math

import numpy as np
import pytest
import torch

from avlegrad.metrics import (FIXED_THRESHOLDS, LocalizationMeter, center_prior, ciou, ciou_at_thresholds,
                              consensus_iou, format_summary, gt_map, normalize_map, predicted_mask,
                              resize_map, summarize)

# ---------------------------------------------------------------------------------------------
# slow references: explicit loops, straight from benchmarks.md / EZ-VSL
# ---------------------------------------------------------------------------------------------


def ref_vggss_gt(boxes, size):
    gt = [[0.0] * size for _ in range(size)]
    for box in boxes:
        x0, y0, x1, y1 = (int(min(max(float(v), 0.0), 1.0) * size) for v in box)
        for y in range(size):
            for x in range(size):
                if y0 <= y < y1 and x0 <= x < x1:
                    gt[y][x] = 1.0
    return np.array(gt)


def ref_flickr_gt(boxes, size):
    count = [[0] * size for _ in range(size)]
    for box in boxes:
        x0, y0, x1, y1 = (int(size * v / 256) for v in box)
        rows, cols = range(size)[y0:y1], range(size)[x0:x1]  # python slicing, as numpy's
        for y in rows:
            for x in cols:
                count[y][x] += 1
    return np.array([[min(c / 2, 1.0) for c in row] for row in count])


def ref_bilinear_align_corners(src, out_h, out_w):
    in_h, in_w = len(src), len(src[0])
    out = [[0.0] * out_w for _ in range(out_h)]
    for i in range(out_h):
        y = i * (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = min(int(math.floor(y)), in_h - 1)
        y1 = min(y0 + 1, in_h - 1)
        wy = y - y0
        for j in range(out_w):
            x = j * (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = min(int(math.floor(x)), in_w - 1)
            x1 = min(x0 + 1, in_w - 1)
            wx = x - x0
            top = src[y0][x0] * (1 - wx) + src[y0][x1] * wx
            bottom = src[y1][x0] * (1 - wx) + src[y1][x1] * wx
            out[i][j] = top * (1 - wy) + bottom * wy
    return out


def ref_ciou(pred_small, gt, threshold=None):
    h, w = gt.shape
    pred = ref_bilinear_align_corners(pred_small.tolist(), h, w)
    flat = [v for row in pred for v in row]
    low, high = min(flat), max(flat)
    if high != low:
        pred = [[(v - low) / (high - low) for v in row] for row in pred]
        flat = [v for row in pred for v in row]
    thr = sorted(flat)[int(h * w * 0.5)] if threshold is None else threshold
    inter = union_gt = extra = 0.0
    for y in range(h):
        for x in range(w):
            infer = 1.0 if pred[y][x] >= thr else 0.0
            inter += infer * gt[y, x]
            union_gt += gt[y, x]
            extra += infer * (1.0 if gt[y, x] == 0 else 0.0)
    return inter / (union_gt + extra) if union_gt + extra > 0 else 0.0


def ref_summary(cious):
    n = len(cious)
    curve = [sum(1 for c in cious if c >= 0.05 * i) / n for i in range(21)]
    xs = [0.05 * i for i in range(21)]
    auc = sum((xs[i + 1] - xs[i]) * (curve[i + 1] + curve[i]) / 2 for i in range(20))
    return {"n": n, "ap50": sum(1 for c in cious if c >= 0.5) / n, "mean_ciou": sum(cious) / n, "auc": auc}


# ---------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------

VGGSS_CASES = [
    [[0.403125, 0.253125, 0.6, 0.75]],
    [[0.1, 0.1, 0.5, 0.4], [0.3, 0.2, 0.9, 0.95]],  # overlapping: union, not sum
    [[-0.2, 0.5, 1.3, 1.0]],  # slightly outside: clipped
    [[0.384375, 0.859375, 0.696875, -2.8823037615171176e16]],  # the corrupt value: empty
    [[0.534375, 0.3375, -2.8823037615171176e16, 0.909375], [0.2, 0.2, 0.4, 0.4]],
    [[0.00625, 0.015625, 0.00625, 0.015625]],  # degenerate: zero width
    [[0.26875, 1.0, 0.753125, 1.0]],  # degenerate at the border
    [[0.7, 0.7, 0.2, 0.2]],  # reversed corners: empty slice
    [[0.0, 0.0, 1.0, 1.0]],
    [[0.2, 0.3, math.inf, 0.8]],  # infinite: clipped to the border
]


@pytest.mark.parametrize("boxes", VGGSS_CASES)
@pytest.mark.parametrize("size", [224, 37])
def test_vggss_gt_matches_reference(boxes, size):
    np.testing.assert_array_equal(gt_map(boxes, "vggss", size), ref_vggss_gt(boxes, size))


def test_vggss_gt_survives_what_the_reference_would_crash_on():
    gt = gt_map([[0.1, 0.1, 0.5, 0.5], [math.nan, 0.1, 0.2, 0.3], [0.1, 0.2], []], "vggss", 64)
    np.testing.assert_array_equal(gt, ref_vggss_gt([[0.1, 0.1, 0.5, 0.5]], 64))
    assert gt_map([], "vggss").sum() == 0 and gt_map(None, "vggss").shape == (224, 224)


FLICKR_CASES = [
    [[10, 20, 120, 200]],  # one annotator: 0.5
    [[10, 20, 120, 200], [50, 60, 256, 256]],  # overlap of two: 1
    [[10, 20, 120, 200], [50, 60, 256, 256], [0, 0, 100, 100]],  # three: capped at 1
    [[30, 30, 30, 90], [100, 40, 90, 200]],  # degenerate and reversed: empty
    [[0, 0, 256, 256], [0, 0, 256, 256]],
]


@pytest.mark.parametrize("boxes", FLICKR_CASES)
def test_flickr_gt_consensus_matches_reference(boxes):
    gt = gt_map(boxes, "flickr")
    np.testing.assert_array_equal(gt, ref_flickr_gt(boxes, 224))
    assert set(np.unique(gt)) <= {0.0, 0.5, 1.0}


def test_flickr_gt_levels():
    gt = gt_map([[0, 0, 128, 256], [64, 0, 256, 256]], "flickr")
    assert gt[0, 10] == 0.5 and gt[0, 100] == 1.0 and gt[0, 200] == 0.5
    assert int(224 * 128 / 256) == 112 and gt[0, 111] == 1.0 and gt[0, 112] == 0.5


def test_unknown_box_format():
    with pytest.raises(ValueError, match="flickr"):
        gt_map([[0, 0, 1, 1]], "coco")


# ---------------------------------------------------------------------------------------------
# prediction side
# ---------------------------------------------------------------------------------------------

def test_resize_matches_bilinear_align_corners_reference():
    src = np.random.default_rng(0).random((7, 9))
    got = resize_map(src, (31, 40))
    np.testing.assert_allclose(got, np.array(ref_bilinear_align_corners(src.tolist(), 31, 40)), atol=1e-12)
    np.testing.assert_array_equal(resize_map(src, (7, 9)), src)  # same size: untouched


@pytest.mark.parametrize("seed", range(4))
def test_ciou_matches_reference(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random((7, 7)) ** 3
    (x0, x1), (y0, y1) = np.sort(rng.random(2)), np.sort(rng.random(2))
    gt = gt_map([[x0, y0, x1, y1], [0.6, 0.1, 0.9, 0.3]], "vggss")
    want = ref_ciou(pred, gt)
    assert ciou(pred, gt) == pytest.approx(want, abs=1e-12)
    assert ciou(torch.from_numpy(pred).float()[None, None], gt) == pytest.approx(want, abs=1e-6)


def test_ciou_flickr_consensus_weights():
    gt = gt_map(FLICKR_CASES[1], "flickr")
    pred = np.random.default_rng(5).random((14, 14))
    assert ciou(pred, gt) == pytest.approx(ref_ciou(pred, gt), abs=1e-12)


def test_ciou_of_a_perfect_half_image_prediction():
    gt = np.zeros((224, 224))
    gt[:, :112] = 1
    pred = np.zeros((224, 224))
    pred[:, :112] = 1
    # the threshold index int(H*W*0.5) falls on the first 1, so exactly the left half is kept
    assert ciou(pred, gt) == 1.0


def test_constant_map_is_whole_image_not_nan():
    gt = gt_map([[0.0, 0.0, 0.5, 0.5]], "vggss")
    for constant in (np.zeros((7, 7)), np.full((224, 224), 3.0), torch.ones(1, 1, 14, 14)):
        value = ciou(constant, gt)
        assert not math.isnan(value)
        assert value == pytest.approx(gt.sum() / gt.size)  # everything predicted
    assert normalize_map(np.full((3, 3), 2.0)).tolist() == np.zeros((3, 3)).tolist()


def test_non_finite_prediction_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        ciou(np.array([[0.0, np.nan], [1.0, 2.0]]), np.ones((4, 4)))


def test_zero_area_gt_scores_zero():
    gt = gt_map([[0.3, 0.3, 0.3, 0.6]], "vggss")
    assert gt.sum() == 0
    assert ciou(np.random.default_rng(1).random((7, 7)), gt) == 0.0
    assert consensus_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 0.0  # 0/0 defined as 0


def test_predicted_mask_keeps_about_half():
    mask = predicted_mask(np.random.default_rng(2).random((7, 7)))
    assert mask.shape == (224, 224) and 0.5 <= mask.mean() <= 0.51


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------

def test_summarize_matches_reference():
    cious = list(np.random.default_rng(3).random(57)) + [0.0, 0.5, 1.0, 0.05, 0.15]
    got, want = summarize(cious), ref_summary(cious)
    assert got["n"] == want["n"]
    for key in ("ap50", "mean_ciou", "auc"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)


def test_auc_matches_sklearn_as_ezvsl_calls_it():
    metrics = pytest.importorskip("sklearn.metrics")
    cious = np.random.default_rng(4).random(100)
    curve = [np.sum(cious >= 0.05 * i) / len(cious) for i in range(21)]
    assert summarize(cious)["auc"] == pytest.approx(metrics.auc([0.05 * i for i in range(21)], curve), abs=1e-12)


def test_summarize_edge_cases():
    assert summarize([1.0, 1.0]) == {"n": 2, "ap50": 1.0, "mean_ciou": 1.0, "auc": pytest.approx(1.0)}
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["ap50"])


def test_fixed_thresholds_match_reference():
    rng = np.random.default_rng(6)
    pred, gt = rng.random((7, 7)), gt_map([[0.2, 0.1, 0.7, 0.6]], "vggss", 56)
    got = ciou_at_thresholds(pred, gt)
    assert got.shape == (19,) and FIXED_THRESHOLDS[0] == 0.05 and FIXED_THRESHOLDS[-1] == 0.95
    for t, value in zip(FIXED_THRESHOLDS, got):
        assert value == pytest.approx(ref_ciou(pred, gt, threshold=t), abs=1e-12)


def test_meter_accumulates():
    rng = np.random.default_rng(7)
    meter = LocalizationMeter(fixed_thresholds=(0.3, 0.6))
    gts = [gt_map([[0.1, 0.1, 0.6, 0.7]], "vggss"), gt_map(FLICKR_CASES[2], "flickr")]
    preds = [rng.random((7, 7)) for _ in gts]
    values = [meter.update(p, g, clip_id=f"c{i}") for i, (p, g) in enumerate(zip(preds, gts))]
    assert values == [ciou(p, g) for p, g in zip(preds, gts)]
    assert len(meter) == 2 and meter.per_clip()[1] == ("c1", values[1])
    summary = meter.summary()
    assert {k: summary[k] for k in ("n", "ap50", "mean_ciou", "auc")} == summarize(values)
    fixed = summary["fixed_thresholds"]
    assert fixed["thresholds"] == [0.3, 0.6] and len(fixed["ap50"]) == 2
    assert "AP50(cIoU)=" in format_summary(summary) and "N=2" in format_summary(summary)
    meter.reset()
    assert len(meter) == 0 and meter.summary()["n"] == 0


# ---------------------------------------------------------------------------------------------
# the real VGG-SS annotations (when ../shared/data is present)
# ---------------------------------------------------------------------------------------------

def test_real_vggss_counts(shared_data):
    from avlegrad.data.annotations import check_boxes, read_vggss_json

    annotations = read_vggss_json(shared_data / "vggss" / "vggss.json")
    report = check_boxes(annotations.values())
    assert (report.clips, report.boxes) == (5158, 5941)
    assert (report.corrupt_boxes, report.degenerate_boxes, report.zero_area_clips) == (12, 6, 2)
    assert sorted(report.examples["zero_area_clips"]) == ["M1P1xla8rg0_000000", "MKC9LvRivTM_000030"]
    assert len({a.label for a in annotations.values()}) == 221
    assert sum(len(a.boxes) == 1 for a in annotations.values()) == 4619
    # every corrupt box gives an empty slice (no crash), and the two zero-area clips an empty map
    assert gt_map(annotations["MKC9LvRivTM_000030"].boxes, "vggss").sum() == 0


def test_center_prior_reproduces_the_published_figure(shared_data):
    entries = json.loads((shared_data / "vggss" / "vggss.json").read_text())
    prior = center_prior()
    mask = predicted_mask(prior)  # the same mask for every clip: threshold it once
    assert mask.sum() == 25100 and mask[112, 112] == 1 and mask[0, 0] == 0
    assert np.array_equal(mask, mask[::-1]) and np.array_equal(mask, mask.T)  # centred disc
    cious = [consensus_iou(mask, gt_map(e["bbox"], "vggss")) for e in entries]
    assert ciou(prior, gt_map(entries[0]["bbox"], "vggss")) == cious[0]  # the full path agrees
    summary = summarize(cious)
    assert summary["n"] == 5158
    assert 100 * summary["ap50"] == pytest.approx(34.02, abs=0.01)
    assert 100 * summary["auc"] == pytest.approx(37.44, abs=0.01)
