"""Segmentation benchmarks prompted by sound: the metrics against slow references written from
their reference code, the readers on small fixtures in each published layout, eval.py end to end
(tiny random CLIP, text prompts), and the DenseAV download script against a local server."""
import csv
import http.server
import importlib.util
import io
import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
try:  # a cross-check where scikit-learn is installed (it is not a dependency)
    from sklearn.metrics import average_precision_score
except ImportError:  # pragma: no cover
    average_precision_score = None

import eval as eval_cli
from avlegrad import segmentation_metrics as sm
from avlegrad.data import ClipRecord, SkippedClip, create_dataset, write_audio
from avlegrad.data.segmentation import ade_class_map
from conftest import serve_directory

REPO = Path(__file__).resolve().parents[1]
SR = 16000
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


# =============================================================================================
# Slow references, written from the reference code with explicit loops
# =============================================================================================

def ref_average_precision(scores, targets):
    """sum_k (R_k - R_{k-1}) P_k over the distinct scores, highest first (predict score >= t)."""
    scores, targets = np.asarray(scores, np.float64).ravel(), np.asarray(targets, bool).ravel()
    positives = targets.sum()
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        tp = np.sum(predicted & targets)
        precision, recall = tp / predicted.sum(), tp / positives
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def ref_multi_iou(prediction, target, k=20):
    """DenseAV's multi_iou, one threshold at a time."""
    prediction = torch.tensor(np.asarray(prediction, np.float32).ravel())
    target = torch.tensor(np.asarray(target).ravel()) > 0.5
    best = 0.0
    for t in torch.linspace(prediction.min(), prediction.max(), k):
        hard = prediction > t
        inter = torch.logical_and(hard, target).sum().float()
        union = torch.logical_or(hard, target).sum().float()
        union = 1.0 if union == 0 else union
        best = max(best, float(inter / union))
    return best


def tm_average_precision(scores, targets):
    """torchmetrics' binary_average_precision, the call both references make."""
    import warnings

    from torchmetrics.functional.classification import binary_average_precision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(binary_average_precision(scores.flatten(), targets.flatten().int()))


def ref_denseav(maps, gts, classes):
    """DenseAV eval_utils.py: prep_heatmap (hm -= hm.min(); hm /= hm.max() over every map of the
    set, then F.interpolate(bilinear) to the mask's size), get_paired_heatmaps (per class
    torch.unique, pixels pooled, binary_average_precision and multi_iou), train.py
    torch.tensor(v).mean()."""
    hm = torch.tensor(np.stack(maps).astype(np.float32))
    hm -= hm.min()
    hm /= hm.max()
    h, w = gts[0].shape
    hm = F.interpolate(hm.unsqueeze(1), (h, w), mode="bilinear").squeeze(1)
    gt = torch.tensor(np.stack(gts))
    prompt_classes = torch.tensor(classes)
    aps, ious = [], []
    for c in torch.unique(prompt_classes):
        subset = torch.where(prompt_classes == c)[0]
        aps.append(tm_average_precision(hm[subset], gt[subset]))
        ious.append(ref_multi_iou(hm[subset].flatten(), gt[subset].flatten()))
    return float(torch.tensor(aps).mean()), float(torch.tensor(ious).mean())


def ref_taco(maps, gts, classes, size=224):
    """TACO taco/metrics.py: resize_map(minmax(map)) per map (minmax without epsilon, bicubic
    align_corners=True to size x size), then per_class_detection_scores (torch.unique classes,
    multi_iou and binary_average_precision on the pooled pixels, means over classes)."""
    predictions = []
    for m in maps:
        m = torch.tensor(np.asarray(m, np.float32))
        m = (m - m.min()) / (m.max() - m.min())
        predictions.append(F.interpolate(m.view(1, 1, *m.shape), size=(size, size), mode="bicubic",
                                         align_corners=True).squeeze())
    predictions = torch.stack(predictions)
    targets = torch.stack([torch.tensor(np.asarray(g, np.float32)) for g in gts])
    class_ids = torch.as_tensor(classes)
    aps, ious = [], []
    for c in torch.unique(class_ids):
        selected = class_ids == c
        aps.append(tm_average_precision(predictions[selected], targets[selected]))
        ious.append(ref_multi_iou(predictions[selected].flatten(), targets[selected].flatten()))
    return float(torch.tensor(aps).mean()), float(torch.tensor(ious).mean())


def ref_official_avsbench(preds, gts, batch_size):
    """AVSBench test.py: mask_iou and Eval_Fmeasure per batch, AverageMeter over batches."""
    miou_sum, f_sum, batches = 0.0, 0.0, 0
    for start in range(0, len(preds), batch_size):
        pred = torch.tensor(np.stack(preds[start:start + batch_size]).astype(np.float32))
        target = torch.tensor(np.stack(gts[start:start + batch_size]).astype(np.float32))
        # mask_iou
        n, num_pixels = pred.size(0), pred.size(-1) * pred.size(-2)
        no_obj = target.sum(2).sum(1) == 0
        hard = (torch.sigmoid(pred) > 0.5).int()
        inter = (hard * target).sum(2).sum(1)
        union = torch.max(hard, target).sum(2).sum(1)
        inter[no_obj] = ((1 - target) * (1 - hard)).sum(2).sum(1)[no_obj]
        union[no_obj] = num_pixels
        miou_sum += float(torch.sum(inter / (union + 1e-7)) / n)
        # Eval_Fmeasure
        sig = torch.sigmoid(pred)
        avg_f, img_num, score = 0.0, 0, torch.zeros(255)
        for i in range(n):
            if torch.mean(target[i]) == 0.0:
                continue
            thlist = torch.linspace(0, 1 - 1e-10, 255)
            prec, recall = torch.zeros(255), torch.zeros(255)
            for j in range(255):
                y_temp = (sig[i] >= thlist[j]).float()
                tp = (y_temp * target[i]).sum()
                prec[j], recall[j] = tp / (y_temp.sum() + 1e-20), tp / (target[i].sum() + 1e-20)
            f = (1 + 0.3) * prec * recall / (0.3 * prec + recall)
            f[f != f] = 0
            avg_f += f
            img_num += 1
            score = avg_f / img_num
        f_sum += float(score.max())
        batches += 1
    return miou_sum / batches, f_sum / batches


