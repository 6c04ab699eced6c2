"""``denseav-global-fixed`` (avlegrad/mask_metrics/denseav_global_fixed.py) against a slow
reference written from its definition: DenseAV's path (one min-max over the set, bilinear to the
mask, per class the pooled AP and the best IoU over 20 thresholds linspace(min, max)), the means
taken over the classes with a positive pixel only."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avlegrad.mask_metrics import MaskMetricInputs, list_mask_metrics, mask_metric
from test_segmentation import ref_average_precision, ref_multi_iou  # the slow references of DenseAV's path


def slow_reference(maps, gts, classes):
    low = min(float(m.min()) for m in maps)
    high = max(float(m.max()) for m in maps)
    pooled = {}
    for m, g, c in zip(maps, gts, classes):
        norm = (torch.tensor(m, dtype=torch.float32) - low) / (high - low)
        if norm.shape != g.shape:  # DenseAV: F.interpolate, bilinear, align_corners=False
            norm = F.interpolate(norm[None, None], size=g.shape, mode="bilinear", align_corners=False)[0, 0]
        scores, targets = pooled.setdefault(c, ([], []))
        scores.append(norm.numpy().ravel())
        targets.append(g.ravel().astype(bool))
    aps, ious = [], []
    for scores, targets in pooled.values():
        scores, targets = np.concatenate(scores), np.concatenate(targets)
        if not targets.any():
            continue  # the correction: a class without a positive pixel is left out
        aps.append(ref_average_precision(scores, targets))
        ious.append(ref_multi_iou(scores, targets))
    return (float(np.mean(aps)), float(np.mean(ious))) if aps else (math.nan, math.nan)


def case(rng, size=24, map_size=24, n=7, levels=5):
    gts, classes, maps = [], [], []
    for i in range(n):
        gt = np.zeros((size, size), bool)
        if i % 3:  # class 0 (clips 0, 3, 6) has no positive pixel
            y, x = rng.integers(0, size // 2, 2)
            gt[y:y + rng.integers(2, size // 2), x:x + rng.integers(2, size // 2)] = True
        gts.append(gt)
        classes.append(0 if i % 3 == 0 else 1 + i % 2)
        maps.append(rng.integers(0, levels, (map_size, map_size)).astype(np.float32) * 0.7 + 0.1)  # ties
    return maps, gts, classes


def test_it_is_registered_by_its_file_alone():
    assert "denseav-global-fixed" in list_mask_metrics()
    assert mask_metric("denseav-global-fixed").figures == ("mAP", "mIoU")


@pytest.mark.parametrize("seed,map_size", [(0, 24), (1, 24), (2, 6), (3, 12)])
def test_matches_the_slow_reference(seed, map_size):
    maps, gts, classes = case(np.random.default_rng(seed), map_size=map_size)
    got = mask_metric("denseav-global-fixed")(MaskMetricInputs(maps, gts, classes))
    want_ap, want_iou = slow_reference(maps, gts, classes)
    assert got["mAP"] == pytest.approx(want_ap, abs=1e-6)
    assert got["mIoU"] == pytest.approx(want_iou, abs=1e-6)
    assert got["classes"] == 2 and got["classes_without_positives"] == 1 and got["images"] == len(maps)
    # beside DenseAV's own figures, which count the empty class as AP 0 and IoU 0
    plain = mask_metric("denseav-global")(MaskMetricInputs(maps, gts, classes))
    assert plain["mAP"] == pytest.approx(got["mAP"] * 2 / 3, abs=1e-6)
    assert plain["mIoU"] == pytest.approx(got["mIoU"] * 2 / 3, abs=1e-6)


def test_without_any_positive_pixel_the_figures_are_nan():
    maps, gts, classes = case(np.random.default_rng(4), n=3)
    gts = [np.zeros_like(g) for g in gts]
    got = mask_metric("denseav-global-fixed")(MaskMetricInputs(maps, gts, classes))
    assert math.isnan(got["mAP"]) and math.isnan(got["mIoU"]) and got["classes"] == 0


def test_a_perfect_map_scores_one():
    maps, gts, classes = case(np.random.default_rng(5))
    got = mask_metric("denseav-global-fixed")(MaskMetricInputs([g.astype(np.float32) for g in gts], gts, classes))
    assert got["mAP"] == pytest.approx(1.0) and got["mIoU"] == pytest.approx(1.0)
