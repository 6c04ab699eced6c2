"""The interface every explainer shares: ``explainer(images, targets) -> maps in [0, 1]``.

Modality-neutral: the model's adapter supplies the input layout (channels, the patch grid of an
input size, how a grid map maps back onto the input; :class:`~.adapters.PatchLayout`), so the
same explainer runs on an image ViT or a spectrogram ViT. A new explainer is one module with a
subclass of :class:`Explainer` decorated with :func:`register_explainer` (``docs/extending.md``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .adapters import UnsupportedModelError, adapter_for, supported_models

EXPLAINERS: dict = {}


def register_explainer(name: str):
    """Class decorator: make an :class:`Explainer` subclass available as ``create_explainer(name,
    model)``, in ``list_explainers()`` and so in ``eval.py --method`` and the demo."""
    def decorate(cls):
        if name in EXPLAINERS and EXPLAINERS[name] is not cls:
            raise ValueError(f"an explainer named {name!r} is already registered ({EXPLAINERS[name].__name__})")
        EXPLAINERS[name] = cls
        return cls
    return decorate


def per_target_gradients(total: torch.Tensor, inputs, reduce) -> torch.Tensor:
    """One backward per target column: ``total`` ``[B, K]`` scores (images are independent, so
    each column's sum over images is differentiated at once); ``reduce(grads)`` turns the
    gradients w.r.t. ``inputs`` (a tensor, or a list giving a tuple) into that column's maps
    ``[B, ...]``. Returns ``[B, K, ...]``. The graph is kept until the last column."""
    K = total.shape[1]
    single = isinstance(inputs, torch.Tensor)
    maps = []
    for kk in range(K):
        grads = torch.autograd.grad(total[:, kk].sum(), inputs, retain_graph=kk < K - 1)
        maps.append(reduce(grads[0] if single else grads))
    return torch.stack(maps, dim=1)


def min_max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (the last two dims) to [0, 1]; a constant map becomes all zeros, not NaN."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, 1), 0.0)


class Explainer:
    """Base class: input checks, mapping back onto the input and normalisation around
    :meth:`explain_grid`.

    Call with ``images`` ``[B, C, H, W]`` (``C`` the model's input channels, 3 for an image ViT;
    already normalised for the model) and ``targets``
    ``[B, D]`` (one embedding per image) or ``[B, K, D]`` (K per image), in the model's
    embedding space; they need not be unit vectors. For a classifier, targets may instead be
    class indices, ``[B]`` or ``[B, K]`` (integer tensors). Returns detached float32 maps on the
    images' device, ``[B, H, W]`` or ``[B, K, H, W]``, each min-max normalised to [0, 1].
    The model is only read, never changed. Images holding NaN or inf raise ValueError naming how
    many and which (they would otherwise give all-zero maps).

    Subclasses implement :meth:`explain_grid` (and :meth:`undefined_for` where the method is
    not defined for every model). ``input_resolution = True``: ``explain_grid`` returns maps at
    the input's size (pixel methods), which are then only normalised.

    Errors: ``UnsupportedModelError`` for a model no adapter (or this method) supports;
    ``ValueError`` naming the shape or value for bad images or targets.
    """

    input_resolution = False

    def __init__(self, model):
        self.vit = adapter_for(model)
        reason = self.undefined_for(self.vit)
        if reason:
            raise UnsupportedModelError(f"{type(self).__name__} is not defined for this {type(self.vit).__name__} "
                                        f"model: {reason}. LeGrad supports: {supported_models()}")

    @classmethod
    def undefined_for(cls, adapter) -> str | None:
        """Why this method is not defined for ``adapter``'s model, or None where it is."""
        return None

    def explain_grid(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Unnormalised maps on the patch grid, ``[B, K, gh, gw]`` (``[B, K, H, W]`` with
        ``input_resolution``); ``targets`` are unit fp32 embeddings ``[B, K, D]`` or long class
        indices ``[B, K]``."""
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
            maps = grid_maps if self.input_resolution else self.vit.layout.to_input(
                grid_maps.reshape(B * K, 1, gh, gw), images.shape[-2:])
            maps = min_max_normalize(maps.reshape(B, K, *maps.shape[-2:])).detach()
        return maps[:, 0] if one_target else maps

    def _check(self, images, targets) -> bool:
        """Validate shapes; True when there is one target per image (``[B, D]``)."""
        channels = self.vit.channels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != channels:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor [B, {channels}, H, W], got {shape}")
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
                             f"timm classifiers and other classifier models without attention pooling; give "
                             f"embeddings [B, D] or "
                             f"[B, K, D] of width {self.vit.embed_dim}")
        if targets.ndim not in (1, 2) or targets.shape[0] != images.shape[0]:
            raise ValueError(f"class targets must be [B] or [B, K] for {images.shape[0]} images, "
                             f"got {tuple(targets.shape)}")
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.vit.num_classes):
            raise ValueError(f"class indices must be in [0, {self.vit.num_classes - 1}], got "
                             f"{int(targets.min())}..{int(targets.max())}")
        return targets.ndim == 1
