"""Sound-source localization metrics, with the semantics of EZ-VSL's ``test.py`` / ``utils.py``.

Protocol (see ``../shared/docs/benchmarks.md``): a predicted map is upsampled to the ground-truth
size (bilinear, ``align_corners=True``), min-max normalised and thresholded at its median
(``thr = sort(pred.flatten())[int(H*W*0.5)]``, ``infer = pred >= thr``); the per-clip consensus
IoU is ``sum(infer*gt) / (sum(gt) + sum(infer*(gt == 0)))``; a benchmark reports
AP50 = ``mean(ciou >= 0.5)`` (the "cIoU" of papers), the mean cIoU and the AUC of the success
curve ``[mean(ciou >= 0.05*i) for i in range(21)]`` over thresholds 0, 0.05, ..., 1.

Everything here is pure numpy (torch tensors are accepted as inputs and only used to resize);
nothing knows about models or datasets. All figures are fractions in [0, 1].
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

EVAL_SIZE = 224  # the benchmarks evaluate maps at 224 x 224
FLICKR_FRAME_SIZE = 256  # Flickr-SoundNet boxes are given on a 256 x 256 frame
# "pixels": integer pixel boxes of the 224 x 224 frame (SSLalignment's IS3 / VPO / AVSBench files)
BOX_FORMATS = ("vggss", "flickr", "pixels")
AUC_STEPS = 21  # success-curve thresholds 0, 0.05, ..., 1.0
# ACL-SSL style fixed absolute thresholds on the min-max normalised map: 0.05, 0.10, ..., 0.95
FIXED_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------

def vggss_box_pixels(box, size: int = EVAL_SIZE) -> tuple[int, int, int, int] | None:
    """A VGG-SS box ``[xmin, ymin, xmax, ymax]`` in [0, 1] as integer pixel bounds.

    As EZ-VSL: clipped to [0, 1], then ``(box*size).astype(int)``; so the corrupt value
    -2.88e16 becomes 0 and an infinite one becomes 0 or ``size``. None for a box EZ-VSL would
    crash on (not 4 numbers) or one holding NaN (which has no defined pixel position).
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.size != 4 or np.isnan(values).any():
        return None
    x0, y0, x1, y1 = (np.clip(values, 0, 1) * size).astype(int).tolist()
    return x0, y0, x1, y1


def flickr_box_pixels(box, size: int = EVAL_SIZE) -> tuple[int, int, int, int] | None:
    """A Flickr-SoundNet box (256-px ``xmin, ymin, xmax, ymax``) as ``int(size*v/256)`` bounds.

    Not clipped, as in the reference code. None when the box is not 4 finite numbers.
    """
    values = list(box) if not isinstance(box, np.ndarray) else box.reshape(-1).tolist()
    if len(values) != 4 or not all(math.isfinite(float(v)) for v in values):
        return None
    x0, y0, x1, y1 = (int(size * v / FLICKR_FRAME_SIZE) for v in values)
    return x0, y0, x1, y1


def pixel_box_pixels(box, size: int = EVAL_SIZE) -> tuple[int, int, int, int] | None:
    """An SSLalignment box ``[x0, y0, x1, y1]`` in pixels of the 224 x 224 frame as ``int`` bounds
    (``load_all_bboxes``: ``int(v)``, not clipped). None when the box is not 4 finite numbers."""
    values = list(box) if not isinstance(box, np.ndarray) else box.reshape(-1).tolist()
    if len(values) != 4 or not all(math.isfinite(float(v)) for v in values):
        return None
    x0, y0, x1, y1 = (int(v) for v in values)
    return x0, y0, x1, y1


def gt_map(bboxes, dataset: str, size: int = EVAL_SIZE) -> np.ndarray:
    """The ground-truth map ``[size, size]`` (float64) of a clip's boxes.

    ``dataset="vggss"``: binary union of the boxes (normalised [0, 1] coordinates).
    ``dataset="flickr"``: every annotator's box (256-px coordinates) adds 1, then
    ``gt /= 2; gt[gt > 1] = 1`` (one box: 0.5, two or more: 1).
    ``dataset="pixels"``: binary union of integer pixel boxes (SSLalignment's ``bbox2gtmap``).
    Degenerate boxes give empty slices, exactly as numpy slicing does in the reference code;
    boxes the reference would crash on (not 4 numbers, NaN) are ignored.
    """
    if dataset not in BOX_FORMATS:
        raise ValueError(f"unknown box format {dataset!r}; expected one of {BOX_FORMATS}")
    gt = np.zeros((size, size), dtype=np.float64)
    to_pixels = {"vggss": vggss_box_pixels, "flickr": flickr_box_pixels, "pixels": pixel_box_pixels}[dataset]
    for box in bboxes if bboxes is not None else ():
        pixels = to_pixels(box, size)
        if pixels is None:
            continue
        x0, y0, x1, y1 = pixels
        if dataset != "flickr":
            gt[y0:y1, x0:x1] = 1
        else:
            gt[y0:y1, x0:x1] += 1
    if dataset == "flickr":
        gt /= 2  # annotator consensus: a pixel inside two or more boxes counts fully
        gt[gt > 1] = 1
    return gt


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------

