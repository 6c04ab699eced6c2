"""The interface every explainer shares: ``explainer(images, targets) -> maps in [0, 1]``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .vit import SUPPORTED_MODELS, OpenCLIPViT, UnsupportedModelError, adapter_for


def min_max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (the last two dims) to [0, 1]; a constant map becomes all zeros, not NaN."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, 1), 0.0)


class Explainer:
    """Base class: input checks, upsampling and normalisation around :meth:`explain_grid`.

    Call with ``images`` ``[B, 3, H, W]`` (already normalised for the model) and ``targets``
    ``[B, D]`` (one embedding per image) or ``[B, K, D]`` (K per image), in the model's
    embedding space; they need not be unit vectors. For a classifier, targets may instead be
    class indices, ``[B]`` or ``[B, K]`` (integer tensors). Returns detached float32 maps on the
    images' device, ``[B, H, W]`` or ``[B, K, H, W]``, each min-max normalised to [0, 1].
    The model is only read, never changed. Images holding NaN or inf raise ValueError naming how
    many and which (they would otherwise give all-zero maps).
    """

    families: tuple = (OpenCLIPViT,)  # the model families this method is defined for

    def __init__(self, model):
        self.vit = adapter_for(model)
        if not isinstance(self.vit, self.families):
            raise UnsupportedModelError(
                f"{type(self).__name__} is defined for {', '.join(f.__name__ for f in self.families)} models, "
                f"not for a {type(self.vit).__name__}; LeGrad supports: {SUPPORTED_MODELS}")

    def explain_grid(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Unnormalised maps on the patch grid, ``[B, K, gh, gw]``; ``targets`` are unit
        embeddings ``[B, K, D]`` or class indices ``[B, K]``."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        one_target = self._check(images, targets)
        # inference_mode off: explainers need autograd even when the caller evaluates under it
        with torch.inference_mode(False):
            if targets.is_floating_point():
                targets = F.normalize(targets.to(images.device, torch.float32), dim=-1)
            else:
                targets = targets.to(images.device, torch.long).clone()
            if one_target:
                targets = targets.unsqueeze(1)
            if images.shape[0] == 0:  # an empty batch: empty maps of the right shape
                empty = images.new_zeros(0, targets.shape[1], *images.shape[-2:], dtype=torch.float32)
                return empty[:, 0] if one_target else empty
            grid_maps = self.explain_grid(images, targets).float()
            B, K, gh, gw = grid_maps.shape
            maps = F.interpolate(grid_maps.reshape(B * K, 1, gh, gw), scale_factor=self.vit.patch_size,
                                 mode="bilinear", align_corners=False)
            maps = min_max_normalize(maps.reshape(B, K, *maps.shape[-2:])).detach()
        return maps[:, 0] if one_target else maps

    def _check(self, images, targets) -> bool:
        """Validate shapes; True when there is one target per image (``[B, D]``)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor [B, 3, H, W], got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point (normalised for the model), got {images.dtype}")
        # a NaN/inf pixel would make every score NaN and the map silently all zeros
        bad = (~torch.isfinite(images.detach()).flatten(1).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            raise ValueError(f"images contain NaN or inf values: {len(bad)} of {images.shape[0]} images "
                             f"(batch indices {shown}); explain finite images only")
        self.vit.grid(images.shape[-2], images.shape[-1])  # raises on a size the patches do not tile
        if isinstance(targets, torch.Tensor) and not targets.is_floating_point() and not targets.is_complex():
            return self._check_classes(images, targets)
        if not isinstance(targets, torch.Tensor) or targets.ndim not in (2, 3):
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets must be a tensor [B, D] or [B, K, D], got {shape}")
        if targets.shape[0] != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but targets for {targets.shape[0]} "
                             f"(targets {tuple(targets.shape)}: one row, or K rows, per image)")
        if targets.shape[-1] != self.vit.embed_dim:
            raise ValueError(f"targets have width {targets.shape[-1]} but the model's image embedding "
                             f"has width {self.vit.embed_dim}: the target must live in this model's "
                             f"embedding space")
        if targets.ndim == 3 and targets.shape[1] == 0:
            raise ValueError(f"targets {tuple(targets.shape)} hold no target per image")
        norms = targets.detach().float().norm(dim=-1)
        if not torch.isfinite(norms).all() or (norms == 0).any():
            raise ValueError("targets contain NaN/inf or all-zero embeddings; a target must be a "
                             "finite, non-zero embedding")
        return targets.ndim == 2

    def _check_classes(self, images, targets) -> bool:
        if self.vit.num_classes is None:
            raise ValueError(f"integer targets are class indices, which {type(self).__name__} supports only for "
                             f"timm classifiers without attention pooling; give embeddings [B, D] or "
                             f"[B, K, D] of width {self.vit.embed_dim}")
        if targets.ndim not in (1, 2) or targets.shape[0] != images.shape[0]:
            raise ValueError(f"class targets must be [B] or [B, K] for {images.shape[0]} images, "
                             f"got {tuple(targets.shape)}")
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.vit.num_classes):
            raise ValueError(f"class indices must be in [0, {self.vit.num_classes - 1}], got "
                             f"{int(targets.min())}..{int(targets.max())}")
        return targets.ndim == 1
