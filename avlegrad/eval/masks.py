"""Benchmark run of the segmentation benchmarks prompted by sound (``eval.py --dataset
ade20k-sound | ade20k-speech | avsbench-s4 | avsbench-ms3``).

The dataset-level metrics need every clip's map at the end (one min-max over the whole set,
pixels pooled per class, a threshold chosen on the whole set), so a run stores each scored
clip's maps instead of a per-clip score. The run folder holds what a box benchmark run holds,
plus the maps:

- ``run.json``, ``clips.jsonl`` / ``clips.rank<r>.jsonl``: as for the box benchmarks; a row is
  ``{"clip_id", "maps": "maps/<quoted id>.npz", "class_id", "label", "gt_pixels"}`` or
  ``{"clip_id", "skipped": reason}``. A clip is done when its row and its maps file exist, so a
  rerun resumes (``--overwrite`` starts afresh, removing ``maps/`` too);
- ``maps/<quoted clip id>.npz``: per method, the map at the explainer's own resolution in
  float16 (each metric variant resizes it to the mask as its reference does: DenseAV and
  AVSBench bilinear, TACO bicubic with ``align_corners=True``), and ``gt`` (the bool mask as
  scored);
- ``summary.json``: computed from the stored maps, for every method and for the two trivial
  baselines on the same clips: ``center`` (the centre prior of the box benchmarks) and
  ``whole`` (a constant map: the whole image), under each metric variant of
  ``avlegrad.segmentation_metrics`` (``--seg-metrics``). The metric options do not change the
  stored maps, so a rerun with other metric options only recomputes the summary.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from .. import segmentation_metrics as sm
from ..data.segmentation import EVAL_SIZE, SEGMENTATION_SPLITS
from ..fileio import atomic_path
from ..scoring import Scoring, register_scoring
from .boxes import refuse_box_metrics
from .results import percent


SEGMENTATION_DATASETS = tuple(SEGMENTATION_SPLITS)
CENTER = "center"  # the centre prior of the box benchmarks
WHOLE = "whole"  # a constant map: the whole image
BASELINES = (CENTER, WHOLE)
MAPS_DIR = "maps"

METRIC_VARIANTS = {
    "denseav-global": ("DenseAV (eval_utils.get_paired_heatmaps): one min-max over the whole evaluation set; "
                       "per prompt class, all its pixels pooled: binary AP and the best IoU over 20 thresholds "
                       "linspace(min, max); mAP / mIoU = means over classes"),
    "taco-per-image": ("TACO's code (taco/metrics.py, evaluate.py): each map min-max normalised at its own "
                       "resolution (a constant map is NaN: its class's IoU 0, its AP from NaN scores), bicubic "
                       "align_corners=True to the mask's size; per class the same AP and IoU as denseav-global"),
    "taco-per-image-fixed": ("taco-per-image with its defects corrected: a constant map becomes zeros, classes "
                             "without a positive pixel are left out of mAP and mIoU"),
    "avsbench-official": ("AVSBench test.py: mIoU of sigmoid(map) > 0.5 (meant for logits: a [0, 1] heatmap "
                          "predicts ~the whole image) and F-score (beta^2 0.3, max of each batch's mean F curve "
                          "over 255 thresholds of sigmoid(map)), batch figures averaged: depends on the batch size"),
    "avsbench-dataset": ("corrected, dataset-level (ACL-SSL, TACO): mIoU of map > t at the best t of "
                         "0.05..0.95 over all frames; F = max over 255 thresholds of the dataset-mean F curve"),
}
VARIANT_FIGURES = {"denseav-global": ("mAP", "mIoU"), "taco-per-image": ("mAP", "mIoU"),
                   "taco-per-image-fixed": ("mAP", "mIoU"),
                   "avsbench-official": ("mIoU", "F"), "avsbench-dataset": ("mIoU", "F")}
DROP_REASONS = {"dropped_no_prompt": "without a prompt file", "dropped_class_zero": "of class 0",
                "dropped_bad_class": "with an unreadable class id"}
DEFAULT_METRICS = {"ade20k-sound": ("denseav-global", "taco-per-image"),
                   "ade20k-sound/taco": ("taco-per-image", "taco-per-image-fixed"),
                   "ade20k-speech": ("denseav-global", "taco-per-image"),
                   "avsbench-s4": ("avsbench-official", "avsbench-dataset"),
                   "avsbench-ms3": ("avsbench-official", "avsbench-dataset")}


def is_segmentation_dataset(name: str) -> bool:
    return name in SEGMENTATION_DATASETS


def metric_variants(opts) -> list[str]:
    """The metric variants of a run: ``opts.seg_metrics`` or the dataset's defaults."""
    defaults = DEFAULT_METRICS.get(f"{opts.dataset}/{getattr(opts, 'split', None)}") or DEFAULT_METRICS.get(opts.dataset)
    chosen = list(getattr(opts, "seg_metrics", None) or defaults or ())
    if not chosen:  # a registered mask dataset without published metrics: the user names them
        raise ValueError(f"dataset {opts.dataset!r} has no default segmentation metrics: name them with `seg_metrics` "
                         f"(among {', '.join(METRIC_VARIANTS)})")
    unknown = [m for m in chosen if m not in METRIC_VARIANTS]
    if unknown:
        raise ValueError(f"unknown segmentation metric(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(METRIC_VARIANTS)}")
    return chosen


