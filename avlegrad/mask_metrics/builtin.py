"""The shipped metric variants of the segmentation benchmarks, each in the exact form of its
reference code and in the corrected form later papers use (the rules, with file and line:
:mod:`avlegrad.segmentation_metrics` and docs/segmentation.md)."""
from __future__ import annotations

import torch

from .. import segmentation_metrics as sm
from . import MaskMetricInputs, register_mask_metric


def _prompted(variant: str):
    def score(inputs: MaskMetricInputs) -> dict:
        return sm.prompted_segmentation_metrics(inputs.maps, inputs.gts, inputs.class_ids, variant=variant).as_dict()

    return score


register_mask_metric(
    "denseav-global", figures=("mAP", "mIoU"),
    description="DenseAV (eval_utils.get_paired_heatmaps): one min-max over the whole evaluation set; per prompt "
                "class, all its pixels pooled: binary AP and the best IoU over 20 thresholds linspace(min, max); "
                "mAP / mIoU = means over classes")(_prompted("denseav-global"))
register_mask_metric(
    "taco-per-image", figures=("mAP", "mIoU"),
    description="TACO's code (taco/metrics.py, evaluate.py): each map min-max normalised at its own resolution "
                "(a constant map is NaN: its class's IoU 0, its AP from NaN scores), bicubic align_corners=True to "
                "the mask's size; per class the same AP and IoU as denseav-global")(_prompted("taco-per-image"))
register_mask_metric(
    "taco-per-image-fixed", figures=("mAP", "mIoU"),
    description="taco-per-image with its defects corrected: a constant map becomes zeros, classes without a "
                "positive pixel are left out of mAP and mIoU")(_prompted("taco-per-image-fixed"))


def avsbench_meter(inputs: MaskMetricInputs) -> sm.AVSBenchMeter:
    """Every frame's map, bilinear to its mask (``sm.resize_maps``), through one
    :class:`~avlegrad.segmentation_metrics.AVSBenchMeter` (one pass, shared by both AVSBench variants)."""
    def build():
        meter = sm.AVSBenchMeter()
        for i in range(len(inputs.gts)):
            gt = inputs.gts[i]
            meter.update(sm.resize_maps(torch.from_numpy(sm.as_float32(inputs.maps[i]))[None], gt.shape)[0].numpy(), gt)
        return meter

    return inputs.shared("avsbench-meter", build)


@register_mask_metric(
    "avsbench-official", figures=("mIoU", "F"),
    description="AVSBench test.py: mIoU of sigmoid(map) > 0.5 (meant for logits: a [0, 1] heatmap predicts ~the "
                "whole image) and F-score (beta^2 0.3, max of each batch's mean F curve over 255 thresholds of "
                "sigmoid(map)), batch figures averaged: depends on the batch size")
def avsbench_official(inputs: MaskMetricInputs) -> dict:
    meter = avsbench_meter(inputs)
    return {"mIoU": meter.official_miou(inputs.batch_frames), "F": meter.official_fscore(inputs.batch_frames),
            "batch_frames": inputs.batch_frames}


@register_mask_metric(
    "avsbench-dataset", figures=("mIoU", "F"),
    description="corrected, dataset-level (ACL-SSL, TACO): mIoU of map > t at the best t of 0.05..0.95 over all "
                "frames; F = max over 255 thresholds of the dataset-mean F curve")
def avsbench_dataset(inputs: MaskMetricInputs) -> dict:
    meter = avsbench_meter(inputs)
    sweep, fscore = meter.miou_sweep(), meter.dataset_fscore()
    return {"mIoU": sweep["best"], "mIoU_threshold": sweep["best_threshold"],
            "mIoU_curve": dict(zip(map(str, sweep["thresholds"]), sweep["miou"])),
            "F": fscore["F"], "F_threshold": fscore["threshold"]}
