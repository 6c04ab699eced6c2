"""A read-only, functional view of an OpenCLIP Vision Transformer.

Explainers need the pieces of a ViT's forward pass (tokens, each block's attention inputs and
output, the head) rather than its final output. This adapter recomputes the forward from the
model's own modules and parameters. It never writes to the model: no hooks, no patched
forwards, no changed position embedding or ``requires_grad``; other input sizes are handled by
resampling the position embedding into a new tensor for that call.

Dropout, patch dropout and stochastic depth are not applied, whatever the model's train/eval
mode: an explanation is a deterministic function of the weights and the input.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SUPPORTED_MODELS = (
    "OpenCLIP VisionTransformer towers (open_clip.transformer.VisionTransformer, e.g. ViT-B-32, "
    "ViT-B-16, ViT-L-14, ViT-H-14, ViT-bigG-14, with or without QuickGELU, LayerScale, "
    "qk-norm/NormFormer options), given as the CLIP model or its .visual; not yet: ResNet, timm "
    "or SigLIP towers (open_clip.timm_model.TimmModel), attention-pooling (CoCa) towers"
)


class UnsupportedModelError(TypeError):
    pass


def _refuse(what: str):
    raise UnsupportedModelError(f"{what}. Supported: {SUPPORTED_MODELS}.")


class OpenCLIPViT:
    """Forward-pass pieces of an open_clip ``VisionTransformer`` (batch-first, open_clip >= 2.24)."""

    num_prefix_tokens = 1

    def __init__(self, model: nn.Module):
        from open_clip.transformer import (CustomResidualAttentionBlock, ResidualAttentionBlock,
                                           VisionTransformer)

        visual = getattr(model, "visual", model)
        if not isinstance(visual, VisionTransformer):
            _refuse(f"cannot explain a {type(visual).__module__}.{type(visual).__name__}")
        if getattr(visual, "attn_pool", None) is not None:
            _refuse("this tower pools with attention (CoCa-style attn_pool)")
        if visual.pool_type not in ("tok", "avg"):
            _refuse(f"this tower has pool_type={visual.pool_type!r} (no single image embedding)")
        if not getattr(visual.transformer, "batch_first", True):
            _refuse("this tower runs its transformer token-first (open_clip < 2.24 layout)")
        for i, block in enumerate(visual.transformer.resblocks):
            if isinstance(block, ResidualAttentionBlock):
                attn = block.attn
                if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim \
                        or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
                    _refuse(f"block {i} has an unusual attention layer ({type(attn).__name__})")
            elif isinstance(block, CustomResidualAttentionBlock):
                if block.attn.logit_scale is not None:
                    _refuse(f"block {i} uses scaled cosine attention")
            else:
                _refuse(f"block {i} is a {type(block).__name__}")
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.patch_size = tuple(visual.patch_size)
        self.native_grid = tuple(visual.grid_size)
        self.width = visual.conv1.out_channels
        self.embed_dim = visual.proj.shape[1] if visual.proj is not None else self.width

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def num_heads(self, block) -> int:
        return block.attn.num_heads

    # ----------------------------------------------------------------- input side
    def grid(self, height: int, width: int) -> tuple[int, int]:
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size "
                             f"{ph}x{pw}; resize or crop the images to a multiple of it")
        return height // ph, width // pw

    def position_embedding(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        pos = self.visual.positional_embedding
        if tuple(grid) != self.native_grid:
            # as the official LeGrad code does, but into a new tensor: the model keeps its own
            from timm.layers import resample_abs_pos_embed

            pos = resample_abs_pos_embed(pos.unsqueeze(0), new_size=list(grid),
                                         old_size=list(self.native_grid),
                                         num_prefix_tokens=self.num_prefix_tokens,
                                         interpolation="bicubic", antialias=True)[0]
        return pos.to(dtype)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> tokens ``[B, 1 + gh*gw, width]`` entering block 0."""
        v = self.visual
        grid = self.grid(images.shape[-2], images.shape[-1])
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.position_embedding(grid, x.dtype)
        return v.ln_pre(x)

    # ------------------------------------------------------------------- a block
    def qkv(self, block, x: torch.Tensor):
        """``x`` entering the block -> q, k, v as ``[B, heads, N, head_dim]``."""
        return self.qkv_from_normed(block, block.ln_1(x))

    def qkv_from_normed(self, block, h: torch.Tensor):
        """q, k, v from the block's normalised input ``h = ln_1(x)``."""
        attn = block.attn
        B, N, C = h.shape
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, N, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        if hasattr(attn, "ln_q"):  # open_clip's own Attention (qk-norm option)
            q, k = attn.ln_q(q), attn.ln_k(k)
        return q, k, v

    @staticmethod
    def attend(q, k, v) -> torch.Tensor:
        """Per-head attention output ``o = softmax(q k^T / sqrt(d)) v`` (fused kernel)."""
        return F.scaled_dot_product_attention(q, k, v)

    @staticmethod
    def attention_probs(q, k) -> torch.Tensor:
        """The attention matrix ``softmax(q k^T / sqrt(d))``, ``[B, heads, N query, N key]``."""
        return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The rest of the block after the per-head attention output ``o``: its output tokens."""
        attn = block.attn
        B, H, N, d = o.shape
        if getattr(attn, "head_scale", None) is not None:
            o = o * attn.head_scale
        a = o.transpose(1, 2).reshape(B, N, H * d)
        if hasattr(attn, "ln_inner"):
            a = attn.ln_inner(a)
        a = F.linear(a, attn.out_proj.weight, attn.out_proj.bias)
        if hasattr(block, "ln_attn"):
            a = block.ln_attn(a)
        x = x + block.ls_1(a)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def block_forward(self, block, x: torch.Tensor) -> torch.Tensor:
        return self.finish_block(block, x, self.attend(*self.qkv(block, x)))

    @torch.no_grad()
    def tokens_before(self, images: torch.Tensor, layer: int) -> torch.Tensor:
        """Tokens entering block ``layer`` (no autograd graph)."""
        x = self.embed(images)
        for block in self.blocks[:layer]:
            x = self.block_forward(block, x)
        return x

    # ---------------------------------------------------------------- output side
    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (unnormalised) from the last block's tokens."""
        v = self.visual
        if v.final_ln_after_pool:
            return self._project(v.ln_post(self._pool(tokens)))
        return self._project(self._pool(v.ln_post(tokens)))

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.num_prefix_tokens:].mean(dim=1) if self.visual.pool_type == "avg" else tokens[:, 0]

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every patch token mapped into the embedding space: ``ln_post(token) @ proj``, ``[B, N - prefix, D]``."""
        return self._project(self.visual.ln_post(tokens[:, self.num_prefix_tokens:]))

    def token_mean_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer image embedding, unnormalised: ``ln_post(mean over all tokens) @ proj``."""
        return self._project(self.visual.ln_post(tokens.mean(dim=1)))