def ref_dataset_avsbench(preds, gts):
    """ACL-SSL's corrected figures: IoU of pred > thr per frame, dataset mean, best thr; the F
    curves (no sigmoid) of all frames with an object averaged, then the max."""
    curve = []
    for thr in sm.SWEEP_THRESHOLDS:
        ious = []
        for p, g in zip(preds, gts):
            pred = torch.tensor(p.astype(np.float32)) > thr
            g = torch.tensor(g)
            if not g.any():
                ious.append(float((~pred).sum()) / (g.numel() + 1e-7))
            else:
                ious.append(float((pred & g).sum()) / (float((pred | g).sum()) + 1e-7))
        curve.append(np.mean(ious))
    fs = []
    thlist = torch.linspace(0, 1 - 1e-10, 255)
    for p, g in zip(preds, gts):
        if not g.any():
            continue
        p, g = torch.tensor(p.astype(np.float32)), torch.tensor(g.astype(np.float32))
        f = torch.zeros(255, dtype=torch.float64)
        for j in range(255):
            y = (p >= thlist[j]).float()
            tp = float((y * g).sum())
            prec, rec = tp / (float(y.sum()) + 1e-20), tp / (float(g.sum()) + 1e-20)
            f[j] = 0.0 if prec + rec == 0 else 1.3 * prec * rec / (0.3 * prec + rec)
        fs.append(f.numpy())
    return max(curve), float(np.max(np.mean(fs, axis=0)))


def random_maps(rng, n, size=16, levels=None):
    maps = rng.random((n, size, size)).astype(np.float32)
    if levels:  # coarse values: many ties, as float16 maps have
        maps = np.round(maps * levels) / levels
    gts = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        y, x = rng.integers(0, size - 4, 2)
        gts[i, y:y + rng.integers(2, 8), x:x + rng.integers(2, 8)] = True
        maps[i][gts[i]] += 0.3 * rng.random()  # some signal
    return list(maps), list(gts)


# =============================================================================================
# Metrics
# =============================================================================================

@pytest.mark.parametrize("levels", [None, 7])
def test_average_precision_matches_definition_and_sklearn(levels):
    rng = np.random.default_rng(0)
    for _ in range(4):
        scores = rng.random(500).astype(np.float32)
        if levels:
            scores = (np.round(scores * levels) / levels).astype(np.float32)
        targets = rng.random(500) < 0.3
        ours = sm.binary_average_precision(scores, targets)
        assert ours == pytest.approx(ref_average_precision(scores, targets), abs=1e-12)
        if average_precision_score is not None:
            assert ours == pytest.approx(average_precision_score(targets, scores), abs=1e-12)
    assert math.isnan(sm.binary_average_precision(np.ones(5), np.zeros(5)))
    assert sm.binary_average_precision(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0


def test_best_threshold_iou_matches_multi_iou():
    rng = np.random.default_rng(1)
    for levels in (None, 5):
        maps, gts = random_maps(rng, 3, levels=levels)
        scores, targets = np.stack(maps).ravel(), np.stack(gts).ravel()
        assert sm.best_threshold_iou(scores, targets) == pytest.approx(ref_multi_iou(scores, targets), abs=1e-7)
    # a constant map predicts nothing at any threshold (strict >): IoU 0, as DenseAV scores it
    assert sm.best_threshold_iou(np.ones(10), np.r_[np.ones(3), np.zeros(7)]) == 0.0
    assert sm.best_threshold_iou(np.r_[np.ones(3), np.zeros(7)], np.r_[np.ones(3), np.zeros(7)]) == 1.0


def test_torchmetrics_average_precision_is_the_definition():
    rng = np.random.default_rng(12)
    for levels in (None, 6):
        scores = rng.random(400).astype(np.float32)
        if levels:
            scores = (np.round(scores * levels) / levels).astype(np.float32)
        targets = rng.random(400) < 0.2
        ours = sm.torchmetrics_average_precision(torch.tensor(scores), torch.tensor(targets))
        assert ours == pytest.approx(ref_average_precision(scores, targets), abs=1e-6)
    # no positive: AP 0 from torchmetrics 1.4 on (NaN before); the issue's case 3 rests on it
    assert sm.torchmetrics_average_precision(torch.rand(9), torch.zeros(9, dtype=torch.bool)) == 0.0


def test_denseav_global_matches_get_paired_heatmaps():
    rng = np.random.default_rng(2)
    maps = [rng.random((14, 14)).astype(np.float32) * rng.uniform(0.5, 3) + rng.uniform(-1, 1) for _ in range(9)]
    gts = [rng.random((32, 32)) < 0.15 for _ in range(9)]
    for i in (2, 4, 7):
        gts[i][:] = False  # class 11: no positive pixel (AP 0, IoU 0, kept in the means)
    classes = [3, 3, 11, 3, 11, 5, 5, 11, 5]
    result = sm.prompted_segmentation_metrics(maps, gts, classes, "denseav-global")
    m_ap, m_iou = ref_denseav(maps, gts, classes)
    assert result.mAP == pytest.approx(m_ap, abs=1e-6) and result.mIoU == pytest.approx(m_iou, abs=1e-6)
    assert result.classes == 3 and result.images == 9 and result.classes_without_positives == 1
    assert result.per_class[11] == {"ap": 0.0, "iou": 0.0, "images": 3, "positive_pixels": 0}
    # the older name of the variant
    assert sm.prompted_segmentation_metrics(maps, gts, classes, "global").mAP == result.mAP


def test_taco_per_image_matches_taco_on_60_maps():
    """The issue's comparison: 60 random 14 x 14 maps, random 224 x 224 masks; TACO normalises
    each map at 14 x 14, then resizes bicubic (align_corners=True): values leave [0, 1] and
    torchmetrics applies its sigmoid. Our earlier path (bilinear resize, then normalise) differs."""
    rng = np.random.default_rng(21)
    maps = [rng.random((14, 14)).astype(np.float32) for _ in range(60)]
    gts = []
    for _ in range(60):
        g = np.zeros((224, 224), dtype=bool)
        y, x = rng.integers(0, 112, 2)
        g[y:y + rng.integers(60, 112), x:x + rng.integers(60, 112)] = True
        gts.append(g)
    classes = [int(c) for c in rng.integers(0, 6, 60)]
    result = sm.prompted_segmentation_metrics(maps, gts, classes, "taco-per-image")
    m_ap, m_iou = ref_taco(maps, gts, classes)
    assert result.mAP == pytest.approx(m_ap, abs=1e-6) and result.mIoU == pytest.approx(m_iou, abs=1e-6)
    upsampled = [F.interpolate(torch.tensor(m)[None, None], size=(224, 224), mode="bilinear")[0, 0].numpy()
                 for m in maps]
    earlier = sm.prompted_segmentation_metrics(upsampled, gts, classes, "taco-per-image-fixed")
    assert abs(earlier.mAP - result.mAP) > 5e-3
    # without constant maps or empty classes, the fixed variant is TACO's path
    fixed = sm.prompted_segmentation_metrics(maps, gts, classes, "taco-per-image-fixed")
    assert fixed.mAP == result.mAP and fixed.mIoU == result.mIoU


def test_issue_case_class_without_positive_pixels():
    """Two 4 x 4 identity maps, masks identity and all-false, classes [0, 1]: DenseAV's and TACO's
    code (torchmetrics >= 1.4) give that class AP 0: mAP 0.5; the fixed variant leaves it out."""
    maps = [np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)]
    gts = [np.eye(4, dtype=bool), np.zeros((4, 4), dtype=bool)]
    for variant, reference in (("denseav-global", ref_denseav(maps, gts, [0, 1])),
                               ("taco-per-image", ref_taco(maps, gts, [0, 1], size=4))):
        result = sm.prompted_segmentation_metrics(maps, gts, [0, 1], variant)
        assert (result.mAP, result.mIoU) == pytest.approx(reference, abs=1e-7)
        assert result.mAP == pytest.approx(0.5) and result.per_class[1]["iou"] == 0.0
        assert result.classes_without_positives == 1
    fixed = sm.prompted_segmentation_metrics(maps, gts, [0, 1], "taco-per-image-fixed")
    assert fixed.mAP == 1.0 and fixed.mIoU == 1.0 and fixed.classes_without_positives == 1


