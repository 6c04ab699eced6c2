"""Input-gradient explainers: the gradient of the model's score w.r.t. the input's pixels.

The score is the model's own: the fp32 cosine of its image embedding with the target, or the
class logit for class targets (:meth:`~.adapters.ModelAdapter.model_scores`), the model's
forward replayed by its adapter, so these run on every registered family. Two classic maps,
at the input's resolution (no patch grid):

- ``"gradient_x_input"`` (default): ``|sum_c x_c * dS/dx_c|``, gradient times input summed over
  channels (Shrikumar et al. 2016, "Not just a black box"; Captum's ``InputXGradient``, summed
  over channels and taken in absolute value for a map);
- ``"saliency"``: ``max_c |dS/dx_c|`` (Simonyan et al. 2014, "Deep inside convolutional
  networks", section 3.1).

The input ``x`` is what the explainer receives (already normalised for the model).
"""
from __future__ import annotations

import torch

from .base import Explainer, per_target_gradients, register_explainer

INPUT_GRADIENT_MODES = ("gradient_x_input", "saliency")


@register_explainer("input_gradient")
class InputGradient(Explainer):
    """``explainer(images [B, C, H, W], targets) -> maps [B(, K), H, W]`` in [0, 1] (see
    :class:`~.base.Explainer`); ``mode``: ``"gradient_x_input"`` or ``"saliency"``."""

    input_resolution = True

    def __init__(self, model, mode: str = "gradient_x_input"):
        super().__init__(model)
        if mode not in INPUT_GRADIENT_MODES:
            raise ValueError(f"mode must be one of {', '.join(INPUT_GRADIENT_MODES)}; got {mode!r}")
        self.mode = mode

    def explain_grid(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        grid = vit.grid(images.shape[-2], images.shape[-1])
        with torch.enable_grad():
            pixels = images.detach().clone().requires_grad_(True)  # a leaf: the model may be frozen
            x = vit.embed(pixels)
            for block in vit.blocks:
                x = vit.block_forward(block, x, grid)
            scores = vit.model_scores(x, targets)

            def reduce(grad):
                grad = grad.float()
                if self.mode == "saliency":
                    return grad.abs().amax(dim=1)
                return (grad * pixels.detach().float()).sum(dim=1).abs()

            return per_target_gradients(scores, pixels, reduce)
