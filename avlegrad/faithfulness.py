"""Is a map faithful to the model? Perturbation metrics, batched on the device, and pointing games.

Every perturbation metric removes (or inserts) pixels in the order a map ranks them and scores
each perturbed image with the model: the target's cosine with the perturbed image's embedding
(the model's own image embedding), or the class logit for class targets of a timm classifier.
All perturbation steps of all images of a batch go through the model together, ``batch_size``
perturbed images per forward pass (memory stays bounded by it).

- **deletion / insertion AUC** (Petsiuk et al., "RISE", BMVC 2018; reference code
  ``eclique/RISE`` ``evaluation.py``, ``CausalMetric``): pixels are removed most relevant first
  (replaced by 0 in the model's normalised input space, i.e. the dataset's mean colour) or
  inserted most relevant first into a blurred copy (Gaussian kernel 11, sigma 5, as ``gkern``).
  Scores at ``steps + 1`` equally spaced fractions 0 ... 1 of the pixels; AUC = trapezoid over the
  fraction (x in [0, 1]). Deletion: lower is better; insertion: higher is better.
- **positive / negative perturbation AUC** (Chefer et al., "Transformer Interpretability Beyond
  Attention Visualization", CVPR 2021, Section 5): the 0, 10, ..., 90% most (positive) or least
  (negative) relevant pixels set to 0; AUC = trapezoid over the removed fraction (x in [0, 0.9]).
  Positive: lower is better; negative: higher is better.
- **pointing game** (Zhang et al., "Top-Down Neural Attention by Excitation Backprop", ECCV
  2016; no tolerance, as Quantus' ``PointingGame``): 1 if a maximum of the map lies inside the
  ground truth (any of them, when several pixels tie), else 0.
- **energy-based pointing game** (Wang et al., "Score-CAM", CVPR-W 2020): the share of the map's
  mass inside the ground truth, ``sum(map * gt) / sum(map)``.

Pixels that tie in a map are ranked in row-major order (a stable sort), so a constant map
perturbs the image from its top-left corner. A map all zeros counts as constant: uniform mass.

Negatives of the extended sets (a silent or off-screen sound: no box, no mask) get the
perturbation AUCs only: the explainer still explains the score of that pair, and the random map is
scored on the same clips; the pointing games need a ground-truth region, so they are left out for
these clips (their means count the clips with one; ``faithfulness_n`` counts all scored clips).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .explain.vit import adapter_for, cosines

METRICS = ("deletion_auc", "insertion_auc", "pos_perturbation_auc", "neg_perturbation_auc",
           "pointing_game", "energy_pointing_game")
# which way is better, for tables
HIGHER_IS_BETTER = {"deletion_auc": False, "insertion_auc": True, "pos_perturbation_auc": False,
                    "neg_perturbation_auc": True, "pointing_game": True, "energy_pointing_game": True}
CHEFER_FRACTIONS = tuple(i / 10 for i in range(10))  # 0, 0.1, ..., 0.9
RANDOM = "random"  # the random map, scored beside every method


class ModelScorer:
    """``scorer(images, targets) -> [M]``: the target's cosine with each image's embedding (the
    model's own: OpenCLIP ``encode_image``'s pooled token through ``ln_post`` and ``proj``; a timm
    model's head), or the class logit for integer targets of a timm classifier.

    ``images`` ``[M, 3, H, W]`` (normalised for the model), ``targets`` ``[M, D]`` (need not be
    unit vectors) or class indices ``[M]``. The model is only read (no grad, no mode change).
    """

    def __init__(self, model):
        self.vit = adapter_for(model)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        tokens = vit.tokens_before(images, vit.num_layers)
        if not targets.is_floating_point():
            return vit.layer_logits(tokens).float().gather(1, targets.long()[:, None])[:, 0]
        embedding = vit.model_embedding(tokens) if hasattr(vit, "model_embedding") else vit.layer_embedding(tokens)
        unit = F.normalize(targets.float(), dim=-1)
        return cosines(embedding, unit[:, None])[:, 0]


def _reflect(i: int, n: int) -> int:
    """Index ``i`` into ``[0, n)`` reflected about the edges (``d c b a | a b c d | d c b a``)."""
    period = 2 * n
    i %= period
    return i if i < n else period - 1 - i


def gaussian_blur(images: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate, as its reference code builds it: the kernel ``gkern(klen=11,
    nsig=5)`` is scipy's ``gaussian_filter`` (sigma 5, truncated at 4 sigma, ``mode='reflect'``)
    of a centred delta in an 11 x 11 array (separable: the outer product of the 1-D filtered
    delta); each channel is convolved with it, zero padding ``size // 2``."""
    radius = int(4.0 * sigma + 0.5)
    w = [float(np.exp(-0.5 * (t / sigma) ** 2)) for t in range(-radius, radius + 1)]
    w = [v / sum(w) for v in w]
    k1 = [0.0] * size
    for i in range(size):  # (delta * w)[i] with reflected borders
        for t in range(-radius, radius + 1):
            if _reflect(i - t, size) == size // 2:
                k1[i] += w[t + radius]
    k1 = torch.tensor(k1, dtype=torch.float64)
    kernel = torch.outer(k1, k1).to(images.device, images.dtype)
    c = images.shape[1]
    return F.conv2d(images, kernel.expand(c, 1, size, size), padding=size // 2, groups=c)


def pixel_ranks(maps: torch.Tensor, most_relevant_first: bool = True) -> torch.Tensor:
    """``[B, H, W]`` maps -> ``[B, H*W]`` long: each pixel's position in the removal order (0 =
    first). Ties keep row-major order (stable sort)."""
    flat = maps.reshape(maps.shape[0], -1).float()
    order = torch.argsort(-flat if most_relevant_first else flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def perturbation_curves(scorer, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
                        fractions, *, insert: bool = False, most_relevant_first: bool = True,
                        substrate: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
    """Scores of perturbed images, ``[B, S]`` for ``S = len(fractions)``.

    At step ``s`` the first ``round(fractions[s] * H * W)`` pixels in the map's order (all channels)
    are replaced by ``substrate`` (default zeros) or, with ``insert``, the image is the substrate
    with those pixels taken from the original. ``maps`` ``[B, H, W]`` at the images' size (resized
    bilinearly otherwise). All ``B * S`` perturbed images are scored ``batch_size`` per forward.
    """
    B, _, H, W = images.shape
    if maps.shape[0] != B or maps.ndim != 3:
        raise ValueError(f"maps must be [B, H, W] for {B} images, got {tuple(maps.shape)}")
    if maps.shape[-2:] != (H, W):
        maps = F.interpolate(maps[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    maps = maps.to(images.device)
    ranks = pixel_ranks(maps, most_relevant_first).reshape(B, 1, H, W)
    counts = torch.tensor([int(round(f * H * W)) for f in fractions], device=images.device)
    substrate = torch.zeros_like(images) if substrate is None else substrate
    S = len(counts)
    scores = torch.empty(B * S, device=images.device)
    for start in range(0, B * S, batch_size):
        idx = torch.arange(start, min(start + batch_size, B * S), device=images.device)
        b, s = idx // S, idx % S
        chosen = ranks[b] < counts[s].view(-1, 1, 1, 1)  # [M, 1, H, W]
        if insert:
            batch = torch.where(chosen, images[b], substrate[b])
        else:
            batch = torch.where(chosen, substrate[b], images[b])
        scores[idx] = scorer(batch, targets[b]).float()
    return scores.reshape(B, S)


def trapezoid(curves: torch.Tensor, fractions) -> torch.Tensor:
    """Area under each curve ``[B, S]`` over the x values ``fractions``: ``[B]``."""
    x = torch.as_tensor(fractions, dtype=torch.float64, device=curves.device)
    return torch.trapezoid(curves.double(), x, dim=-1).float()


def perturbation_metrics(scorer, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor, *,
                         steps: int = 20, batch_size: int = 256,
                         which=("deletion_auc", "insertion_auc", "pos_perturbation_auc",
                                "neg_perturbation_auc")) -> dict[str, torch.Tensor]:
    """The perturbation AUCs of one batch: ``{name: [B]}``. ``steps``: deletion/insertion steps
    (``steps + 1`` points from 0 to 1; RISE removes 224 pixels per step, i.e. 224 steps at 224 px)."""
    check_steps(steps)
    grid = tuple(i / steps for i in range(steps + 1))
    out = {}
    if "deletion_auc" in which:
        out["deletion_auc"] = trapezoid(perturbation_curves(scorer, images, targets, maps, grid,
                                                            batch_size=batch_size), grid)
    if "insertion_auc" in which:
        out["insertion_auc"] = trapezoid(perturbation_curves(scorer, images, targets, maps, grid, insert=True,
                                                             substrate=gaussian_blur(images),
                                                             batch_size=batch_size), grid)
    for name, most in (("pos_perturbation_auc", True), ("neg_perturbation_auc", False)):
        if name in which:
            curves = perturbation_curves(scorer, images, targets, maps, CHEFER_FRACTIONS,
                                         most_relevant_first=most, batch_size=batch_size)
            out[name] = trapezoid(curves, CHEFER_FRACTIONS)
    return out


def _as_2d(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().float() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def pointing_game(heatmap, gt) -> float:
    """1.0 if a maximum of ``heatmap`` lies inside ``gt`` (any, when several pixels tie), else 0.0;
    NaN for an empty ``gt``. The map is resized to ``gt``'s size as the benchmark resizes maps
    (bilinear, ``align_corners=True``)."""
    gt = _as_2d(gt) > 0
    if not gt.any():
        return float("nan")
    m = metrics.resize_map(_as_2d(heatmap), gt.shape)
    return float(bool(gt[m == m.max()].any()))


def energy_pointing_game(heatmap, gt) -> float:
    """The share of the map's mass inside ``gt``: ``sum(map * gt) / sum(map)`` for a non-negative
    map (e.g. min-max normalised); a map all zeros counts as uniform. NaN for an empty ``gt``."""
    gt = _as_2d(gt) > 0
    if not gt.any():
        return float("nan")
    m = metrics.resize_map(_as_2d(heatmap), gt.shape)
    if (m < 0).any():
        raise ValueError(f"the energy-based pointing game needs a non-negative map; its minimum is {m.min():.3g}")
    total = m.sum()
    return float(m[gt].sum() / total) if total > 0 else float(gt.mean())


def random_map(clip_id: str, size: tuple[int, int]) -> torch.Tensor:
    """The ``random`` baseline: uniform noise in [0, 1], reproducible per clip id (so a resumed run
    gives the same numbers)."""
    g = torch.Generator().manual_seed(zlib.crc32(clip_id.encode()))
    return torch.rand(size, generator=g)


def has_boxes(record) -> bool:
    """Whether a record has at least one box (the extended sets' negatives have ``boxes == []``
    and ``box_format None``)."""
    boxes = getattr(record, "boxes", None)
    return boxes is not None and len(boxes) > 0


def record_ground_truth(record) -> np.ndarray | None:
    """A clip's ground-truth region as a boolean map: its boxes (at the benchmark's 224 px) or
    its mask (> 0); None when it has neither (e.g. a negative of the extended sets)."""
    if has_boxes(record):
        return metrics.gt_map(record.boxes, record.box_format) > 0
    if getattr(record, "mask", None) is not None:
        return np.asarray(record.mask) > 0
    return None


class FaithfulnessScoring:
    """``eval.py --faithfulness``: per clip and method, the perturbation AUCs and pointing games,
    with a ``random`` map beside the methods. Plugs into the evaluation loop by :meth:`score`
    (per batch) and :meth:`summarise`."""

    def __init__(self, model, steps: int = 20, batch_size: int = 256):
        check_steps(steps, "`faithfulness_steps`")
        self.scorer = ModelScorer(model)
        self.steps, self.batch_size = steps, batch_size

    def is_done(self, row: dict) -> bool:
        """Whether a clip's stored row has faithfulness figures of this run's step count (a clip
        scored without them, or with another ``steps``, is scored again: never mixed)."""
        return "faithfulness" in row and row.get("faithfulness_steps") == self.steps

    def score(self, images: torch.Tensor, targets: torch.Tensor, maps: dict, records) -> list[dict]:
        """``{method: {metric: value}}`` for each record; ``maps[m]`` ``[B, H, W]``; the random map is added."""
        H, W = images.shape[-2:]
        maps = dict(maps)
        maps[RANDOM] = torch.stack([random_map(r.clip_id, (H, W)) for r in records])
        rows = [{} for _ in records]
        for method, batch_maps in maps.items():
            values = perturbation_metrics(self.scorer, images, targets, batch_maps.to(images.device),
                                          steps=self.steps, batch_size=self.batch_size)
            for i, record in enumerate(records):
                row = {k: float(v[i]) for k, v in values.items()}
                gt = record_ground_truth(record)
                if gt is not None:
                    row["pointing_game"] = pointing_game(batch_maps[i], gt)
                    row["energy_pointing_game"] = energy_pointing_game(batch_maps[i], gt)
                rows[i][method] = row
        return rows

    @staticmethod
    def summarise(rows: list[dict]) -> dict:
        """Mean of each metric per method over the clips that have it (NaN ones left out): ``{method:
        {metric: mean, "faithfulness_n": clips}}``."""
        out: dict[str, dict] = {}
        for row in rows:
            for method, values in row.get("faithfulness", {}).items():
                acc = out.setdefault(method, {})
                for k, v in values.items():
                    if v is not None and not (isinstance(v, float) and np.isnan(v)):
                        acc.setdefault(k, []).append(v)
        summary = {}
        for method, acc in out.items():
            summary[method] = {k: float(np.mean(acc[k])) if acc.get(k) else None for k in METRICS}
            summary[method]["faithfulness_n"] = max((len(v) for v in acc.values()), default=0)
        if RANDOM in summary:  # the random map has no figures of its own: its n is its clips
            summary[RANDOM]["n"] = summary[RANDOM]["faithfulness_n"]
        return summary

    @staticmethod
    def format_table(summary_methods: dict) -> str:
        """The faithfulness figures of ``summary["methods"]`` (rows with ``deletion_auc``; others
        left out) as a text table, x100, one row per method, with which way is better."""
        names = {"deletion_auc": "del AUC", "insertion_auc": "ins AUC", "pos_perturbation_auc": "pos AUC",
                 "neg_perturbation_auc": "neg AUC", "pointing_game": "PG", "energy_pointing_game": "energy PG"}
        arrows = {k: ("^" if HIGHER_IS_BETTER[k] else "v") for k in METRICS}
        lines = ["faithfulness (x100; ^ higher is better, v lower is better)",
                 f"{'method':<16} " + " ".join(f"{names[k] + ' ' + arrows[k]:>11}" for k in METRICS)]
        for method, r in summary_methods.items():
            if "deletion_auc" not in r:
                continue
            lines.append(f"{method:<16} " + " ".join(f"{metrics_percent(r.get(k)):>11}" for k in METRICS))
        return "\n".join(lines)


def check_steps(steps, flag: str = "steps") -> None:
    """A one-line ``ValueError`` unless ``steps`` (deletion/insertion steps) is an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{flag} must be an integer >= 1, got {steps!r}")


def metrics_percent(value) -> str:
    """A figure in [0, 1] as a percentage with two decimals (``0.1234`` -> ``"12.34"``); ``"-"``
    for None or NaN (a figure no clip had, e.g. the pointing game without ground truth)."""
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.2f}"
