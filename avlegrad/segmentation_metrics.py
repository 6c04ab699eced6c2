"""Metrics of the segmentation benchmarks prompted by sound, as their reference code computes them.

Two families, each in the exact form of its reference implementation and in the corrected form
that later papers use; every figure is named by the variant that produced it:

**Prompted segmentation (DenseAV and TACO, ADE20K Sound-/Speech-Prompted)**: DenseAV's
``denseav/eval_utils.py`` (``prep_heatmap``, ``multi_iou``, ``get_paired_heatmaps``) and TACO's
``TACO/taco/metrics.py`` (``minmax``, ``resize_map``, ``multi_iou``,
``per_class_detection_scores``), both calling torchmetrics' ``binary_average_precision``. Three
variants (``PROMPTED_VARIANTS``), each a way of preparing the maps (:func:`prepare_prompted_map`):

- ``denseav-global``: every map of the evaluation set shifted and scaled by ONE min and max
  (``hm -= hm.min(); hm /= hm.max()``), then bilinear to the mask's size;
- ``taco-per-image``: each map min-max normalised at its own resolution (a constant map is
  NaN), then bicubic ``align_corners=True`` to the mask's size;
- ``taco-per-image-fixed``: the same with a constant map as zeros, and classes without a
  positive pixel left out of the means.

For each prompt class, all pixels of its images are pooled: **AP** is torchmetrics'
``binary_average_precision`` of the pooled scores (:func:`torchmetrics_average_precision`: the
step-wise ``sum_k (R_k - R_{k-1}) P_k`` = sklearn's ``average_precision_score`` on finite
scores in [0, 1]; AP 0 for a class without positives); **IoU** is the best, over
``k = 20`` thresholds ``torch.linspace(min, max, 20)`` of the pooled scores, of
``|pred > t AND gt| / |pred > t OR gt|`` (an empty union scores 0; a NaN score makes every
threshold NaN and the IoU 0). **mAP / mIoU** are the plain means over classes. docs/segmentation.md
gives every rule with its file and line.

  Note: both AP and the best-of-linspace IoU are unchanged by one increasing affine map of all
  scores, so the global normalisation only fixes the scale; it is the per-image one that
  changes results.

**AVSBench** (``avs_scripts/avs_s4/utils/utility.py``, ``test.py``):

- official **mIoU** (``mask_iou``): the prediction is ``sigmoid(pred) > 0.5``, i.e. ``pred > 0``:
  the official models output logits. A heatmap in [0, 1] is positive almost everywhere, so the
  official form predicts (almost) the whole image whatever the map says -- that is why it is
  wrong for heatmaps and why the corrected form sweeps thresholds. Per frame
  ``inter / (union + 1e-7)``; a frame with an empty ground truth scores
  ``true negatives / pixels``. The official script averages the frames of each batch, then the
  batches (``AverageMeter``), so a short last batch weighs as much as a full one.
- official **F-score** (``Eval_Fmeasure``): ``sigmoid`` of the prediction, 255 thresholds
  ``torch.linspace(0, 1 - 1e-10, 255)`` (float32: the last is 1.0), ``pred >= t``; per frame
  precision ``tp/(npred + 1e-20)``, recall ``tp/(npos + 1e-20)``,
  ``F = 1.3 P R / (0.3 P + R)`` (NaN -> 0); frames with an empty ground truth are left out; the
  F curves are averaged over the frames of a batch and its MAXIMUM taken PER BATCH, then the
  batch maxima are averaged. The threshold is thus re-optimised for every batch, so the figure
  depends on the batch size (``test.sh``: 4 videos = 20 frames). ``batch_size`` is explicit here.
- corrected, dataset-level (ACL-SSL's ``AVSBench/eval_utils.py`` and ``Eval.py``; TACO):
  **mIoU** with ``pred > t`` for each ``t`` in 0.05, 0.10, ..., 0.95 (no sigmoid), averaged over
  all frames of the set; we report the whole curve and its best threshold. **F** = the max over
  the 255 thresholds (no sigmoid) of the F curve averaged over all frames with a non-empty
  ground truth.

Inputs are sequences of 2-D maps (numpy arrays or torch tensors, any float dtype) and binary
ground truths of the same shape; a sequence may load lazily (only indexing and ``len`` are
used). Everything here is numpy + torch; nothing knows about models or datasets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

DENSEAV_IOU_THRESHOLDS = 20  # ``multi_iou(..., k=20)``
# the prompted-segmentation variants (see prepare_prompted_map), and the older names of the first two
PROMPTED_VARIANTS = ("denseav-global", "taco-per-image", "taco-per-image-fixed")
LEGACY_NORMALIZATIONS = {"global": "denseav-global", "per-image": "taco-per-image"}
FMEASURE_BETA2 = 0.3
FMEASURE_THRESHOLDS = 255  # ``Eval_Fmeasure(pr_num=255)``
OFFICIAL_IOU_EPS = 1e-7
OFFICIAL_BATCH_FRAMES = 20  # test.sh: --test_batch_size 4 videos x 5 frames
# ACL-SSL's list literal; compared with float32 maps, torch casts each to float32
SWEEP_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.30, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.70,
                    0.75, 0.8, 0.85, 0.9, 0.95)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def as_float32(pred) -> np.ndarray:
    """A 2-D map as a float32 numpy array (the dtype the reference code scores in)."""
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().float().numpy()
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 2:
        pred = np.squeeze(pred)
    if pred.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {np.shape(pred)}")
    if not np.isfinite(pred).all():
        raise ValueError("the map holds NaN or infinite values")
    return pred


def as_binary(gt) -> np.ndarray:
    """A ground-truth mask as bool (``> 0.5``, as ``multi_iou`` binarises its target)."""
    if isinstance(gt, torch.Tensor):
        gt = gt.detach().cpu().numpy()
    gt = np.asarray(gt)
    if gt.ndim != 2:
        gt = np.squeeze(gt)
    return gt > 0.5 if gt.dtype != bool else gt


def _flat_scores(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().float().numpy()
    return np.asarray(scores, dtype=np.float32).reshape(-1)


def _flat_binary(targets) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    targets = np.asarray(targets).reshape(-1)
    return targets if targets.dtype == bool else targets > 0.5


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"map shape {pred.shape} differs from ground-truth shape {gt.shape}")


def _count_greater(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values are ``> t`` for each ``t`` (values sorted ascending)."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="right")


def _count_greater_equal(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def min_max_float32(values: np.ndarray, low: np.float32, high: np.float32) -> np.ndarray:
    """``(x - low) / (high - low)`` in float32, as ``hm -= hm.min(); hm /= hm.max()`` does;
    a constant set (``high == low``) becomes zeros rather than NaN."""
    shifted = values.astype(np.float32, copy=True)
    shifted -= np.float32(low)
    span = np.float32(np.float32(high) - np.float32(low))
    if span > 0:
        shifted /= span
    else:
        shifted[...] = 0
    return shifted


# --------------------------------------------------------------------------------------------
# Pooled binary metrics (DenseAV)
# --------------------------------------------------------------------------------------------

def binary_average_precision(scores, targets) -> float:
    """Average precision of ``scores`` against binary ``targets`` (any shapes, flattened).

    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score values taken as thresholds
    (``score >= t``), highest first, with ``R_0 = 0``: exactly sklearn's
    ``average_precision_score`` and torchmetrics' ``binary_average_precision(thresholds=None)``
    (which DenseAV calls). NaN when there is no positive (torchmetrics divides 0 by 0 there).
    Counts are exact integers (torchmetrics accumulates them in float32).
    """
    s, t = _flat_scores(scores), _flat_binary(targets)
    if s.size != t.size:
        raise ValueError(f"{s.size} scores but {t.size} targets")
    positives = int(t.sum())
    if positives == 0:
        return math.nan
    order = np.argsort(s, kind="stable")[::-1]  # highest score first; tie order is irrelevant
    s, t = s[order], t[order]
    last_of_value = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # end of each tie group
    tps = np.cumsum(t, dtype=np.int64)[last_of_value]
    predicted = last_of_value.astype(np.int64) + 1
    precision = tps / predicted
    recall = tps / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def linspace_thresholds(low: float, high: float, k: int = DENSEAV_IOU_THRESHOLDS) -> np.ndarray:
    """``torch.linspace(low, high, k)`` in float32, the thresholds of ``multi_iou``."""
    return torch.linspace(float(low), float(high), k, dtype=torch.float32).numpy()


def best_threshold_iou(scores, targets, k: int = DENSEAV_IOU_THRESHOLDS) -> float:
    """DenseAV's ``multi_iou``: the best IoU of ``scores > t`` against ``targets`` over
    ``k`` thresholds ``linspace(min, max, k)`` of the scores; an empty union scores 0."""
    s, t = _flat_scores(scores), _flat_binary(targets)
    if s.size != t.size:
        raise ValueError(f"{s.size} scores but {t.size} targets")
    if s.size == 0:
        return 0.0
    thresholds = linspace_thresholds(s.min(), s.max(), k)
    predicted = _count_greater(np.sort(s), thresholds)
    inter = _count_greater(np.sort(s[t]), thresholds)
    union = predicted + int(t.sum()) - inter
    iou = inter / np.where(union == 0, 1, union)
    return float(iou.max())


def torchmetrics_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """torchmetrics' ``binary_average_precision(scores, targets)``, the call DenseAV
    (``eval_utils.py`` l. 101) and TACO (``metrics.py``, ``per_class_detection_scores``) make.

    Its rules, which the faithful variants keep: if any score lies outside [0, 1] (or is NaN)
    it applies a sigmoid to all of them; NaN scores are ranked by ``argsort`` and each is a
    threshold of its own; with no positive target, torchmetrics >= 1.4 returns 0 (1.3 returned
    NaN); counts are accumulated in float32.
    """
    from torchmetrics.functional.classification import binary_average_precision as tm_average_precision

    with warnings.catch_warnings():  # "no positive samples" / NaN warnings: the figure says it
        warnings.simplefilter("ignore")
        return float(tm_average_precision(scores.reshape(-1).float(), targets.reshape(-1).int()))


def multi_iou(scores, targets, k: int = DENSEAV_IOU_THRESHOLDS) -> float:
    """``multi_iou`` of DenseAV (``eval_utils.py`` l. 33-52) and TACO (``metrics.py``): the best
    IoU over ``linspace(min, max, k)``; a single NaN score makes ``min``/``max`` NaN, so every
    threshold is NaN, nothing is ``> NaN`` and the IoU is 0."""
    s = _flat_scores(scores)
    if np.isnan(s).any():
        return 0.0
    return best_threshold_iou(s, targets, k)


def _minmax_torch(m: torch.Tensor, constant_to_zero: bool) -> torch.Tensor:
    """``(m - m.min()) / (m.max() - m.min())`` in float32; a constant map is 0/0 = NaN (TACO's
    ``minmax``) unless ``constant_to_zero``."""
    low, span = m.min(), m.max() - m.min()
    if constant_to_zero and not span > 0:
        return torch.zeros_like(m)
    return (m - low) / span


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, h, w]`` -> ``[B, H, W]``: bilinear, ``align_corners=False`` (DenseAV's ``F.interpolate``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def prepare_prompted_map(pred, size: tuple[int, int], variant: str,
                         low: float | None = None, high: float | None = None) -> torch.Tensor:
    """One map as ``variant`` scores it, at the ground truth's ``size`` (float32 ``[H, W]``).

    - ``denseav-global`` (``eval_utils.py`` ``prep_heatmap`` l. 15-20): ``hm -= min; hm /= max``
      with the evaluation set's ``low``/``high``, at the map's own resolution, then bilinear
      (``align_corners=False``) to ``size``; a constant set gives NaN.
    - ``taco-per-image`` (``metrics.py`` ``minmax`` and ``resize_map``, called in
      ``evaluate.py`` ``infer_once``): the map's own min-max at its own resolution (a constant
      map gives NaN), then bicubic with ``align_corners=True`` to ``size`` (values may leave
      [0, 1]); ``taco-per-image-fixed``: the same, a constant map becomes zeros.
    """
    m = torch.from_numpy(as_float32(pred))
    if variant == "denseav-global":
        m = (m - np.float32(low)) / (np.float32(high) - np.float32(low))
        mode, corners = "bilinear", False
    else:
        m = _minmax_torch(m, constant_to_zero=variant == "taco-per-image-fixed")
        mode, corners = "bicubic", True
    if tuple(m.shape) == tuple(size):  # both resizes are the identity at the same size
        return m
    return F.interpolate(m[None, None], size=tuple(size), mode=mode, align_corners=corners)[0, 0]


@dataclass
class PromptedSegmentationResult:
    """Per-class AP and IoU, and their means over classes (mAP, mIoU)."""

    variant: str
    mAP: float
    mIoU: float
    classes: int
    images: int
    per_class: dict = field(default_factory=dict)  # class -> {"ap", "iou", "images", "positive_pixels"}
    classes_without_positives: int = 0  # AP 0 (torchmetrics >= 1.4), IoU 0; left out by the -fixed variant
    constant_maps: int = 0  # maps with min == max: NaN under the faithful rules (see the variants)

    @property
    def normalization(self) -> str:
        return "global" if self.variant == "denseav-global" else "per-image"

    def as_dict(self, per_class: bool = False) -> dict:
        out = {"variant": self.variant, "mAP": self.mAP, "mIoU": self.mIoU,
               "classes": self.classes, "images": self.images,
               "classes_without_positives": self.classes_without_positives,
               "constant_maps": self.constant_maps}
        if per_class:
            out["per_class"] = {str(k): v for k, v in self.per_class.items()}
        return out


def prompted_segmentation_metrics(maps: Sequence, gts: Sequence, class_ids: Sequence[Hashable],
                                  variant: str = "denseav-global",
                                  k: int = DENSEAV_IOU_THRESHOLDS) -> PromptedSegmentationResult:
    """DenseAV's / TACO's sound-prompted segmentation metrics (see the module docstring).

    ``maps[i]`` (2-D, any float dtype, at any resolution: each variant resizes it to the ground
    truth's size its own way, see :func:`prepare_prompted_map`), ``gts[i]`` (binary) and
    ``class_ids[i]`` (the prompt's class) describe image ``i``. Each sequence is read by index
    only, so a lazily loading sequence keeps memory to one class at a time. ``variant``: one of
    ``PROMPTED_VARIANTS`` (``"global"`` / ``"per-image"`` are accepted for ``denseav-global`` /
    ``taco-per-image``). Per class, all pixels of its images are pooled in dataset order: AP by
    :func:`torchmetrics_average_precision`, IoU by :func:`multi_iou`; mAP / mIoU are the plain
    means over classes (``taco-per-image-fixed`` leaves classes without positives out of both).
    """
    variant = LEGACY_NORMALIZATIONS.get(variant, variant)
    if variant not in PROMPTED_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(PROMPTED_VARIANTS)}")
    n = len(class_ids)
    if len(maps) != n or len(gts) != n:
        raise ValueError(f"{len(maps)} maps, {len(gts)} ground truths and {n} class ids: they must match")
    low = high = None
    constant = 0
    if variant == "denseav-global" and n:
        lows, highs = [], []
        for i in range(n):
            m = as_float32(maps[i])
            lows.append(m.min())
            highs.append(m.max())
            constant += bool(m.min() == m.max())
        low, high = np.float32(min(lows)), np.float32(max(highs))
    groups: dict = {}
    for i, c in enumerate(class_ids):
        groups.setdefault(c, []).append(i)
    per_class = {}
    for c, idx in groups.items():
        scores, targets = [], []
        for i in idx:
            g = as_binary(gts[i])
            m = maps[i]
            if variant != "denseav-global":
                raw = as_float32(m)
                constant += bool(raw.min() == raw.max())
            m = prepare_prompted_map(m, g.shape, variant, low, high)
            scores.append(m.reshape(-1))
            targets.append(torch.from_numpy(g.reshape(-1)))
        scores, targets = torch.cat(scores), torch.cat(targets)
        per_class[c] = {"ap": torchmetrics_average_precision(scores, targets),
                        "iou": multi_iou(scores.numpy(), targets.numpy(), k),
                        "images": len(idx), "positive_pixels": int(targets.sum())}
    empty = [c for c, v in per_class.items() if v["positive_pixels"] == 0]
    kept = [v for c, v in per_class.items() if not (variant == "taco-per-image-fixed" and c in empty)]
    return PromptedSegmentationResult(
        variant=variant,
        mAP=float(np.mean([v["ap"] for v in kept])) if kept else math.nan,
        mIoU=float(np.mean([v["iou"] for v in kept])) if kept else math.nan,
        classes=len(per_class), images=n, per_class=per_class,
        classes_without_positives=len(empty), constant_maps=constant)


# --------------------------------------------------------------------------------------------
# AVSBench
# --------------------------------------------------------------------------------------------

def fmeasure_thresholds(num: int = FMEASURE_THRESHOLDS) -> np.ndarray:
    """``torch.linspace(0, 1 - 1e-10, num)`` in float32 (so the last threshold is exactly 1.0)."""
    return torch.linspace(0, 1 - 1e-10, num, dtype=torch.float32).numpy()


def sigmoid_float32(pred: np.ndarray) -> np.ndarray:
    """``torch.sigmoid`` in float32, as the official code applies it to every prediction."""
    return torch.sigmoid(torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))).numpy()


def frame_iou(predicted: np.ndarray, gt: np.ndarray, eps: float = OFFICIAL_IOU_EPS) -> float:
    """AVSBench's per-frame IoU of a binary prediction: ``inter / (union + eps)``; for an empty
    ground truth, true negatives over all pixels (``mask_iou``'s ``no_obj_flag`` branch)."""
    predicted, gt = np.asarray(predicted, dtype=bool), as_binary(gt)
    _check_pair(predicted, gt)
    if not gt.any():
        return float(np.count_nonzero(~predicted) / (gt.size + eps))
    inter = np.count_nonzero(predicted & gt)
    union = np.count_nonzero(predicted | gt)
    return float(inter / (union + eps))


def _frame_ious_at(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                   eps: float = OFFICIAL_IOU_EPS) -> np.ndarray:
    """``frame_iou(pred > t, gt)`` for every threshold at once."""
    pixels = pred.size
    sorted_all = np.sort(pred.reshape(-1))
    predicted = _count_greater(sorted_all, thresholds)
    if not gt.any():
        return (pixels - predicted) / (pixels + eps)
    inter = _count_greater(np.sort(pred[gt]), thresholds)
    union = predicted + int(gt.sum()) - inter
    return inter / (union + eps)


def fmeasure_curve(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                   beta2: float = FMEASURE_BETA2) -> np.ndarray:
    """``_eval_pr`` + the F formula of ``Eval_Fmeasure`` for one frame: ``F(t)`` with
    ``pred >= t`` (no sigmoid here), NaN -> 0."""
    pred, gt = as_float32(pred), as_binary(gt)
    _check_pair(pred, gt)
    predicted = _count_greater_equal(np.sort(pred.reshape(-1)), thresholds).astype(np.float64)
    tp = _count_greater_equal(np.sort(pred[gt]), thresholds).astype(np.float64)
    precision = tp / (predicted + 1e-20)
    recall = tp / (gt.sum() + 1e-20)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    return np.nan_to_num(f, nan=0.0)


class AVSBenchMeter:
    """Collects what the AVSBench figures need from each frame, in dataset order, then gives
    the official (batched) and the corrected (dataset-level) figures.

    ``update(pred, gt)`` keeps, per frame: the official IoU (``sigmoid(pred) > 0.5``), the IoU at
    every sweep threshold (``pred > t``), and the F curves with and without the official sigmoid.
    """

    def __init__(self, sweep_thresholds: Sequence[float] = SWEEP_THRESHOLDS,
                 num_f_thresholds: int = FMEASURE_THRESHOLDS):
        self.sweep = np.asarray(sweep_thresholds, dtype=np.float32)
        self.f_thresholds = fmeasure_thresholds(num_f_thresholds)
        self.official_iou: list[float] = []
        self.sweep_iou: list[np.ndarray] = []
        self.has_object: list[bool] = []
        self.f_sigmoid: list[np.ndarray] = []
        self.f_raw: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.official_iou)

    def update(self, pred, gt) -> None:
        pred, gt = as_float32(pred), as_binary(gt)
        _check_pair(pred, gt)
        self.official_iou.append(frame_iou(sigmoid_float32(pred) > 0.5, gt))
        self.sweep_iou.append(_frame_ious_at(pred, gt, self.sweep))
        has_object = bool(gt.any())
        self.has_object.append(has_object)
        if has_object:  # empty frames are "out of consideration" for F
            self.f_sigmoid.append(fmeasure_curve(sigmoid_float32(pred), gt, self.f_thresholds))
            self.f_raw.append(fmeasure_curve(pred, gt, self.f_thresholds))
        else:
            self.f_sigmoid.append(None)
            self.f_raw.append(None)

    # ------------------------------------------------------------------ official, batched
    def _batches(self, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return [range(i, min(i + batch_size, len(self))) for i in range(0, len(self), batch_size)]

    def official_miou(self, batch_size: int = OFFICIAL_BATCH_FRAMES) -> float:
        """``mask_iou`` per batch of ``batch_size`` frames (mean over its frames), averaged over
        batches (``AverageMeter``): a short last batch counts as much as a full one."""
        batches = self._batches(batch_size)
        if not batches:
            return math.nan
        return float(np.mean([np.mean([self.official_iou[i] for i in b]) for b in batches]))

    def official_fscore(self, batch_size: int = OFFICIAL_BATCH_FRAMES) -> float:
        """``Eval_Fmeasure`` per batch (max of the batch-mean F curve; 0 for a batch with no
        object), averaged over batches. Depends on ``batch_size``."""
        batches = self._batches(batch_size)
        if not batches:
            return math.nan
        per_batch = []
        for b in batches:
            curves = [self.f_sigmoid[i] for i in b if self.has_object[i]]
            per_batch.append(float(np.mean(curves, axis=0).max()) if curves else 0.0)
        return float(np.mean(per_batch))

    # ------------------------------------------------------------------ corrected, dataset-level
    def miou_sweep(self) -> dict:
        """Mean IoU over all frames at every sweep threshold, and the best."""
        if not len(self):
            return {"thresholds": [float(t) for t in self.sweep], "miou": [], "best": math.nan,
                    "best_threshold": None}
        curve = np.mean(np.stack(self.sweep_iou), axis=0)
        best = int(np.argmax(curve))
        return {"thresholds": [round(float(t), 4) for t in self.sweep], "miou": [float(v) for v in curve],
                "best": float(curve[best]), "best_threshold": round(float(self.sweep[best]), 4)}

    def dataset_fscore(self) -> dict:
        """Max over thresholds of the F curve averaged over every frame with an object."""
        curves = [c for c in self.f_raw if c is not None]
        if not curves:
            return {"F": math.nan, "threshold": None, "frames": 0}
        mean = np.mean(np.stack(curves), axis=0)
        best = int(np.argmax(mean))
        return {"F": float(mean[best]), "threshold": float(self.f_thresholds[best]), "frames": len(curves)}


def _meter(preds: Sequence, gts: Sequence) -> AVSBenchMeter:
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} maps but {len(gts)} ground truths")
    meter = AVSBenchMeter()
    for i in range(len(preds)):
        meter.update(preds[i], gts[i])
    return meter


def avsbench_official_miou(preds: Sequence, gts: Sequence, batch_size: int = OFFICIAL_BATCH_FRAMES) -> float:
    """The official AVSBench mIoU (``sigmoid(pred) > 0.5``, batch means averaged)."""
    return _meter(preds, gts).official_miou(batch_size)


def avsbench_official_fscore(preds: Sequence, gts: Sequence, batch_size: int = OFFICIAL_BATCH_FRAMES) -> float:
    """The official AVSBench F-score (sigmoid, max of the batch-mean curve per batch)."""
    return _meter(preds, gts).official_fscore(batch_size)


def avsbench_miou_sweep(preds: Sequence, gts: Sequence) -> dict:
    """Corrected mIoU: dataset means at thresholds 0.05..0.95 (``pred > t``), and the best."""
    return _meter(preds, gts).miou_sweep()


def avsbench_dataset_fscore(preds: Sequence, gts: Sequence) -> dict:
    """Corrected F: max of the dataset-mean F curve (no sigmoid)."""
    return _meter(preds, gts).dataset_fscore()
