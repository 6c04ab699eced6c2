"""Audio ViTs over log-mel patches: our ``TimmAudioEncoder`` with a timm ViT backbone, ImageBind's tower.

The input is the encoder's own front-end output, a one-channel spectrogram ``[B, 1, mel, frames]``
(``encoder.frontend(waveforms)``); the embedding is the encoder's head on the backbone's pooled
features (its dropout never applied). Frames the patch does not tile are zero-padded on the right,
as timm's ``dynamic_img_pad`` pads. A patch-grid map goes back onto the spectrogram by
:class:`CoverageLayout`: each (mel, frame) bin takes the mean relevance of the patches whose
receptive field covers it (exact for overlapping strided patches; block replication for
non-overlapping ones), 0 where no patch covers it (the padding). The waveform-level API (several
clips per waveform, ImageBind's tower, placement on the waveform's seconds, the per-frame curve)
is :mod:`avlegrad.explain.audio`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelAdapter, PatchLayout, randomised_example, register_adapter
from .timm import TimmViT


@dataclass(frozen=True)
class CoverageLayout(PatchLayout):
    """A :class:`PatchLayout` mapped back by coverage; ``pad``: the input is zero-padded on the right
    and bottom to a multiple of the stride first (timm's ``dynamic_img_pad``)."""

    pad: bool = False

    def padded(self, height: int, width: int) -> tuple[int, int]:
        if not self.pad:
            return height, width
        (ph, pw) = self.patch_size
        return height + (-height % ph), width + (-width % pw)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return super().grid(*self.padded(height, width))

    def to_input(self, grid_maps: torch.Tensor, size: tuple) -> torch.Tensor:
        """``[M, C, gh, gw]`` -> ``[M, C, H, W]``: each bin the mean of the patches covering it."""
        (kh, kw), (sh, sw) = tuple(self.patch_size), tuple(self.step)
        m, c, gh, gw = grid_maps.shape
        x = grid_maps.reshape(m * c, 1, gh, gw).float()
        ones = torch.ones(1, 1, kh, kw, dtype=x.dtype, device=x.device)
        summed = F.conv_transpose2d(x, ones, stride=(sh, sw))
        coverage = F.conv_transpose2d(torch.ones_like(x[:1]), ones, stride=(sh, sw))
        out = torch.where(coverage > 0, summed / coverage.clamp(min=1), torch.zeros_like(summed))
        h, w = size
        out = F.pad(out, (0, max(w - out.shape[-1], 0), 0, max(h - out.shape[-2], 0)))[..., :h, :w]
        return out.reshape(m, c, h, w)


def _without_dropout(head: nn.Module):
    """A ``nn.Sequential`` head applied without its dropout layers, whatever its mode."""
    layers = [m for m in head if not isinstance(m, nn.Dropout)] if isinstance(head, nn.Sequential) else [head]

    def apply(x):
        for m in layers:
            x = m(x)
        return x
    return apply


def _is_timm_audio_vit(model) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    from ...audio.timm_encoder import TimmAudioEncoder

    return isinstance(model, TimmAudioEncoder) and isinstance(model.backbone, VisionTransformer)


@register_adapter("timm-audio", matches=_is_timm_audio_vit, priority=-10)
class TimmAudioViT(TimmViT):
    """:class:`~avlegrad.audio.timm_encoder.TimmAudioEncoder` with a timm ``VisionTransformer``
    backbone, explained on its log-mel input ``[B, 1, mel, frames]`` (``encoder.frontend(w)``)."""

    supported = ("avlegrad TimmAudioEncoder with a timm VisionTransformer backbone (one-channel log-mel "
                 "patches), on its front-end's spectrograms")

    def __init__(self, encoder: nn.Module):
        super().__init__(encoder.backbone)
        self.encoder = encoder
        self.embedding_head = _without_dropout(encoder.head)
        self.embed_dim = int(encoder.embed_dim)
        self.num_classes = None
        pe = encoder.backbone.patch_embed
        self.stride = tuple(pe.proj.stride)
        self.pad = bool(getattr(pe, "dynamic_img_pad", False))

    @property
    def layout(self) -> CoverageLayout:
        return CoverageLayout(self.channels, tuple(self.patch_size), self.stride, pad=self.pad)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        ph, pw = self.layout.padded(h, w)
        return super().embed(F.pad(images, (0, pw - w, 0, ph - h)))  # as timm's PatchEmbed pads

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's own forward from its spectrogram on (``encode`` without the front-end)."""
        return self.encoder.head(self.encoder.backbone(images))

    @classmethod
    def example_model(cls):
        from ...audio.timm_encoder import TimmAudioEncoder

        build = lambda: TimmAudioEncoder(  # noqa: E731
            backbone="vit_tiny_patch16_224", embed_dim=16, head="mlp", clip_model=None, clip_pretrained=None,
            frontend={"n_fft": 256, "hop_length": 80, "n_mels": 32},
            backbone_kwargs={"img_size": [32, 48], "patch_size": [8, 8], "embed_dim": 32, "depth": 3,
                             "num_heads": 4, "dynamic_img_size": True, "dynamic_img_pad": True})
        return randomised_example(build), (1, 32, 45)  # 45 frames: padded to 48 as the encoder pads


def _is_imagebind_audio(model) -> bool:
    from ...audio.imagebind import ImageBindAudioEncoder

    return isinstance(model, ImageBindAudioEncoder)


@register_adapter("imagebind-audio", matches=_is_imagebind_audio, priority=-10)
class ImageBindAudioTower(ModelAdapter):
    """ImageBind's audio tower (:class:`~avlegrad.audio.imagebind.ImageBindAudioEncoder`), explained on
    its normalised log-mel clips ``[N, 1, 128, 204]`` (``encoder.preprocess(w)`` flattened; one clip
    per row, each scored by its own embedding; :class:`avlegrad.explain.audio.AudioLeGrad` scores a
    waveform's clips together, as the tower averages them). 16 x 16 patches at stride 10 (overlapping),
    pre-norm blocks with ``nn.MultiheadAttention(add_bias_kv=True)``: one learned key and value
    appended after the tokens (``extra_keys = 1``: not a patch), head = LayerNorm, class token,
    linear, then L2 norm x 20 (ImageBind's ``modality_heads/postprocessors.audio``)."""

    supported = "ImageBind's audio tower (ImageBindAudioEncoder), on its log-mel clips"
    extra_keys = 1

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder
        pre = encoder.preprocessor
        self.blocks = list(encoder.trunk.blocks)
        self.num_prefix_tokens = 1
        self.channels = 1
        stem = pre.rgbt_stem.proj
        self.patch_size, self.stride = tuple(stem.kernel_size), tuple(stem.stride)
        self.native_grid = tuple(pre.grid)
        self.embed_dim = int(encoder.embed_dim)

    @property
    def layout(self) -> CoverageLayout:
        return CoverageLayout(1, self.patch_size, self.stride)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        weight = self.encoder.preprocessor.rgbt_stem.proj.weight
        return self.encoder.preprocessor(images.to(dtype=weight.dtype))  # refuses another input size

    def pre_attention_norm(self, block):
        return block.norm_1

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        attn = block.attn
        n, length, d = h.shape
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        k = torch.cat([k, attn.bias_k.reshape(1, 1, d).expand(n, 1, d).to(k.dtype)], dim=1)  # the bias key, last
        v = torch.cat([v, attn.bias_v.reshape(1, 1, d).expand(n, 1, d).to(v.dtype)], dim=1)
        heads = attn.num_heads

        def split(t):
            return t.reshape(n, t.shape[1], heads, d // heads).transpose(1, 2)
        return split(q), split(k), split(v)

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        n, heads, length, hd = o.shape
        x = x + block.attn.out_proj(o.transpose(1, 2).reshape(n, length, heads * hd))
        return x + block.mlp(block.norm_2(x))

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder.postprocessor(self.encoder.head(tokens))

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer_embedding(tokens)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each patch token through the head's LayerNorm and projection, ``[N, gh*gw, D]``."""
        norm, _, proj = self.encoder.head
        return proj(norm(tokens[:, self.num_prefix_tokens:]))

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_clips(images)

    @classmethod
    def example_model(cls):
        from ...audio.imagebind import ImageBindAudioEncoder

        build = lambda: ImageBindAudioEncoder(embed_dim=16, width=32, depth=2, heads=4, num_mel_bins=32,  # noqa: E731
                                              target_length=46)
        return randomised_example(build), (1, 32, 46)
