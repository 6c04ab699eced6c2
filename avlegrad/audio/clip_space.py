"""The CLIP image space an audio encoder lives in, and building that image tower.

A CLIP space is named by an open_clip model name plus its weights: an open_clip pretrained tag
(``"openai"``, ``"laion2b_s32b_b79k"``), a checkpoint file path, or None for random init. A tower
that is not in open_clip's registry (the tiny ones in tests) is described by ``model_cfg``, the
keyword arguments of ``open_clip.CLIP`` (or ``CustomTextCLIP`` with ``custom_text: true``).

A random-init tower (``pretrained=None``) is reproduced from ``init_seed``: it is built on the
CPU under that torch seed, without touching the caller's RNG. That gives the same weights for the
same torch / open_clip versions; to pin a tower for good, save its state dict and name the file
as ``pretrained``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn


def _looks_like_path(pretrained: str | None) -> bool:
    return bool(pretrained) and (os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")))


def normalize_clip_space(model: str | None, pretrained: str | None) -> tuple[str | None, str | None]:
    """Canonical ``(model, pretrained)`` for comparing two CLIP spaces.

    open_clip spells ``ViT-B/16`` as ``ViT-B-16``; the ``openai`` weights are the same tensors
    whether or not the name carries ``-quickgelu``; tags are case-insensitive; paths are resolved.
    """
    if model is not None:
        model = model.replace("/", "-")
    if pretrained is not None:
        pretrained = str(pretrained)
        if _looks_like_path(pretrained):
            pretrained = str(Path(pretrained).expanduser().resolve())
        else:
            pretrained = pretrained.lower()
            if pretrained == "openai" and model is not None and model.endswith("-quickgelu"):
                model = model[: -len("-quickgelu")]
    return model, pretrained


def check_clip_pair(encoder_space: tuple[str | None, str | None], model_name: str | None,
                    pretrained: str | None, what: str = "audio encoder") -> None:
    """Raise ValueError unless ``(model_name, pretrained)`` names the same space as ``encoder_space``."""
    want = normalize_clip_space(*encoder_space)
    got = normalize_clip_space(model_name, pretrained)
    if want != got:
        raise ValueError(
            f"{what} embeds into the image space of CLIP {want[0]!r} (weights {want[1]!r}), but the image "
            f"tower given is {got[0]!r} (weights {got[1]!r}); LeGrad needs the tower the audio encoder "
            f"was trained against: use model {want[0]!r} with pretrained {want[1]!r}, or another audio encoder")


def clip_embed_dim(tower: nn.Module) -> int:
    """Width of the tower's image embedding."""
    visual = tower.visual
    dim = getattr(visual, "output_dim", None)
    if dim is None:
        with torch.no_grad():
            size = getattr(visual, "image_size", (224, 224))
            size = (size, size) if isinstance(size, int) else tuple(size)
            param = next(tower.parameters())
            dim = tower.encode_image(torch.zeros(1, 3, *size, device=param.device, dtype=param.dtype)).shape[-1]
    return int(dim)


def tower_fingerprint(tower: nn.Module) -> str:
    """sha256 of the image tower's weights: identifies the tower whatever its name or tag says."""
    h = hashlib.sha256()
    for name, tensor in sorted(tower.visual.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
