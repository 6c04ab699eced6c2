"""Scoring of the "does the map follow the sound?" benchmarks inside ``eval.py``'s run.

Two kinds (``avlegrad.data.sslalignment.sound_following_kind``):

- ``boxes`` (IS3, VPO-SS/MS, AVSBench S4/MS3 as boxes, the world's ``interactive`` split):
  SSLalignment's rules (:mod:`avlegrad.metrics_sslalignment`): per entry the cIoU with the strict
  median threshold and with the adaptive one; summary AP50 (cIoU), AUC, mean cIoU, their
  ``_adaptive`` versions, and iIoU / iAUC where a picture has several sounds (IS3, interactive).
  One ``clips.jsonl`` row per entry: ``{"clip_id", "ciou": {method: v}, "ciou_adaptive": {...},
  "picture"?, "zero_area"?}``.
- ``extended`` (extended VGG-SS / Flickr, the world's ``extended`` split): SLAVC's ``EvaluatorFull``:
  per sample a confidence and (positives) the EZ-VSL cIoU; summary AP, max-F1, LocAcc, and AP50 /
  AUC / mean cIoU over the positives. Rows: ``{"clip_id", "negative", "ciou": {method: v or null},
  "confidence": {method: c}}``.

The confidence (``--confidence``): ``cosine`` (default), the cosine between the sample's target
(audio) embedding and the image tower's embedding of the frame, the same for every explainer (it
is the model's answer to "does this sound belong to this picture?"); ``map-max``, the largest value
of the explainer's map before its min-max normalisation (LeGrad's score map, computed on the patch
grid; one more explainer pass per batch). The centre prior listens to nothing: its confidence is a
constant 1, so it detects every sample at every threshold (AP 0, max-F1 the F1 of detecting all).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from .. import metrics_sslalignment as ssl
from ..data.sslalignment import is_grouped, sound_following_kind
from ..explain.adapters import image_embedding
from ..scoring import register_scoring
from .boxes import BASELINE, BoxScoring, refuse_box_metrics
from .results import percent

CONFIDENCES = ("cosine", "map-max")
ZERO_AREA_RULE = ("entries whose ground truth is empty (zero-area boxes) score cIoU 0: counted in N and as "
                  "failures, as the reference's 0/sum(pred) (or NaN, which fails every >= test) does")


@register_scoring("sound-following")
class SoundFollowingScoring(BoxScoring):
    """Per-entry scores of the sound-following benchmarks (see the module docstring). ValueError for
    ``box_metrics`` or ``seg_metrics``, and for ``confidence`` on a set without negatives."""

    def check_options(self, opts) -> None:
        refuse_box_metrics(opts)
        if getattr(opts, "seg_metrics", None):
            raise ValueError(f"`seg_metrics` applies to the segmentation datasets; {opts.dataset} is scored with "
                             f"boxes (cIoU, AP50, AUC)")

    def __init__(self, opts):
        super().__init__(opts)
        self.kind = sound_following_kind(opts.dataset, opts.split)
        self.grouped = is_grouped(opts.dataset, opts.split)
        if opts.confidence and self.kind != "extended":
            raise ValueError(f"`confidence` applies to the extended sets (vggsound-extended, flickr-extended, "
                             f"synthetic `split=extended`); {opts.dataset} has no negatives to score")
        self.confidence = opts.confidence or "cosine"
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"unknown confidence {self.confidence!r}; choose from {', '.join(CONFIDENCES)}")
        self._batch_confidence: dict[str, np.ndarray] = {}
        self.center_prepared = ssl.PreparedMap(self.center, self.center.shape)  # sorted once, not per entry

    # ------------------------------------------------------------------ per batch / per entry
    def observe_batch(self, model, images: torch.Tensor, targets: torch.Tensor, maps: dict, explainers: dict) -> None:
        """The extended sets' confidences of a batch (one per method), kept for :meth:`score`."""
        if self.kind != "extended":
            return
        with torch.no_grad():
            if self.confidence == "cosine":
                image_embeddings = image_embedding(model, images)  # any family: open_clip, transformers, PE-AV
                cosine = F.cosine_similarity(targets.float(), image_embeddings, dim=-1).cpu().numpy()
                self._batch_confidence = {m: cosine for m in maps}
                return
        unit = F.normalize(targets.float(), dim=-1).unsqueeze(1)
        out = {}
        for m, explainer in explainers.items():
            with torch.inference_mode(False):
                grid = explainer.explain_grid(images, unit.clone())  # before min-max normalisation
            out[m] = grid.detach().float().flatten(1).amax(dim=1).cpu().numpy()
        self._batch_confidence = out

    def score(self, record, maps: dict, i: int, out: Path) -> dict:
        row = {"clip_id": record.clip_id}
        if self.kind == "extended":
            negative = bool(record.meta.get("negative", False))
            row["negative"] = negative
            if negative:
                row["ciou"] = {m: None for m in [*maps, BASELINE]}
            else:
                gt = metrics.gt_map(record.boxes, record.box_format)
                row["ciou"] = {m: metrics.ciou(maps[m][i], gt) for m in maps}
                row["ciou"][BASELINE] = metrics.ciou(self.center, gt)
            row["confidence"] = {m: float(self._batch_confidence[m][i]) for m in maps}
            row["confidence"][BASELINE] = 1.0
            return row
        gt = metrics.gt_map(record.boxes, record.box_format)
        pairs = {m: ssl.sslalignment_cious(maps[m][i], gt) for m in maps}
        pairs[BASELINE] = self.center_prepared.cious(gt)
        row["ciou"] = {m: p[0] for m, p in pairs.items()}
        row["ciou_adaptive"] = {m: p[1] for m, p in pairs.items()}
        if "picture" in record.meta:
            row["picture"] = record.meta["picture"]
        if not gt.any():
            row["zero_area"] = True
        return row

    # ------------------------------------------------------------------ summary
    def summarise(self, out: Path, scored: list[dict], methods: list[str]) -> dict:
        result = {}
        if self.kind == "extended":
            for m in methods:
                rows = [r for r in scored if m in r["ciou"] and m in r.get("confidence", {})]
                num_boxes = [0 if r["negative"] else 1 for r in rows]
                cious = [0.0 if r["ciou"][m] is None else r["ciou"][m] for r in rows]
                result[m] = ssl.summarize_extended(num_boxes, cious, [r["confidence"][m] for r in rows])
            return {"methods": result, "confidence": self.confidence,
                    "rules": "SLAVC EvaluatorFull: cIoU with the median threshold and pred >= thr; a positive is "
                             "found when conf >= c and cIoU >= 0.5; AP = calc_ap, max-F1 over "
                             "sorted(conf)[::N//10], LocAcc = AP50 on the positives"}
        for m in methods:
            rows = [r for r in scored if m in r["ciou"]]
            pictures = [r.get("picture", r["clip_id"]) for r in rows] if self.grouped else None
            result[m] = ssl.summarize_sslalignment([r["ciou"][m] for r in rows],
                                                   [r["ciou_adaptive"][m] for r in rows], pictures)
        zero = sum(1 for r in scored if r.get("zero_area"))
        return {"methods": result, "zero_area_entries": zero, "zero_area_rule": ZERO_AREA_RULE,
                "rules": "SSLalignment Evaluator_iiou: pred > thr (strict) at the median and at the adaptive "
                         "threshold sort(pred)[H*W - gt_area]"}

    def format_table(self, summary: dict) -> str:
        if self.kind == "extended":
            cols = [("N", "n", 6), ("AP", "ap", 7), ("max-F1", "max_f1", 7), ("LocAcc", "loc_acc", 7),
                    ("AUC", "auc", 7)]
        else:
            cols = [("N", "n", 6), ("AP50", "ap50", 7), ("AUC", "auc", 7), ("AP50-adap", "ap50_adaptive", 10),
                    ("AUC-adap", "auc_adaptive", 9)]
            if self.grouped:
                cols += [("iIoU", "iiou", 7), ("iAUC", "iauc", 7)]
        lines = [f"{'method':<16} " + " ".join(f"{name:>{w}}" for name, _, w in cols)]
        for m, r in summary["methods"].items():
            label = f"{m} (prior)" if m == BASELINE else m
            cells = [f"{r[key]:>{w}}" if key == "n" else f"{percent(r.get(key, math.nan)):>{w}}" for _, key, w in cols]
            lines.append(f"{label:<16} " + " ".join(cells))
        if self.kind == "extended":
            lines.append(f"confidence: {summary.get('confidence', self.confidence)} (the centre prior: constant)")
        elif summary.get("zero_area_entries"):
            lines.append(f"{summary['zero_area_entries']} entries with zero-area ground truth: scored cIoU 0")
        return "\n".join(lines)
