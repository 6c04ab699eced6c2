"""``acl-fixed``: cIoU at fixed absolute thresholds, as ACL-SSL reports it (Park et al., "Can CLIP
help sound source localization?", WACV 2024; docs/benchmarks.md, "Extended protocols").

Instead of EZ-VSL's median threshold (the top half of the map), each clip's map is min-max
normalised and binarised at every absolute threshold ``t`` in 0.05, 0.10, ..., 0.95
(``metrics.FIXED_THRESHOLDS``): ``infer = map >= t``, then the same consensus IoU against the
ground truth (``metrics.ciou_at_thresholds``). Per clip: 19 cIoUs. Per method: for each ``t``
AP50 (the fraction of clips with cIoU >= 0.5), mean cIoU and AUC, and the threshold with the
best AP50 (``metrics.summarize_fixed_thresholds``). An option beside the protocol, never
instead of it: the README's figures are the protocol's.
"""
from __future__ import annotations

import numpy as np

from . import metrics
from .box_metrics import BoxMetricVariant, register_box_metric


@register_box_metric
class ACLFixedThresholds(BoxMetricVariant):
    name = "acl-fixed"
    description = "cIoU of map >= t at fixed absolute thresholds 0.05..0.95 of the min-max normalised map (ACL-SSL)"

    def clip(self, heatmap: np.ndarray, gt: np.ndarray) -> list[float]:
        return [float(v) for v in metrics.ciou_at_thresholds(heatmap, gt)]

    def summarise(self, values: list) -> dict:
        return metrics.summarize_fixed_thresholds(np.asarray(values, dtype=np.float64).reshape(
            len(values), len(metrics.FIXED_THRESHOLDS)))

    def table(self, figures: dict) -> str:
        best = figures.get("best")
        if not best:
            return "no clip scored"
        return (f"best t {best['threshold']:.2f}: AP50 {100 * best['ap50']:.2f}, AUC {100 * best['auc']:.2f}; "
                f"t 0.50: AP50 {100 * figures['ap50'][9]:.2f}")
