"""Scores of audio-side maps: where in frequency and when in time a map puts the sound's object.

Ground truth: the sounding object's time-frequency mask and its per-frame activity on the
encoder's log-mel grid (:func:`avlegrad.data.world.object_tf_mask`; the procedural world knows
each clip's parts before they are mixed). Maps are ``[F, T]`` (mel bands x frames), non-negative.

- ``tf_energy``: the share of the map's energy inside the mask, ``sum(map * mask) / sum(map)``
  (the energy-based pointing game of Score-CAM, Wang et al. 2020, on the spectrogram). An
  all-zero map (a constant map after min-max) is scored as a uniform one: the mask's area share.
- ``time_auc``: the ROC-AUC of the per-frame relevance (the map's mean over mel bands; or its
  maximum, ``relevance_curve(m, "max")``, reported as max-band) against the
  object's activity, computed with torchmetrics' ``binary_auroc`` (ties count one half); defined
  for clips with at least ``MIN_FRAMES_EACH`` active and as many silent frames (None otherwise:
  steady sounds are heard in every frame).
- ``time_auc_against``: the same against only some of the silent frames (the frames where the
  off-screen sound is heard, or where neither is): which of the two a map tells apart from the
  object.
- the loudness prior, the audio analogue of the centre prior: the spectrogram's own log-mel
  loudness as a map, min-max normalised.
- ``time_auc_bound``: the highest ``time_auc`` any relevance constant over blocks of frames can
  score (a patch-level explainer's ceiling where patches do not overlap: each column of patches
  is one block).
"""
from __future__ import annotations

import numpy as np
import torch

from .data.world import MIN_FRAMES_EACH


def _as_map(values, what: str) -> np.ndarray:
    m = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{what} must be a map [mel bands, frames], got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return m


def tf_energy(saliency, mask) -> float:
    """Share of a non-negative map's energy inside a boolean T-F mask of the same shape ``[F, T]``."""
    m, g = _as_map(saliency, "the map"), np.asarray(mask, dtype=bool)
    if g.shape != m.shape:
        raise ValueError(f"the map {m.shape} and the mask {g.shape} differ in shape")
    if (m < 0).any():
        raise ValueError("tf_energy needs a non-negative map (min-max normalise it first)")
    total = m.sum()
    if total <= 0:
        return float(g.mean())
    return float((m * g).sum() / total)


CURVE_REDUCTIONS = ("mean", "max")


def relevance_curve(saliency, reduce: str = "mean") -> np.ndarray:
    """The per-frame relevance of a map ``[F, T]``, ``[T]``: its mean over mel bands (``reduce="mean"``,
    the definition ``time_auc`` is reported with) or its maximum (``"max"``: a frame is as relevant as
    its most relevant band, which does not dilute a narrow-band sound's relevance over the bands it
    does not occupy)."""
    if reduce not in CURVE_REDUCTIONS:
        raise ValueError(f"unknown reduction over mel bands {reduce!r}; choose one of {', '.join(CURVE_REDUCTIONS)}")
    m = _as_map(saliency, "the map")
    return m.mean(axis=0) if reduce == "mean" else m.max(axis=0)


def time_auc(curve, active, min_each: int = MIN_FRAMES_EACH) -> float | None:
    """ROC-AUC of a per-frame relevance ``[T]`` against the object's activity ``[T]`` (bool);
    None where fewer than ``min_each`` frames are active or silent."""
    from torchmetrics.functional.classification import binary_auroc

    c = np.asarray(curve, dtype=np.float64).reshape(-1)
    a = np.asarray(active, dtype=bool).reshape(-1)
    if c.shape != a.shape:
        raise ValueError(f"the relevance curve ({c.size} frames) and the activity ({a.size} frames) differ in length")
    if not np.isfinite(c).all():
        raise ValueError("the relevance curve holds NaN or infinite values")
    if a.sum() < min_each or (~a).sum() < min_each:
        return None
    return float(binary_auroc(torch.from_numpy(c), torch.from_numpy(a.astype(np.int64)), thresholds=None))


def time_auc_against(curve, active, negatives, min_each: int = MIN_FRAMES_EACH) -> float | None:
    """:func:`time_auc` with only some of the silent frames as negatives: the ROC-AUC of a per-frame
    relevance ``[T]`` between the ``active`` frames and the ``negatives`` frames (bool ``[T]`` each,
    disjoint; other frames are left out). On the audio-mixture split, negatives = the frames where
    only the other sound is heard ("does the map tell the pictured sound from the other one?") or
    where neither is ("from silence?"); "heard" as in the object's activity: louder than everything
    else in at least one mel bin, so a frame where the object sounds but is drowned in every bin
    counts as the other sound's. None where either side has fewer than ``min_each`` frames."""
    a = np.asarray(active, dtype=bool).reshape(-1)
    n = np.asarray(negatives, dtype=bool).reshape(-1)
    if a.shape != n.shape:
        raise ValueError(f"the activity ({a.size} frames) and the negatives ({n.size} frames) differ in length")
    if (a & n).any():
        raise ValueError(f"{int((a & n).sum())} frames are both active and negative: the two must be disjoint")
    c = np.asarray(curve, dtype=np.float64).reshape(-1)
    if c.shape != a.shape:
        raise ValueError(f"the relevance curve ({c.size} frames) and the activity ({a.size} frames) differ in length")
    if not np.isfinite(c).all():  # also in the frames left out: a broken map is never scored
        raise ValueError("the relevance curve holds NaN or infinite values")
    keep = a | n
    return time_auc(c[keep], a[keep], min_each)


def loudness_prior(log_mel) -> np.ndarray:
    """The spectrogram's own loudness as a map: a log-mel ``[F, T]`` min-max normalised to [0, 1]
    (all zeros when constant)."""
    m = _as_map(log_mel, "the log-mel spectrogram")
    low, high = m.min(), m.max()
    return (m - low) / (high - low) if high > low else np.zeros_like(m)


def block_oracle_curve(active, width: int, offset: int = 0) -> np.ndarray:
    """The best per-frame relevance that is constant over blocks of ``width`` frames (blocks start
    at frame ``offset``; the frames before it form a block of their own): each frame gets its
    block's share of active frames, ``[T]`` float64. Ranking blocks by that share maximises the
    ROC-AUC among block-constant curves (swapping two adjacent blocks with ``p`` active and ``n``
    silent frames each changes the AUC by ``p2 * n1 - p1 * n2``)."""
    a = np.asarray(active, dtype=bool).reshape(-1)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"the block width must be a positive number of frames, got {width!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"the block offset must be a non-negative number of frames, got {offset!r}")
    edges = sorted({0, *range(int(offset), a.size, int(width)), a.size})
    curve = np.empty(a.size)
    for lo, hi in zip(edges[:-1], edges[1:]):
        curve[lo:hi] = a[lo:hi].mean()
    return curve


def time_auc_bound(active, width: int, offset: int = 0, min_each: int = MIN_FRAMES_EACH) -> float | None:
    """The highest :func:`time_auc` a relevance constant over blocks of ``width`` frames can score
    against ``active`` (see :func:`block_oracle_curve`); None where the AUC is undefined. For a ViT
    with non-overlapping patches ``width`` is the patch's width in frames: a map at the input's
    resolution is constant over each patch column, whatever the explainer."""
    return time_auc(block_oracle_curve(active, width, offset), active, min_each)
