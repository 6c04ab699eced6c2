"""Metrics of the "does the map follow the sound?" benchmarks (IS3, VPO, AVSBench boxes, extended
VGG-SS / Flickr), with the semantics of their reference code.

SSLalignment (Senocak et al., ICCV 2023 / TPAMI 2025; github kaistmm/SSLalignment, commit e7ae3c5),
``test.py`` ``validate`` and ``utils.py`` ``Evaluator_iiou``:

- the map is upsampled to 224 x 224 (bilinear, ``align_corners=True``) and min-max normalised;
- median threshold ``thr = sort(pred)[int(224*224*0.5)]`` and **strict** ``infer = pred > thr``
  (EZ-VSL, :mod:`avlegrad.metrics`, uses ``>=``);
- **adaptive** threshold ``thr = sort(pred)[224*224 - gt_area]`` with ``gt_area`` the number of
  non-zero ground-truth pixels (``224*224 // 2`` when it is 0), again ``infer = pred > thr``;
- cIoU per entry as EZ-VSL; AP50 (the "cIoU" of papers) = ``mean(ciou >= 0.5)``, AUC the
  trapezoid of ``mean(ciou >= 0.05*i)``, i = 0..20, and the same for the adaptive cIoUs;
- **iIoU** (IS3: every sound of a picture must be localized): mean over pictures of
  ``min`` over the picture's entries of ``ciou >= 0.5``; **iAUC**: the trapezoid of that figure at
  thresholds ``0.05*i``. The picture of an entry is its name minus its last ``_`` part.

Zero-area ground truth (MS3/S4/VPO-MS frames whose box is ``[0, 0, 0, 0]``): the reference computes
``0 / sum(infer)``, i.e. cIoU 0 (or 0/0 = NaN when nothing is predicted, which then fails every
``>=`` test). Here such an entry scores cIoU 0 in both cases: it counts in N and as a failure, as in
the reference, and a mean cIoU stays defined. The readers count these entries and report them.

Extended VGG-SS / Flickr (SLAVC, Mo & Morgado NeurIPS 2022, github stoneMo/SLAVC ``utils.py``
``EvaluatorFull``, also in SSLalignment's ``utils.py``): each sample has a confidence and a number
of boxes (0 for the non-sounding pairs). cIoU with the median threshold and ``pred >= thr``
(``EvaluatorFull.update`` with ``--relative_prediction``: exactly :func:`avlegrad.metrics.ciou`).
At a confidence threshold ``c``: a positive with ``conf >= c`` is a true positive when its
``ciou >= 0.5``, else a false positive; a negative with ``conf >= c`` is a false positive; a
positive with ``conf < c`` a false negative. Precision = 1 when nothing is detected, recall = 1
when there is no positive. **AP** (``calc_ap``): thresholds ``sort(conf)[:-1][::-max(1, N//200)]``
(descending, the highest confidence left out), precision made monotone from the right, and
``sum(p_max[i] * (r[i+1] - r[i]))``. **max-F1**: the largest F1 over the thresholds
``sorted(conf)[::max(1, N//10)]`` (``finalize_stats``' F1 list). **LocAcc**: the precision of the
positives with every one detected (``Precision-visible@50``), i.e. AP50 on the positives.

All figures are fractions in [0, 1]; inputs are numpy arrays (or torch tensors for the maps).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .metrics import (AUC_STEPS, EVAL_SIZE, _trapezoid, consensus_iou, median_threshold, normalize_map,
                      resize_map)

SUCCESS_THRESHOLD = 0.5  # a localization counts as found at cIoU >= 0.5


# --------------------------------------------------------------------------------------------
# Per entry
# --------------------------------------------------------------------------------------------

def adaptive_threshold(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSLalignment's adaptive threshold: ``sort(pred)[H*W - gt_area]`` so that the predicted area
    (``pred > thr``) is about the ground truth's; ``gt_area = H*W // 2`` when the ground truth is
    empty (``test.py`` ``validate``)."""
    height, width = pred.shape
    area = int(np.count_nonzero(gt))
    if area == 0:
        area = height * width // 2
    return float(np.sort(pred.reshape(-1))[height * width - area])


def sslalignment_cious(pred, gt) -> tuple[float, float]:
    """``(ciou, ciou_adaptive)`` of one entry: the map resized to the GT size, min-max normalised,
    thresholded strictly (``pred > thr``) at the median and at the adaptive threshold."""
    gt = np.asarray(gt, dtype=np.float64)
    return PreparedMap(pred, gt.shape).cious(gt)