def test_issue_case_constant_map():
    """A 4 x 4 map of 0.7 and a 0..15 ramp, one class, 2 positive pixels each: TACO's minmax makes
    the constant map NaN; multi_iou's thresholds become NaN (IoU 0) and torchmetrics ranks the NaN
    scores: AP 0.2559. The fixed variant turns the constant map into zeros: AP 0.5625, IoU 0.5."""
    const = np.full((4, 4), 0.7, dtype=np.float32)
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4)
    g_const, g_ramp = np.zeros(16, dtype=bool), np.zeros(16, dtype=bool)
    g_const[[0, 1]] = True
    g_ramp[[14, 15]] = True
    maps, gts = [const, ramp], [g_const.reshape(4, 4), g_ramp.reshape(4, 4)]
    taco = sm.prompted_segmentation_metrics(maps, gts, [7, 7], "taco-per-image")
    assert (taco.mAP, taco.mIoU) == pytest.approx(ref_taco(maps, gts, [7, 7], size=4), abs=1e-7)
    assert taco.mAP == pytest.approx(0.2559, abs=5e-5) and taco.mIoU == 0.0 and taco.constant_maps == 1
    fixed = sm.prompted_segmentation_metrics(maps, gts, [7, 7], "taco-per-image-fixed")
    assert fixed.mAP == pytest.approx(0.5625, abs=1e-7) and fixed.mIoU == pytest.approx(0.5, abs=1e-7)
    assert fixed.mAP == pytest.approx(ref_average_precision(np.r_[np.zeros(16), ramp.ravel() / 15],
                                                            np.r_[g_const, g_ramp]), abs=1e-7)
    # DenseAV: one min-max over the set, so a constant map is only NaN when every map is the same constant
    flat = sm.prompted_segmentation_metrics([const, const], gts, [7, 7], "denseav-global")
    assert (flat.mAP, flat.mIoU) == pytest.approx(ref_denseav([const, const], gts, [7, 7]), abs=1e-7, nan_ok=True)
    assert flat.mIoU == 0.0


def test_global_normalisation_is_a_rescaling_per_image_is_not():
    rng = np.random.default_rng(3)
    maps, gts = random_maps(rng, 6)
    classes = [0, 0, 0, 1, 1, 1]
    maps = [m * s for m, s in zip(maps, [1, 5, 0.2, 1, 3, 0.5])]
    raw = sm.prompted_segmentation_metrics(maps, gts, classes, "denseav-global")
    shifted = sm.prompted_segmentation_metrics([10 * m + 4 for m in maps], gts, classes, "denseav-global")
    per_image = sm.prompted_segmentation_metrics(maps, gts, classes, "taco-per-image")
    assert raw.mAP == pytest.approx(shifted.mAP, abs=1e-6) and raw.mIoU == pytest.approx(shifted.mIoU, abs=1e-6)
    assert abs(raw.mAP - per_image.mAP) > 1e-4


@pytest.mark.parametrize("batch_size", [1, 3, 5, 20])
def test_avsbench_official_figures_match_test_py(batch_size):
    rng = np.random.default_rng(4)
    maps, gts = random_maps(rng, 7)
    gts[2][:] = False  # a frame with no object: IoU from true negatives, left out of F
    maps[4] = maps[4] - 0.5  # logits-like values: some below 0
    miou, fscore = ref_official_avsbench(maps, gts, batch_size)
    assert sm.avsbench_official_miou(maps, gts, batch_size) == pytest.approx(miou, abs=1e-6)
    assert sm.avsbench_official_fscore(maps, gts, batch_size) == pytest.approx(fscore, abs=1e-5)


