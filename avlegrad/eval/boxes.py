"""Scoring of the box benchmarks (VGG-SS, Flickr-SoundNet, the CSV box sets, the synthetic
world; EZ-VSL's protocol): each clip's cIoU per method with the centre prior beside it (AP50 =
the "cIoU" papers print, mean cIoU, AUC), plus the registered box metric variants asked for
(``avlegrad.box_metrics``). The ``clips.jsonl`` row of a clip: ``{"clip_id", "ciou": {method: v},
<variant>: {method: figures}}``, or ``"scored": False`` where the clip has no boxes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..scoring import Scoring, register_scoring
from ..visualize import draw_boxes, overlay, save_image
from .results import json_safe, percent

BASELINE = "center"  # the centre prior, scored beside every method on the same clips


@register_scoring("boxes")
class BoxScoring(Scoring):
    """Box benchmarks (EZ-VSL protocol): each clip's cIoU per method, the centre prior beside them,
    and the ``box_metrics`` variants (avlegrad.box_metrics). ValueError for ``confidence`` or
    ``seg_metrics`` (options of the other kinds)."""

    baselines = (BASELINE,)

    def __init__(self, opts):
        from ..box_metrics import box_metric

        super().__init__(opts)
        self.check_options(opts)
        self.center = metrics.center_prior()  # at the GT size, float64: exactly the benchmark's prior
        self.variants = [box_metric(v) for v in dict.fromkeys(getattr(opts, "box_metrics", None) or ())]

    def check_options(self, opts) -> None:
        """ValueError for an option of another scoring kind."""
        if getattr(opts, "confidence", None):
            raise ValueError(f"`confidence` applies to the extended sets (vggsound-extended, flickr-extended, "
                             f"synthetic `split=extended`); {opts.dataset} has no negatives to score")
        if getattr(opts, "seg_metrics", None):
            raise ValueError(f"`seg_metrics` applies to the segmentation datasets; {opts.dataset} is scored with "
                             f"boxes (cIoU, AP50, AUC)")

    def is_done(self, row: dict, out: Path) -> bool:
        return "ciou" in row and all(v.name in row for v in self.variants)

    def score(self, record, maps: dict, i: int, out: Path) -> dict:
        row = {"clip_id": record.clip_id}
        if record.boxes is None:
            row["scored"] = False  # a folder of videos has no boxes to score against
            return row
        gt = metrics.gt_map(record.boxes, record.box_format)
        row["ciou"] = {m: metrics.ciou(maps[m][i], gt) for m in maps}
        row["ciou"][BASELINE] = metrics.ciou(self.center, gt)
        for variant in self.variants:
            row[variant.name] = {m: json_safe(variant.clip(_numpy(maps[m][i]), gt)) for m in maps}
            row[variant.name][BASELINE] = json_safe(variant.clip(self.center, gt))
        return row

    def save_overlay(self, path: Path, record, heatmap: torch.Tensor, image_size: int) -> None:
        """frame | heatmap over the frame, at the frame's own size and aspect: the map (of the frame
        squashed to the model's square input, as the benchmarks score it) is stretched back over it."""
        import cv2

        frame = record.frame
        picture = overlay(frame, heatmap)
        if record.boxes is not None:
            # the GT map in the same square frame of reference as the heatmap, stretched back likewise
            gt = cv2.resize(metrics.gt_map(record.boxes, record.box_format).astype(np.uint8),
                            (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
            # outline of the GT region (drawn from the map, so corrupt boxes show as they are scored)
            contours, _ = cv2.findContours((gt > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            boxes = [(x, y, x + w - 1, y + h - 1) for x, y, w, h in map(cv2.boundingRect, contours)]
            picture = draw_boxes(picture, boxes)
        save_image(path, np.concatenate([frame, picture], axis=1))

    def summarise(self, out: Path, scored: list[dict], methods: list[str]) -> dict:
        summary = {"methods": {m: metrics.summarize([r["ciou"][m] for r in scored if m in r["ciou"]])
                               for m in methods}}
        for variant in self.variants:
            for m in methods:
                values = [r[variant.name][m] for r in scored if m in r.get(variant.name, {})]
                summary["methods"][m][variant.name] = variant.summarise(values)
        return summary

    def format_table(self, summary: dict) -> str:
        lines = [f"{'method':<16} {'N':>6} {'cIoU(AP50)':>11} {'mean cIoU':>10} {'AUC':>7}"]
        for m, r in summary["methods"].items():
            label = f"{m} (prior)" if m == BASELINE else m
            lines.append(f"{label:<16} {r['n']:>6} {percent(r['ap50']):>11} {percent(r['mean_ciou']):>10} "
                         f"{percent(r['auc']):>7}")
        from ..box_metrics import box_metric, list_box_metrics

        for name in list_box_metrics():  # the variants this summary holds
            rows = {m: r[name] for m, r in summary["methods"].items() if isinstance(r.get(name), dict)}
            if rows:
                variant = box_metric(name)
                lines.append(f"{name}:")
                lines += [f"  {m:<14} {variant.table(figures)}" for m, figures in rows.items()]
        return "\n".join(lines)



def _numpy(heatmap) -> np.ndarray:
    return heatmap.detach().float().cpu().numpy() if torch.is_tensor(heatmap) else np.asarray(heatmap)



def refuse_box_metrics(opts) -> None:
    """ValueError when ``opts`` asks for box metric variants: for the scorings with rules of their own."""
    if getattr(opts, "box_metrics", None):
        raise ValueError(f"box metrics ({', '.join(opts.box_metrics)}) apply to the box benchmarks; "
                         f"{opts.dataset} ({opts.split}) is scored by its own rules")