class PreparedMap:
    """A map resized to ``size`` and min-max normalised, with its sorted values, so that one map
    (the centre prior) is scored against many ground truths without sorting it each time."""

    def __init__(self, pred, size: tuple[int, int]):
        self.pred = normalize_map(resize_map(pred, size))
        self.sorted = np.sort(self.pred.reshape(-1))

    def cious(self, gt: np.ndarray) -> tuple[float, float]:
        """``(ciou, ciou_adaptive)`` against a ground-truth map of the prepared size."""
        gt = np.asarray(gt, dtype=np.float64)
        count = self.sorted.size
        median = float(self.sorted[int(count * 0.5)])  # == median_threshold(pred)
        area = int(np.count_nonzero(gt)) or count // 2  # == adaptive_threshold(pred, gt)
        adaptive = float(self.sorted[count - area])
        if not np.isin(gt, (0.0, 1.0)).all():  # a soft ground truth: the general formula
            return consensus_iou(self.pred > median, gt), consensus_iou(self.pred > adaptive, gt)
        inside = gt > 0  # binary: the same quotient, counted on booleans (the centre prior, thousands of times)
        gt_area = int(np.count_nonzero(inside))

        def binary_ciou(infer):
            denominator = gt_area + int(np.count_nonzero(infer & ~inside))
            return np.count_nonzero(infer & inside) / denominator if denominator else 0.0

        return binary_ciou(self.pred > median), binary_ciou(self.pred > adaptive)


def picture_of(name: str) -> str:
    """The picture an IS3 entry shows: its name minus the last ``_`` part (``test.py``'s
    ``short_name``): ``accordion_baby_10467_accordion`` -> ``accordion_baby_10467``."""
    return "_".join(name.split("_")[:-1])


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------

def _success_fractions(values: np.ndarray) -> np.ndarray:
    return np.array([np.sum(values >= 0.05 * i) / len(values) for i in range(AUC_STEPS)])


def _auc(fractions: np.ndarray) -> float:
    return _trapezoid(fractions, np.array([0.05 * i for i in range(AUC_STEPS)]))


def instance_iou(cious: Sequence[float], pictures: Sequence[str], threshold: float = SUCCESS_THRESHOLD) -> float:
    """iIoU: mean over pictures of ``min`` over the picture's entries of ``ciou >= threshold``."""
    found: dict[str, bool] = {}
    for value, picture in zip(cious, pictures):
        found[picture] = found.get(picture, True) and bool(value >= threshold)
    return float(np.mean(list(found.values()))) if found else math.nan


def instance_auc(cious: Sequence[float], pictures: Sequence[str]) -> float:
    """iAUC: the trapezoid of :func:`instance_iou` at thresholds ``0.05*i``, i = 0..20."""
    if not len(cious):
        return math.nan
    return _auc(np.array([instance_iou(cious, pictures, 0.05 * i) for i in range(AUC_STEPS)]))


def summarize_sslalignment(cious, cious_adaptive, pictures: Sequence[str] | None = None) -> dict:
    """``{"n", "ap50", "auc", "mean_ciou", "ap50_adaptive", "auc_adaptive"}`` (+ ``"iiou"``,
    ``"iauc"`` when ``pictures`` groups the entries); NaN figures when there is no entry."""
    values = np.asarray(cious, dtype=np.float64)
    adaptive = np.asarray(cious_adaptive, dtype=np.float64)
    keys = ["ap50", "auc", "mean_ciou", "ap50_adaptive", "auc_adaptive"]
    if pictures is not None:
        keys += ["iiou", "iauc"]
    if values.size == 0:
        return {"n": 0, **{k: math.nan for k in keys}}
    out = {"n": int(values.size), "ap50": float(np.mean(values >= SUCCESS_THRESHOLD)),
           "auc": _auc(_success_fractions(values)), "mean_ciou": float(np.mean(values)),
           "ap50_adaptive": float(np.mean(adaptive >= SUCCESS_THRESHOLD)),
           "auc_adaptive": _auc(_success_fractions(adaptive))}
    if pictures is not None:
        out["iiou"] = instance_iou(values, pictures)
        out["iauc"] = instance_auc(values, pictures)
    return out