def test_avsbench_official_fscore_depends_on_batch_size():
    rng = np.random.default_rng(5)
    maps, gts = random_maps(rng, 8)
    maps = [m * s for m, s in zip(maps, [4, 0.3, 2, 1, 6, 0.5, 1, 3])]  # best thresholds differ per frame
    by_batch = {b: sm.avsbench_official_fscore(maps, gts, b) for b in (1, 2, 4, 8)}
    assert by_batch[1] > by_batch[2] > by_batch[8]  # a max per batch: smaller batches, more optimism
    for b, value in by_batch.items():
        assert value == pytest.approx(ref_official_avsbench(maps, gts, b)[1], abs=1e-5)
    # one batch holding every frame = the dataset-level max of the mean curve (of sigmoid(map))
    sigmoid = [sm.sigmoid_float32(m) for m in maps]
    assert by_batch[8] == pytest.approx(sm.avsbench_dataset_fscore(sigmoid, gts)["F"], abs=1e-9)


def test_official_miou_on_heatmaps_predicts_the_whole_image():
    """sigmoid(h) > 0.5 for every h > 0: a [0, 1] heatmap is scored as the whole image."""
    rng = np.random.default_rng(6)
    maps, gts = random_maps(rng, 4)
    maps = [np.clip(m, 0.01, 1) for m in maps]
    whole = [np.ones_like(m) for m in maps]
    assert sm.avsbench_official_miou(maps, gts, 2) == pytest.approx(sm.avsbench_official_miou(whole, gts, 2))
    fractions = [g.mean() for g in gts]
    assert sm.avsbench_official_miou(maps, gts, 4) == pytest.approx(np.mean(fractions), abs=1e-6)


def test_avsbench_dataset_level_figures_match_acl_ssl():
    rng = np.random.default_rng(7)
    maps, gts = random_maps(rng, 6, levels=10)
    maps = [np.clip(m, 0, 1) for m in maps]
    gts[1][:] = False
    best_miou, best_f = ref_dataset_avsbench(maps, gts)
    sweep = sm.avsbench_miou_sweep(maps, gts)
    assert sweep["best"] == pytest.approx(best_miou, abs=1e-7)
    assert len(sweep["miou"]) == 19 and sweep["best_threshold"] in [round(t, 4) for t in sm.SWEEP_THRESHOLDS]
    assert sm.avsbench_dataset_fscore(maps, gts)["F"] == pytest.approx(best_f, abs=1e-7)


def test_metric_input_checks():
    with pytest.raises(ValueError, match="differs"):
        sm.avsbench_official_miou([np.zeros((4, 4))], [np.zeros((5, 5))])
    with pytest.raises(ValueError, match="unknown variant 'median'"):
        sm.prompted_segmentation_metrics([], [], [], "median")
    with pytest.raises(ValueError, match="batch_size"):
        sm.avsbench_official_fscore([np.zeros((4, 4))], [np.ones((4, 4))], 0)


# =============================================================================================
# Fixtures in the published layouts
# =============================================================================================