def _as_numpy_map(pred) -> np.ndarray:
    if hasattr(pred, "detach"):  # a torch tensor
        pred = pred.detach().cpu().double().numpy()
    pred = np.asarray(pred, dtype=np.float64)
    pred = np.squeeze(pred) if pred.ndim > 2 else pred
    if pred.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {tuple(np.shape(pred))}")
    if not np.isfinite(pred).all():
        raise ValueError("the predicted map holds NaN or infinite values")
    return pred


def resize_map(pred, size: tuple[int, int]) -> np.ndarray:
    """Upsample (or downsample) a 2-D map to ``size = (H, W)``: bilinear, ``align_corners=True``
    (``F.interpolate`` as EZ-VSL calls it). A map already of that size is returned as is."""
    pred = _as_numpy_map(pred)
    if pred.shape == tuple(size):
        return pred
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(pred))[None, None]
    out = F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=True)
    return out[0, 0].numpy()


def normalize_map(pred) -> np.ndarray:
    """Min-max normalise to [0, 1].

    A constant map carries no location; like EZ-VSL's ``normalize_img`` (which leaves it
    unchanged) it is not divided by zero: it becomes all zeros, and the median threshold then
    predicts the whole image, so its cIoU is the ground truth's share of the image, never NaN.
    """
    pred = _as_numpy_map(pred)
    low, high = pred.min(), pred.max()
    if high == low:
        return np.zeros_like(pred)
    return (pred - low) / (high - low)


def median_threshold(pred: np.ndarray) -> float:
    """EZ-VSL's threshold: the value at index ``int(H*W*0.5)`` of the sorted map."""
    height, width = pred.shape
    return float(np.sort(pred.reshape(-1))[int(height * width * 0.5)])


def predicted_mask(pred, size: tuple[int, int] = (EVAL_SIZE, EVAL_SIZE)) -> np.ndarray:
    """The binary prediction of the protocol: resize, min-max normalise, median threshold."""
    pred = normalize_map(resize_map(pred, size))
    return (pred >= median_threshold(pred)).astype(np.float64)