def maps_file_name(clip_id: str) -> str:
    """A clip's maps file, relative to the run folder (ids may hold '/')."""
    return f"{MAPS_DIR}/{quote(clip_id, safe='')}.npz"


def save_clip_maps(path: Path, maps: dict[str, np.ndarray], gt: np.ndarray) -> None:
    """Write one clip's float16 maps and its bool mask atomically."""
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, gt=np.asarray(gt, dtype=bool), **{m: v.astype(np.float16) for m, v in maps.items()})


class StoredArrays:
    """``arrays[i]`` loads array ``key`` of the i-th maps file (a lazy sequence)."""

    def __init__(self, paths: list[Path], key: str):
        self.paths, self.key = paths, key

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        with np.load(self.paths[i]) as stored:
            return stored[self.key]


class ConstantMaps:
    """The same map for every clip (the baselines)."""

    def __init__(self, value: np.ndarray, n: int):
        self.value, self.n = value, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.value


def baseline_map(name: str, size: int = EVAL_SIZE) -> np.ndarray:
    if name == CENTER:
        return metrics.center_prior(size).astype(np.float32)
    return np.ones((size, size), dtype=np.float32)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, h, w]`` -> ``[B, H, W]``: bilinear, ``align_corners=False`` (DenseAV's ``F.interpolate``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# ----------------------------------------------------------------------------- the summary
def score_method(maps, gts, class_ids, variants: list[str], batch_frames: int) -> dict:
    """Every requested metric variant of one method's maps (lazy sequences are fine)."""
    out: dict = {"n": len(gts)}
    avsbench = [v for v in variants if v.startswith("avsbench")]
    if avsbench:
        meter = sm.AVSBenchMeter()
        for i in range(len(gts)):
            gt = gts[i]
            meter.update(resize_maps(torch.from_numpy(sm.as_float32(maps[i]))[None], gt.shape)[0].numpy(), gt)
        if "avsbench-official" in variants:
            out["avsbench-official"] = {"mIoU": meter.official_miou(batch_frames),
                                        "F": meter.official_fscore(batch_frames), "batch_frames": batch_frames}
        if "avsbench-dataset" in variants:
            sweep, fscore = meter.miou_sweep(), meter.dataset_fscore()
            out["avsbench-dataset"] = {"mIoU": sweep["best"], "mIoU_threshold": sweep["best_threshold"],
                                       "mIoU_curve": dict(zip(map(str, sweep["thresholds"]), sweep["miou"])),
                                       "F": fscore["F"], "F_threshold": fscore["threshold"]}
    for variant in sm.PROMPTED_VARIANTS:
        if variant in variants:
            out[variant] = sm.prompted_segmentation_metrics(maps, gts, class_ids, variant=variant).as_dict()
    return out


# ----------------------------------------------------------------------------- the scoring
@register_scoring("masks")
class MaskScoring(Scoring):
    """How ``avlegrad.eval.run`` scores a segmentation benchmark (see the module docstring).
    ValueError for ``box_metrics`` or ``confidence`` (options of the other kinds)."""

    baselines = BASELINES

    def __init__(self, opts):
        super().__init__(opts)
        refuse_box_metrics(opts)
        if getattr(opts, "confidence", None):
            raise ValueError(f"`confidence` applies to the extended sets (vggsound-extended, flickr-extended, "
                             f"synthetic `split=extended`); {opts.dataset} has no negatives to score")
        self.variants = metric_variants(opts)
        self.batch_frames = int(getattr(opts, "avsbench_batch_frames", sm.OFFICIAL_BATCH_FRAMES))
        if self.batch_frames < 1:
            raise ValueError(f"`avsbench_batch_frames` must be >= 1, got {self.batch_frames}")

    def start(self, out: Path, opts, is_main: bool) -> None:
        if is_main and opts.overwrite and (out / MAPS_DIR).is_dir():
            shutil.rmtree(out / MAPS_DIR)

    def is_done(self, row: dict, out: Path) -> bool:
        return "maps" in row and (out / row["maps"]).is_file()

    def score(self, record, maps: dict, i: int, out: Path) -> dict:
        if record.mask is None:
            return {"clip_id": record.clip_id, "scored": False}
        gt = np.asarray(record.mask).astype(bool)
        rel = maps_file_name(record.clip_id)
        # each map at its own resolution: every metric variant resizes it to the mask its own way
        save_clip_maps(out / rel, {m: v[i].numpy() for m, v in maps.items()}, gt)
        class_id = record.meta.get("class_id")
        return {"clip_id": record.clip_id, "maps": rel,
                "class_id": class_id if isinstance(class_id, (int, str)) or class_id is None else str(class_id),
                "label": record.label, "gt_pixels": int(gt.sum())}

    def save_overlay(self, path: Path, record, heatmap: torch.Tensor, image_size: int) -> None:
        import cv2

        from ..visualize import overlay, save_image

        gt = np.asarray(record.mask).astype(bool) if record.mask is not None else None
        size = gt.shape if gt is not None else (image_size, image_size)
        frame = record.frame
        if frame.shape[:2] != size:
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        picture = overlay(frame, resize_maps(heatmap[None], size)[0].numpy())
        if gt is not None:
            contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            picture = cv2.drawContours(np.ascontiguousarray(picture).copy(), contours, -1, (0, 255, 0), 2)
        save_image(path, np.concatenate([frame, picture], axis=1))

    def summarise(self, out: Path, scored: list[dict], methods: list[str]) -> dict:
        """Every method and baseline scored from the stored maps, under each metric variant."""
        paths = [out / r["maps"] for r in scored]
        gts = StoredArrays(paths, "gt")
        class_ids = [r.get("class_id") if r.get("class_id") is not None else "all" for r in scored]
        figures = {}
        for m in methods:
            maps = ConstantMaps(baseline_map(m), len(scored)) if m in BASELINES else StoredArrays(paths, m)
            figures[m] = score_method(maps, gts, class_ids, self.variants, self.batch_frames)
        return {"empty_masks": sum(1 for r in scored if r.get("gt_pixels") == 0),
                "metrics": {v: METRIC_VARIANTS[v] for v in self.variants},
                "baselines": {CENTER: "centre prior (1 - distance to the centre, as the box benchmarks)",
                              WHOLE: "constant map (the whole image)"},
                "methods": figures}

    def format_table(self, summary: dict) -> str:
        """The figures x100, every method beside the centre prior and the whole-image baseline."""
        lines = []
        report = summary.get("annotation_report") or {}
        dropped = {k: v for k, v in report.items() if k.startswith("dropped_") and v}
        if dropped:
            lines.append("  rows dropped by the reader: " + ", ".join(
                f"{v} {DROP_REASONS.get(k, k)}" for k, v in dropped.items()))
        if summary.get("empty_masks"):
            lines.append(f"  clips whose mask is empty (no object, or cut away by a crop): {summary['empty_masks']}")
        variants = list(summary["metrics"])
        columns = [(v, f) for v in variants for f in VARIANT_FIGURES[v]]
        headers = [f"{v}:{f}" for v, f in columns]
        widths = [max(len(h), 7) for h in headers]
        lines.append(f"{'method':<18} {'N':>6} " + " ".join(f"{h:>{w}}" for h, w in zip(headers, widths)))
        for m, r in summary["methods"].items():
            label = {CENTER: "center (prior)", WHOLE: "whole (baseline)"}.get(m, m)
            cells = [percent(r.get(v, {}).get(f)) for v, f in columns]
            lines.append(f"{label:<18} {r['n']:>6} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
        for v in variants:
            lines.append(f"  {v}: {METRIC_VARIANTS[v]}")
        return "\n".join(lines)


