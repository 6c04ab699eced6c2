"""``denseav-global-fixed``: DenseAV's prompted-segmentation figures with classes that have no
positive pixel left out of the means.

DenseAV (``eval_utils.py`` ``get_paired_heatmaps``, ``train.py`` l. 919) averages AP and IoU over
every prompt class, and a class none of whose pixels is positive (its object cut away by the
centre crop) scores AP 0 (torchmetrics >= 1.4) and IoU 0, which drags the means down for no
fault of the map. This variant keeps DenseAV's path exactly (one min-max over the whole set,
bilinear to the mask, per class all pixels pooled: torchmetrics' AP and the best IoU over 20
thresholds ``linspace(min, max)``; ``avlegrad.segmentation_metrics``) and leaves such classes out
of mAP and mIoU, the correction ``taco-per-image-fixed`` makes on TACO's path. Beside the
reference's ``denseav-global``, never instead of it.
"""
from __future__ import annotations

import math

import numpy as np

from .. import segmentation_metrics as sm
from . import MaskMetricInputs, register_mask_metric


@register_mask_metric(
    "denseav-global-fixed", figures=("mAP", "mIoU"),
    description="denseav-global with classes without a positive pixel left out of mAP and mIoU "
                "(the correction taco-per-image-fixed makes to TACO's path)")
def denseav_global_fixed(inputs: MaskMetricInputs) -> dict:
    result = sm.prompted_segmentation_metrics(inputs.maps, inputs.gts, inputs.class_ids, variant="denseav-global")
    kept = [v for v in result.per_class.values() if v["positive_pixels"] > 0]
    return {"mAP": float(np.mean([v["ap"] for v in kept])) if kept else math.nan,
            "mIoU": float(np.mean([v["iou"] for v in kept])) if kept else math.nan,
            "classes": len(kept), "classes_without_positives": result.classes_without_positives,
            "images": result.images, "constant_maps": result.constant_maps}