def consensus_iou(infer: np.ndarray, gt: np.ndarray) -> float:
    """``sum(infer*gt) / (sum(gt) + sum(infer*(gt == 0)))`` for a binary ``infer``.

    The denominator is 0 only when both the ground truth and the prediction are empty; that
    pair scores 0 (nothing was found) rather than NaN.
    """
    infer = np.asarray(infer, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if infer.shape != gt.shape:
        raise ValueError(f"prediction shape {infer.shape} differs from ground truth {gt.shape}")
    denominator = gt.sum() + (infer * (gt == 0)).sum()
    return float((infer * gt).sum() / denominator) if denominator > 0 else 0.0


def ciou(pred, gt) -> float:
    """Per-clip consensus IoU of a predicted map of any size (numpy or torch, 2-D) against a
    ground-truth map, with EZ-VSL's median threshold."""
    gt = np.asarray(gt, dtype=np.float64)
    return consensus_iou(predicted_mask(pred, gt.shape), gt)


def ciou_at_thresholds(pred, gt, thresholds: Sequence[float] = FIXED_THRESHOLDS) -> np.ndarray:
    """Extended metric (ACL-SSL style): cIoU with ``infer = pred >= t`` for each fixed absolute
    threshold ``t`` on the min-max normalised map, instead of the median. Shape ``[T]``."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = normalize_map(resize_map(pred, gt.shape))
    return np.array([consensus_iou(pred >= t, gt) for t in thresholds])


def center_prior(size: int = EVAL_SIZE) -> np.ndarray:
    """The no-model baseline: a map decreasing with the distance from the image centre.

    Median thresholding keeps a centred disc over half the image. The centre is the pixel-grid
    centre ``((size-1)/2, (size-1)/2)`` and squared distances are exact in float64, so pixels at
    equal distance tie exactly and the whole ring at the threshold is kept (the disc is a few
    pixels over half: 25,100 of 50,176 at 224). On the 5,158 VGG-SS clips this gives AP50 34.02 /
    AUC 37.44 (x100), the figure in ``benchmarks.md``.
    """
    centre = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    distance = np.sqrt((yy - centre) ** 2 + (xx - centre) ** 2)
    return 1.0 - distance / distance.max()


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------

def success_curve(cious: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, fraction of clips with ciou >= threshold)`` at ``0.05*i``, i = 0..20."""
    values = np.asarray(list(cious), dtype=np.float64)
    thresholds = np.array([0.05 * i for i in range(AUC_STEPS)])  # EZ-VSL's exact float values
    fractions = np.array([np.sum(values >= t) / len(values) for t in thresholds])
    return thresholds, fractions


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # what sklearn.metrics.auc(x, y) computes for increasing x (EZ-VSL's call)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def summarize(cious: Iterable[float]) -> dict:
    """``{"n", "ap50", "mean_ciou", "auc"}`` as fractions; NaN figures when there is no clip."""
    values = np.asarray(list(cious), dtype=np.float64)
    if values.size == 0:
        return {"n": 0, "ap50": math.nan, "mean_ciou": math.nan, "auc": math.nan}
    thresholds, fractions = success_curve(values)
    return {"n": int(values.size), "ap50": float(np.mean(values >= 0.5)),
            "mean_ciou": float(np.mean(values)), "auc": _trapezoid(fractions, thresholds)}


def summarize_fixed_thresholds(cious, thresholds: Sequence[float] = FIXED_THRESHOLDS) -> dict:
    """Summaries of ``[N, T]`` cIoUs from :func:`ciou_at_thresholds`: for each fixed threshold its
    AP50 / mean cIoU / AUC (lists aligned with ``thresholds``), and the best threshold by AP50."""
    values = np.asarray(cious, dtype=np.float64).reshape(-1, len(thresholds))
    per_threshold = [summarize(values[:, j]) for j in range(len(thresholds))]
    out = {"thresholds": [float(t) for t in thresholds]}
    for key in ("ap50", "mean_ciou", "auc"):
        out[key] = [s[key] for s in per_threshold]
    if values.shape[0]:
        best = int(np.argmax(out["ap50"]))
        out["best"] = {"threshold": out["thresholds"][best], "ap50": out["ap50"][best],
                       "auc": out["auc"][best]}
    return out


class LocalizationMeter:
    """Collects per-clip cIoU and produces the benchmark summary (EZ-VSL's ``Evaluator``).

    ``fixed_thresholds``: also collect the ACL-SSL style cIoU at those absolute thresholds;
    the summary then has a ``"fixed_thresholds"`` entry.
    """

    def __init__(self, fixed_thresholds: Sequence[float] | None = None):
        self.fixed_thresholds = tuple(fixed_thresholds) if fixed_thresholds else None
        self.reset()

    def reset(self) -> None:
        self.clip_ids: list[str | None] = []
        self._cious: list[float] = []
        self._fixed: list[np.ndarray] = []

    def update(self, pred, gt, clip_id: str | None = None) -> float:
        """Score one clip's map against its ground-truth map; returns its cIoU."""
        value = ciou(pred, gt)
        if self.fixed_thresholds:
            self._fixed.append(ciou_at_thresholds(pred, gt, self.fixed_thresholds))
        self._cious.append(value)
        self.clip_ids.append(clip_id)
        return value

    def __len__(self) -> int:
        return len(self._cious)

    @property
    def cious(self) -> np.ndarray:
        return np.asarray(self._cious, dtype=np.float64)

    def per_clip(self) -> list[tuple[str | None, float]]:
        return list(zip(self.clip_ids, self._cious))

    def summary(self) -> dict:
        out = summarize(self._cious)
        if self.fixed_thresholds:
            fixed = np.stack(self._fixed) if self._fixed else np.zeros((0, len(self.fixed_thresholds)))
            out["fixed_thresholds"] = summarize_fixed_thresholds(fixed, self.fixed_thresholds)
        return out


def format_summary(summary: dict) -> str:
    """One line, x100 as papers print it, with N (every figure needs its N)."""
    return (f"N={summary['n']}  AP50(cIoU)={100 * summary['ap50']:.2f}  "
            f"mean cIoU={100 * summary['mean_ciou']:.2f}  AUC={100 * summary['auc']:.2f}")