# ----------------------------------------------------------------------------- extended sets
def precision_recall(num_boxes, cious, confidences, confidence_threshold: float,
                     ciou_threshold: float = SUCCESS_THRESHOLD) -> tuple[float, float]:
    """``EvaluatorFull.calc_precision_recall``: precision and recall of the detections
    ``conf >= confidence_threshold`` (a positive found in the right place: ``ciou >= ciou_threshold``)."""
    positive = np.asarray(num_boxes) > 0
    detected = np.asarray(confidences, dtype=np.float64) >= confidence_threshold
    correct = np.asarray(cious, dtype=np.float64) >= ciou_threshold
    true_pos = int(np.sum(positive & detected & correct))
    false_pos = int(np.sum(detected & ~positive) + np.sum(positive & detected & ~correct))
    false_neg = int(np.sum(positive & ~detected))
    precision = 1.0 if true_pos + false_pos == 0 else true_pos / (true_pos + false_pos)
    recall = 1.0 if true_pos + false_neg == 0 else true_pos / (true_pos + false_neg)
    return precision, recall


def average_precision(num_boxes, cious, confidences, ciou_threshold: float = SUCCESS_THRESHOLD) -> float:
    """``EvaluatorFull.calc_ap`` (see the module docstring); 0 with fewer than two thresholds (the
    reference's empty sum)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    step = max(1, len(confidences) // 200)
    precision, recall = [], []
    for threshold in np.sort(confidences)[:-1][::-step]:
        p, r = precision_recall(num_boxes, cious, confidences, threshold, ciou_threshold)
        precision.append(p)
        recall.append(r)
    if len(precision) < 2:
        return 0.0
    precision_max = np.maximum.accumulate(np.asarray(precision)[::-1])[::-1]
    recall = np.asarray(recall)
    return float(np.sum(precision_max[:-1] * (recall[1:] - recall[:-1])))


def f1_curve(num_boxes, cious, confidences, ciou_threshold: float = SUCCESS_THRESHOLD) -> list[float]:
    """``finalize_stats``' F1 list: F1 at the thresholds ``sorted(conf)[::max(1, N//10)]``."""
    confidences = np.asarray(confidences, dtype=np.float64)
    out = []
    for threshold in np.sort(confidences)[::max(1, len(confidences) // 10)]:
        p, r = precision_recall(num_boxes, cious, confidences, threshold, ciou_threshold)
        out.append(2 * r * p / (r + p) if r + p > 0 else 0.0)
    return out


def summarize_extended(num_boxes, cious, confidences) -> dict:
    """The extended sets' figures: ``{"n", "n_positive", "n_negative", "ap", "max_f1", "loc_acc",
    "ap50", "auc", "mean_ciou"}`` (``ap50``, ``auc`` and ``mean_ciou`` over the positives, EZ-VSL's
    rules; ``loc_acc`` = ``ap50``). NaN figures when there is no sample."""
    num_boxes = np.asarray(num_boxes)
    cious = np.asarray(cious, dtype=np.float64)
    confidences = np.asarray(confidences, dtype=np.float64)
    positive = num_boxes > 0
    out = {"n": int(num_boxes.size), "n_positive": int(positive.sum()), "n_negative": int((~positive).sum())}
    keys = ("ap", "max_f1", "loc_acc", "ap50", "auc", "mean_ciou")
    if num_boxes.size == 0:
        return {**out, **{k: math.nan for k in keys}}
    out["ap"] = average_precision(num_boxes, cious, confidences)
    out["max_f1"] = float(max(f1_curve(num_boxes, cious, confidences)))
    if positive.any():
        pos = cious[positive]
        # Precision-visible@50 at confidence threshold -1000: every positive detected
        out["loc_acc"] = precision_recall(num_boxes[positive], pos, np.zeros(pos.size), -1000.0)[0]
        out["ap50"] = float(np.mean(pos >= SUCCESS_THRESHOLD))
        out["auc"] = _auc(_success_fractions(pos))
        out["mean_ciou"] = float(np.mean(pos))
    else:
        out.update(loc_acc=math.nan, ap50=math.nan, auc=math.nan, mean_ciou=math.nan)
    return out


def cosine_confidence(target_embeddings, image_embeddings) -> np.ndarray:
    """The confidence that a visible object makes the sound: cosine between each sample's target
    (audio) embedding and its image embedding, ``[B, D]`` x ``[B, D]`` -> ``[B]``."""
    a = np.asarray(target_embeddings, dtype=np.float64)
    b = np.asarray(image_embeddings, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.where(norms > 0, norms, 1.0)


__all__ = ["EVAL_SIZE", "adaptive_threshold", "sslalignment_cious", "picture_of", "instance_iou", "instance_auc",
           "summarize_sslalignment", "precision_recall", "average_precision", "f1_curve", "summarize_extended",
           "cosine_confidence"]