def tone(seconds, freq=440.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def seg_png(classes_map):
    """An ADE20K _seg.png encoding full-index classes: R = class // 256 * 10, G = class % 256."""
    rgb = np.zeros(classes_map.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = (classes_map // 256) * 10
    rgb[..., 1] = classes_map % 256
    rgb[..., 2] = 7  # instance channel, ignored
    return rgb


ADE_ROWS = [  # image, class, class name, has sound prompt, has speech prompt, timing
    ("validation/ADE_val_00000001.jpg", 2978, "person", True, True, "[1.0, 1.5]"),
    ("validation/ADE_val_00000002.jpg", 2978, "person", True, True, "[2.0, 2.25]"),
    ("validation/ADE_val_00000003.jpg", 1520, "dog", True, True, "[0.1, 0.6]"),
    ("validation/ADE_val_00000004.jpg", 1520, "dog", False, True, ""),  # no sound prompt; no timing
    ("validation/ADE_val_00000005.jpg", 0, "-", True, True, "[0.5, 1.0]"),  # class 0: dropped
    ("validation/ADE_val_00000001.jpg", 312, "car", True, False, ""),  # same image, another class
]


def write_ade(root, rng):
    """DenseAV's ADE20K*Prompted layout for both datasets in one folder (one csv)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (location, cls, name, sound, speech, timing) in enumerate(ADE_ROWS):
        stem = location[:-4]
        h, w = (30, 48) if n % 2 else (50, 36)  # not square: resize + centre crop matters
        frame_path = root / "frames" / location
        if not frame_path.exists():
            frame_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(frame_path, quality=95)
            classes = np.full((h, w), 2, dtype=np.int64)
            classes[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 2978 if n != 2 else 1520
            classes[:3, :] = 312
            seg = root / "annotations" / f"{stem}_seg.png"
            seg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(seg_png(classes)).save(seg)
        sound_file = f"vggsound/clip_{n}.wav" if sound else ""
        speech_file = f"/speech/prompt_{n}.wav" if speech else ""
        for f, seconds, freq in ((sound_file, 11.0, 300 + 50 * n), (speech_file, 3.0, 500 + 50 * n)):
            if f:
                write_audio(root / "audio" / f.split("/")[-1], tone(seconds, freq), SR)
        rows.append({"": n, "image_location": location, "ade_class_id": cls, "ade_class_name": name,
                     "vggsound_file": sound_file, "speech_prompt_file": speech_file, "timing": timing})
    with open(root / "prompted_segmentation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_avsbench(base, rng, s4_videos=(("vidA", "dog_barking"), ("vidB", "playing_piano"),
                                          ("vidC", "dog_barking")), ms3_videos=("msX", "msY")):
    """The AVSBench release layout: avsbench_data/Single-source and Multi-sources."""
    s4 = base / "avsbench_data" / "Single-source"
    ms3 = base / "avsbench_data" / "Multi-sources"

    def frame_and_mask(frame_path, mask_path, i):
        frame_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(frame_path)
        mask = np.zeros((224, 224), dtype=np.uint8)
        if i != 3:  # frame 3 has no sounding object
            mask[40 + 10 * i: 120 + 10 * i, 60:150] = 255
        Image.fromarray(mask).save(mask_path)

    s4.mkdir(parents=True)
    with open(s4 / "s4_meta_data.csv", "w", newline="") as f:
        f.write("name,start,category,split\n")
        f.write("trainvid,0,dog_barking,train\n")
        for video, category in s4_videos:
            f.write(f"{video},0,{category},test\n")
            data = s4 / "s4_data"
            write_audio(data / "audio_wav" / "test" / category / f"{video}.wav", tone(5.0), SR)
            for i in range(1, 6):
                frame_and_mask(data / "visual_frames" / "test" / category / video / f"{video}_{i}.png",
                               data / "gt_masks" / "test" / category / video / f"{video}_{i}.png", i)
    ms3.mkdir(parents=True)
    with open(ms3 / "ms3_meta_data.csv", "w", newline="") as f:
        f.write("video_id,split\n")
        for video in ms3_videos:
            f.write(f"{video},test\n")
            data = ms3 / "ms3_data"
            write_audio(data / "audio_wav" / "test" / f"{video}.wav", tone(5.0, 600), SR)
            for i in range(1, 6):
                frame_and_mask(data / "visual_frames" / video / f"{video}.mp4_{i}.png",
                               data / "gt_masks" / "test" / video / f"{video}_{i}.png", i)
    return base / "avsbench_data"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("segdata")
    rng = np.random.default_rng(0)
    ade = write_ade(base / "ADE20KSoundPrompted", rng)
    avs = write_avsbench(base, rng)
    config = base / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return {"ade": ade, "avs": avs, "config": config, "base": base}


# =============================================================================================
# Readers
# =============================================================================================

def test_ade_label_encoding():
    classes = np.array([[0, 2978], [312, 3661]])
    assert (ade_class_map(seg_png(classes)) == classes).all()


def test_ade20k_sound_reader(data):
    root = data["ade"]
    ds = create_dataset("ade20k-sound", root)
    report = ds.annotation_report
    assert report.rows == 6 and report.dropped_no_prompt == 1 and report.dropped_class_zero == 1
    assert report.label_column == "ade_class_name" and len(ds) == 4
    assert ds.ids == ["validation/ADE_val_00000001@2978", "validation/ADE_val_00000002@2978",
                      "validation/ADE_val_00000003@1520", "validation/ADE_val_00000001@312"]
    record = ds[0]
    assert isinstance(record, ClipRecord) and record.label == "person"
    assert record.frame.shape == (224, 224, 3) and record.mask.shape == (224, 224) and record.mask.dtype == bool
    # exactly DenseAV's transforms on the same files (torchvision Resize(224) + CenterCrop(224))
    import torchvision.transforms as T

    with Image.open(root / "frames" / "validation" / "ADE_val_00000001.jpg") as im:
        expected = np.asarray(T.Compose([T.Resize(224, T.InterpolationMode.BILINEAR), T.CenterCrop(224)])(
            im.convert("RGB")))
    assert np.array_equal(record.frame, expected)
    with Image.open(root / "annotations" / "validation" / "ADE_val_00000001_seg.png") as im:
        label = T.Compose([T.Resize(224, T.InterpolationMode.NEAREST), T.CenterCrop(224)])(im)
        seg = np.array(label)
        expected_mask = ((seg[:, :, 0] / 10).astype(np.int32) * 256 + seg[:, :, 1]) == 2978
    assert np.array_equal(record.mask, expected_mask) and record.mask.any()
    assert len(record.waveform) == 164200  # the 11 s prompt cut to DenseAV's 164200 samples at 16 kHz
    assert record.meta["class_id"] == 2978 and record.meta["ade_class_id"] == 2978
    assert not ds[3].mask.any()  # class 312, the top rows of a portrait frame: cut away by the crop


def test_ade20k_sound_taco_split_prepares_as_taco(data):
    """split taco: TACO's data.py (_fcclip_image, _ade_binary_mask with rgb2cls), transcribed."""
    root = data["ade"]
    ds = create_dataset("ade20k-sound", root, split="taco")
    assert ds.ids == create_dataset("ade20k-sound", root).ids
    for i, (location, cls) in enumerate([("ADE_val_00000001", 2978), ("ADE_val_00000002", 2978),
                                          ("ADE_val_00000003", 1520), ("ADE_val_00000001", 312)]):
        record = ds[i]
        with Image.open(root / "annotations" / "validation" / f"{location}_seg.png") as im:
            array = torch.tensor(np.asarray(im.convert("RGB"))).permute(2, 0, 1).numpy().transpose(1, 2, 0)
        decoded = torch.tensor((array[:, :, 0] / 10).astype(np.int32) * 256 + array[:, :, 1].astype(np.int32))
        resized = F.interpolate(decoded.float().view(1, 1, *decoded.shape), size=(224, 224), mode="bilinear",
                                align_corners=True).squeeze(0)
        expected = (resized == cls).int()[0].numpy().astype(bool)
        assert np.array_equal(record.mask, expected)
        with Image.open(root / "frames" / "validation" / f"{location}.jpg") as im:
            tensor = torch.tensor(np.asarray(im.convert("RGB"))).permute(2, 0, 1).float()
        frame = F.interpolate(tensor[None], size=(224, 224), mode="bilinear", align_corners=True)[0]
        assert np.array_equal(record.frame, frame.round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    # no crop: class 312 (the top rows) survives, where DenseAV's centre crop cuts it away
    assert ds[3].mask[:4].any() and not create_dataset("ade20k-sound", root)[3].mask.any()
    # blended ids are lost at the borders of a region: TACO's mask differs from DenseAV's
    denseav = create_dataset("ade20k-sound", root)[0].mask
    assert 0 < (ds[0].mask & denseav).sum() < (ds[0].mask | denseav).sum()


def test_taco_and_denseav_masks_of_a_landscape_label():
    """The issue's case 2 on a 300 x 400 label: TACO's mask (ids resized bilinearly, no crop) and
    DenseAV's (nearest resize of the RGB label + centre crop) are different regions."""
    from avlegrad.data.segmentation import denseav_label, taco_ade_mask

    classes = np.full((300, 400), 5, dtype=np.int64)
    classes[60:240, 30:180] = 2978  # an object on the left, partly outside DenseAV's crop
    classes[100:200, 250:380] = 1520
    seg = seg_png(classes)
    decoded = torch.tensor((seg[:, :, 0] / 10).astype(np.int32) * 256 + seg[:, :, 1].astype(np.int32))
    resized = F.interpolate(decoded.float().view(1, 1, 300, 400), size=(224, 224), mode="bilinear",
                            align_corners=True).squeeze(0)
    taco = taco_ade_mask(seg, 2978)
    assert np.array_equal(taco, (resized == 2978).int()[0].numpy().astype(bool))
    denseav = denseav_label(seg) == 2978
    iou = (taco & denseav).sum() / (taco | denseav).sum()
    assert 0.5 < iou < 0.9  # about 0.79 here: the crop moves and cuts the region


def test_short_prompt_is_skipped_as_denseav_drops_it(data, tmp_path):
    """AVDatasets.py: a prompt whose padding mask has mean < 0.04 (under 6568 of 164200 samples at
    16 kHz) gives None, and the collate puts another clip in its place: we skip it, with the reason."""
    import shutil

    root = tmp_path / "ade"
    shutil.copytree(data["ade"], root)
    write_audio(root / "audio" / "clip_1.wav", tone(6560 / SR), SR)  # 0.41 s: just under
    write_audio(root / "audio" / "clip_2.wav", tone(6600 / SR), SR)  # just over
    ds = create_dataset("ade20k-sound", root)
    item = ds[1]
    assert isinstance(item, SkippedClip) and "shorter than 0.41 s" in item.reason and "0.04" in item.reason
    assert isinstance(ds[2], ClipRecord)
    assert isinstance(create_dataset("ade20k-sound", root, split="taco")[1], ClipRecord)  # TACO has no such rule


def test_ade20k_speech_reader_uses_the_word_timing(data):
    ds = create_dataset("ade20k-speech", data["ade"])
    assert ds.annotation_report.dropped_no_prompt == 1 and ds.annotation_report.dropped_class_zero == 1
    assert ds.annotation_report.rows_without_timing == 1  # row 4 has a prompt but no timing
    by_id = {cid: ds[i] for i, cid in enumerate(ds.ids)}
    word = by_id["validation/ADE_val_00000001@2978"]
    assert word.meta["timing"] == [1.0, 1.5]
    assert len(word.waveform) == round((1.5 + 0.2 - (1.0 - 0.2)) * SR)  # [start - 0.2, end + 0.2]
    full = create_dataset("ade20k-speech", data["ade"], split="test-full-prompt")
    assert len(full[0].waveform) == 3 * SR  # the whole prompt


def test_avsbench_readers(data):
    s4 = create_dataset("avsbench-s4", data["avs"])
    assert len(s4) == 15 and s4.ids[:6] == ["vidA_1", "vidA_2", "vidA_3", "vidA_4", "vidA_5", "vidB_1"]
    r = s4[1]
    assert r.label == "dog barking" and r.meta["class_id"] == "dog_barking" and r.meta["seconds"] == [1, 2]
    assert r.frame.shape == (224, 224, 3) and r.mask.sum() == 80 * 90 and len(r.waveform) == 5 * SR
    assert not s4[2].mask.any()  # frame 3: no object
    # the root may be any level of the release
    assert create_dataset("avsbench-s4", data["avs"] / "Single-source").ids == s4.ids
    assert len(create_dataset("avsbench-s4", data["avs"].parent, limit=4)) == 4
    ms3 = create_dataset("avsbench-ms3", data["avs"])
    assert ms3.ids == [f"{v}_{i}" for v in ("msX", "msY") for i in range(1, 6)]
    r = ms3[0]
    assert r.label is None and r.mask.sum() == 80 * 90
    with pytest.raises(ValueError, match="unknown split 'train'"):
        create_dataset("avsbench-s4", data["avs"], split="train")


def test_mask_dataset_pickles_and_loads_in_spawned_workers(data):
    """The dataset class is a module-level class (it was built inside a function: a segmentation
    evaluation with workers failed under spawn, the default start method on macOS and Windows)."""
    import pickle

    from torch.utils.data import DataLoader

    s4 = create_dataset("avsbench-s4", data["avs"], limit=3)
    again = pickle.loads(pickle.dumps(s4))
    assert type(again) is type(s4) and again.ids == s4.ids
    loader = DataLoader(s4, batch_size=3, num_workers=1, multiprocessing_context="spawn",
                        collate_fn=s4.collate)
    (records, skipped), = list(loader)
    assert not skipped and [r.clip_id for r in records] == s4.ids
    for got, want in zip(records, (s4[i] for i in range(3))):
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_array_equal(got.frame, want.frame)


def test_missing_files_are_skipped_not_fatal(data, tmp_path):
    import shutil

    root = tmp_path / "avs"
    shutil.copytree(data["avs"], root)
    gone = root / "Single-source" / "s4_data" / "gt_masks" / "test" / "playing_piano" / "vidB" / "vidB_2.png"
    gone.unlink()
    ds = create_dataset("avsbench-s4", root)
    item = ds[6]
    assert isinstance(item, SkippedClip) and item.clip_id == "vidB_2" and "missing: mask" in item.reason


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="on request") as info:
        create_dataset("avsbench-ms3", tmp_path / "nowhere")
    assert "zhoujxhfut@gmail.com" in str(info.value)
    with pytest.raises(FileNotFoundError, match="s4_meta_data.csv"):
        create_dataset("avsbench-s4", tmp_path)
    with pytest.raises(FileNotFoundError, match="download_denseav.py --speech"):
        create_dataset("ade20k-speech", tmp_path)


# =============================================================================================
# eval.py end to end
# =============================================================================================

def run_eval(data, dataset, root, out, *extra):
    argv = ["--dataset", dataset, "--root", str(root), "--model", str(data["config"]), "--pretrained", "none",
            "--target", "text", "--workers", "0", "--batch-size", "3", "--out", str(out), *extra]
    assert eval_cli.main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def stored(out, key):
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    scored = [r for r in rows if "maps" in r]
    arrays = []
    for r in scored:
        with np.load(out / r["maps"]) as z:
            arrays.append(z[key])
    return scored, arrays


def test_eval_ade20k_sound(data, tmp_path, capsys):
    out = tmp_path / "run"
    summary = run_eval(data, "ade20k-sound", data["ade"], out, "--method", "legrad,similarity",
                       "--save-overlays", "1", "--seg-metrics", "denseav-global,taco-per-image,taco-per-image-fixed")
    table = capsys.readouterr().out
    for text in ("legrad", "center (prior)", "whole (baseline)", "denseav-global:mAP", "taco-per-image:mIoU",
                 "taco-per-image-fixed:mAP", "1 without a prompt file", "1 of class 0"):
        assert text in table, text
    assert summary["evaluated"] == 4 and summary["skipped"]["count"] == 0
    assert list(summary["methods"]) == ["legrad", "similarity", "center", "whole"]
    assert set(summary["metrics"]) == {"denseav-global", "taco-per-image", "taco-per-image-fixed"}
    scored, gts = stored(out, "gt")
    _, legrad = stored(out, "legrad")
    # maps stored at the explainer's resolution (the tiny model's 64): each variant resizes them its way
    assert legrad[0].dtype == np.float16 and legrad[0].shape == (64, 64) and gts[0].dtype == bool
    classes = [r["class_id"] for r in scored]
    assert classes == [2978, 2978, 1520, 312]
    legrad = [m.astype(np.float32) for m in legrad]
    for variant, reference in (("denseav-global", ref_denseav(legrad, gts, classes)),
                               ("taco-per-image", ref_taco(legrad, gts, classes))):
        assert (summary["methods"]["legrad"][variant]["mAP"],
                summary["methods"]["legrad"][variant]["mIoU"]) == pytest.approx(reference, abs=1e-6)
    # the whole image, a constant map: DenseAV's global min-max and TACO's per-map one divide 0 by 0
    # (NaN: IoU 0, AP of NaN scores); the fixed variant scores zeros: AP = the share of positive pixels
    ones = [np.ones((224, 224), np.float32)] * len(gts)
    for variant, reference in (("denseav-global", ref_denseav(ones, gts, classes)),
                               ("taco-per-image", ref_taco(ones, gts, classes))):
        whole = summary["methods"]["whole"][variant]
        assert (whole["mAP"], whole["mIoU"]) == pytest.approx(reference, abs=1e-6)
        assert whole["mIoU"] == 0.0 and whole["constant_maps"] == 4
    per_class_share = {}
    for c, g in zip(classes, gts):
        per_class_share.setdefault(c, []).append(g)
    shares = [np.mean(v) for v in per_class_share.values()]
    # class 312 (the top rows of a portrait image) is cut away by the centre crop: no positive
    # pixel; its AP is 0 in the faithful variants, left out of the fixed one
    whole = summary["methods"]["whole"]["taco-per-image-fixed"]
    assert shares[-1] == 0 and whole["classes_without_positives"] == 1 and summary["empty_masks"] == 1
    assert whole["mAP"] == pytest.approx(np.mean(shares[:-1]))
    assert whole["mIoU"] == 0.0
    assert "mask is empty (no object, or cut away by a crop): 1" in table
    assert len(list((out / "overlays").glob("*.png"))) == 1


def test_eval_ade20k_sound_taco_split(data, tmp_path):
    """--split taco: TACO's masks, and TACO's metric with its corrected form by default."""
    out = tmp_path / "run"
    summary = run_eval(data, "ade20k-sound", data["ade"], out, "--split", "taco", "--method", "legrad")
    assert set(summary["metrics"]) == {"taco-per-image", "taco-per-image-fixed"}
    scored, gts = stored(out, "gt")
    _, legrad = stored(out, "legrad")
    classes = [r["class_id"] for r in scored]
    assert summary["empty_masks"] == 0  # no crop: class 312 keeps its top rows
    reference = ref_taco([m.astype(np.float32) for m in legrad], gts, classes)
    figures = summary["methods"]["legrad"]["taco-per-image"]
    assert (figures["mAP"], figures["mIoU"]) == pytest.approx(reference, abs=1e-6)


def test_eval_resume_and_metric_options(data, tmp_path, explained_images):
    out = tmp_path / "run"
    full = run_eval(data, "avsbench-s4", data["avs"], out)
    assert full["evaluated"] == 15 and set(full["metrics"]) == {"avsbench-official", "avsbench-dataset"}
    assert full["methods"]["legrad"]["avsbench-official"]["batch_frames"] == 20
    rows = (out / "clips.jsonl").read_text().splitlines()
    # a run killed after 9 clips, mid-write; one maps file of a finished clip lost too
    (out / "clips.jsonl").unlink()
    (out / "summary.json").unlink()
    (out / "clips.rank0.jsonl").write_text("\n".join(rows[:9]) + "\n" + rows[9][:15])
    (out / json.loads(rows[0])["maps"]).unlink()
    explained_images.clear()
    resumed = run_eval(data, "avsbench-s4", data["avs"], out, "--avsbench-batch-frames", "5",
                       "--seg-metrics", "avsbench-official,avsbench-dataset,denseav-global")
    assert sum(explained_images) == 7  # 6 clips without a row + the one whose maps file was lost
    assert resumed["methods"]["legrad"]["avsbench-dataset"]["F"] == pytest.approx(
        full["methods"]["legrad"]["avsbench-dataset"]["F"], abs=2e-3)
    assert resumed["methods"]["legrad"]["avsbench-official"]["batch_frames"] == 5
    assert resumed["methods"]["legrad"]["denseav-global"]["classes"] == 2  # pooled per category
    # the official figures are those of the stored maps, with the batch size asked for (the
    # functions are checked against test.py's code above, on small maps: the loops are slow)
    _, gts = stored(out, "gt")
    _, maps = stored(out, "legrad")
    from avlegrad.eval.masks import resize_maps

    maps = [resize_maps(torch.from_numpy(m.astype(np.float32))[None], g.shape)[0].numpy() for m, g in zip(maps, gts)]
    official = resumed["methods"]["legrad"]["avsbench-official"]
    assert official["mIoU"] == sm.avsbench_official_miou(maps, gts, 5)
    assert official["F"] == sm.avsbench_official_fscore(maps, gts, 5)
    # the centre prior and the whole image are [0, 1] maps: the official mIoU scores both as ~the whole image
    official = {m: resumed["methods"][m]["avsbench-official"]["mIoU"] for m in ("center", "whole")}
    assert official["center"] == pytest.approx(official["whole"], abs=1e-3)
    assert not list(out.glob("clips.rank*.jsonl"))
    # other model settings in the same folder are refused; --overwrite starts afresh (maps too)
    code = eval_cli.main(["--dataset", "avsbench-s4", "--root", str(data["avs"]), "--model", str(data["config"]),
                          "--pretrained", "none", "--target", "text", "--workers", "0", "--layer-index", "0",
                          "--out", str(out)])
    assert code == 2
    fresh = run_eval(data, "avsbench-s4", data["avs"], out, "--method", "center", "--overwrite")
    assert list(fresh["methods"]) == ["center", "whole"] and fresh["evaluated"] == 15
    for path in (out / "maps").glob("*.npz"):
        with np.load(path) as z:
            assert z.files == ["gt"]  # the earlier legrad maps are gone


def test_eval_user_errors(data, tmp_path, caplog):
    base = ["--root", str(data["avs"]), "--model", str(data["config"]), "--pretrained", "none",
            "--target", "text", "--workers", "0", "--out", str(tmp_path / "o")]
    assert eval_cli.main(["--dataset", "avsbench-s4", "--seg-metrics", "ap50"] + base) == 2
    assert "unknown segmentation metric(s) ap50" in caplog.text
    assert eval_cli.main(["--dataset", "avsbench-ms3", "--overwrite"] + base) == 2  # MS3 has no class names
    assert "has no class label" in caplog.text
    assert eval_cli.main(["--dataset", "vggsound", "--method", "whole", "--overwrite"] + base) == 2
    assert "unknown method(s) whole" in caplog.text  # the box benchmarks are unchanged


# =============================================================================================
# data/download_denseav.py
# =============================================================================================

def load_script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring ``Range: bytes=N-`` (206), and records the Range headers seen."""

    ranges: list = []
    honour_range = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        type(self).ranges.append(wanted)
        if wanted and type(self).honour_range:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(data):
                return self.send_error(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    RangeHandler.ranges, RangeHandler.honour_range = [], True
    with serve_directory(served, RangeHandler) as url:
        yield served, url


def denseav_zip(folder="ADE20KSoundPrompted", extra=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(f"{folder}/prompted_segmentation.csv", "image_location,ade_class_id,vggsound_file\n")
        z.writestr(f"{folder}/frames/validation/a.jpg", b"jpeg" * 5000)
        z.writestr(f"__MACOSX/{folder}/._a.jpg", b"junk")
        for name, payload in (extra or {}).items():
            z.writestr(name, payload)
    return buffer.getvalue()


def test_download_denseav_resumes_verifies_and_unpacks(server, tmp_path, capsys):
    served, base = server
    script = load_script("download_denseav")
    payload = denseav_zip()
    (served / "ADE20KSoundPrompted.zip").write_bytes(payload)
    out = tmp_path / "datasets"
    out.mkdir()
    (out / "ADE20KSoundPrompted.zip.part").write_bytes(payload[:1000])  # an interrupted download
    digest = __import__("hashlib").sha256(payload).hexdigest()
    assert script.main(["--sound", "--out", str(out), "--base-url", base, "--quiet", "--sha256", f"sound={digest}"]) == 0
    assert RangeHandler.ranges == ["bytes=1000-"]
    assert (out / "ADE20KSoundPrompted.zip").read_bytes() == payload
    folder = out / "ADE20KSoundPrompted"
    assert (folder / "prompted_segmentation.csv").is_file() and (folder / "frames/validation/a.jpg").is_file()
    assert not (out / "__MACOSX").exists() and not list(out.glob(".*unpacking"))
    assert f"sha256 {digest} (verified)" in capsys.readouterr().out
    # a second run does nothing
    assert script.main(["--sound", "--out", str(out), "--base-url", base, "--quiet"]) == 0
    assert len(RangeHandler.ranges) == 1


def test_download_denseav_bad_checksum_and_unsafe_archive(server, tmp_path, capsys):
    served, base = server
    script = load_script("download_denseav")
    (served / "ADE20KSpeechPrompted.zip").write_bytes(denseav_zip("ADE20KSpeechPrompted"))
    out = tmp_path / "d"
    assert script.main(["--speech", "--out", str(out), "--base-url", base, "--quiet",
                        "--sha256", "speech=" + "0" * 64]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not list(out.glob("ADE20KSpeechPrompted*"))  # nothing kept
    (served / "ADE20KSpeechPrompted.zip").write_bytes(denseav_zip("ADE20KSpeechPrompted", {"../evil.txt": b"x"}))
    assert script.main(["--speech", "--out", str(out), "--base-url", base, "--quiet"]) == 1
    assert "unsafe path" in capsys.readouterr().err and not (tmp_path / "evil.txt").exists()
    assert script.main(["--sound", "--out", str(out), "--base-url", base, "--quiet"]) == 1  # 404
    assert "HTTP 404" in capsys.readouterr().err


def test_download_denseav_restarts_when_the_server_ignores_range(server, tmp_path):
    served, base = server
    script = load_script("download_denseav")
    payload = denseav_zip()
    (served / "ADE20KSoundPrompted.zip").write_bytes(payload)
    RangeHandler.honour_range = False  # answers 200 with the whole file
    (tmp_path / "ADE20KSoundPrompted.zip.part").write_bytes(b"stale bytes of another file")
    path = script.download_resumable(f"{base}/ADE20KSoundPrompted.zip", tmp_path / "ADE20KSoundPrompted.zip",
                                     progress=False)
    assert RangeHandler.ranges == ["bytes=27-"] and path.read_bytes() == payload
    assert not (tmp_path / "ADE20KSoundPrompted.zip.part").exists()
