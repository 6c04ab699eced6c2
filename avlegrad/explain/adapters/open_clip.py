"""open_clip ``VisionTransformer`` towers (the CLIP model or its ``.visual``; open_clip >= 2.24)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import (SCORE_TOKENS, ModelAdapter, cosines, randomised_example, refuse, register_adapter, score_token,
                   token_mean)


def _is_open_clip_vit(model) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(getattr(model, "visual", model), VisionTransformer)


@register_adapter("open_clip", matches=_is_open_clip_vit, priority=10)
class OpenCLIPViT(ModelAdapter):
    """Forward-pass pieces of an open_clip ``VisionTransformer`` (batch-first, open_clip >= 2.24;
    ``open_clip/transformer.py``: ``VisionTransformer.forward``, ``ResidualAttentionBlock``)."""

    supported = ("OpenCLIP VisionTransformer towers (ViT-B-32 ... ViT-bigG-14, QuickGELU, LayerScale, "
                 "qk-norm/NormFormer options; the CLIP model or its .visual)")
    num_prefix_tokens = 1
    score_token_choices = SCORE_TOKENS
    pools_with_attention = False  # CoCa's attentional pooler: OpenCLIPCoCa (coca.py)

    def __init__(self, model: nn.Module):
        from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock

        visual = getattr(model, "visual", model)
        if getattr(visual, "attn_pool", None) is not None and not self.pools_with_attention:
            refuse("this open_clip tower pools with attention (CoCa-style attn_pool)")
        if visual.pool_type not in ("tok", "avg"):
            refuse(f"this tower has pool_type={visual.pool_type!r} (no single image embedding)")
        if not getattr(visual.transformer, "batch_first", True):
            refuse("this tower runs its transformer token-first (open_clip < 2.24 layout)")
        for i, block in enumerate(visual.transformer.resblocks):
            if isinstance(block, ResidualAttentionBlock):
                attn = block.attn
                if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim \
                        or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
                    refuse(f"block {i} has an unusual attention layer ({type(attn).__name__})")
            elif isinstance(block, CustomResidualAttentionBlock):
                if block.attn.logit_scale is not None:
                    refuse(f"block {i} uses scaled cosine attention")
            else:
                refuse(f"block {i} is a {type(block).__name__}")
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.patch_size = tuple(visual.patch_size)
        self.native_grid = tuple(visual.grid_size)
        self.width = visual.conv1.out_channels
        self.channels = visual.conv1.in_channels
        self.embed_dim = visual.proj.shape[1] if visual.proj is not None else self.width

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> tokens ``[B, 1 + gh*gw, width]`` entering block 0."""
        v = self.visual
        grid = self.grid(images.shape[-2], images.shape[-1])
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.resampled(v.positional_embedding.unsqueeze(0), grid, 1)[0].to(x.dtype)
        return v.ln_pre(x)

    def pre_attention_norm(self, block):
        return block.ln_1

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        attn = block.attn
        B, N, C = h.shape
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, N, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        if hasattr(attn, "ln_q"):  # open_clip's own Attention (qk-norm option)
            q, k = attn.ln_q(q), attn.ln_k(k)
        return q, k, v

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The rest of the block after the per-head attention output ``o``: its output tokens."""
        y = self._attention_residual(block, x, o)
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def _attention_residual(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
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
        return x + block.ls_1(a)

    def legrad_layer(self, block, x: torch.Tensor, o: torch.Tensor, score_tokens: str = "all"):
        """As the base, but cheaper to differentiate, exactly: the score reads only the MEAN of the
        block's tokens, and the MLP's last layer (and LayerScale) are affine, so
        ``mean(y + ls(W h + b)) = mean(y) + ls(W mean(h) + b)``. The graph then holds that layer
        on one vector per image instead of every token: its backward costs almost nothing.
        ``score_tokens`` (an ablation, see :func:`score_token`): the class token or the patches'
        mean instead of all tokens' mean (equally linear).
        Returns (output tokens, detached; the reduced token ``[B, width]`` with its graph)."""
        mlp = block.mlp
        if not (isinstance(mlp, nn.Sequential) and isinstance(mlp[-1], nn.Linear)):
            tokens = self.finish_block(block, x, o)
            return tokens.detach(), score_token(tokens, score_tokens, self.num_prefix_tokens)
        y = self._attention_residual(block, x, o)
        hidden = mlp[:-1](block.ln_2(y))
        with torch.no_grad():
            tokens = y + block.ls_2(mlp[-1](hidden))
        if score_tokens == "all":
            pooled = token_mean(y) + block.ls_2(mlp[-1](token_mean(hidden)))
        else:
            reduce = lambda t: score_token(t, score_tokens, self.num_prefix_tokens)  # noqa: E731
            pooled = reduce(y) + block.ls_2(mlp[-1](reduce(hidden)))
        return tokens, pooled

    def legrad_total_score(self, features: list, targets: torch.Tensor) -> torch.Tensor:
        """Every explained block's mean token through ``ln_post`` and ``proj`` at once: one
        ``[L, B, width]`` stack instead of L small heads (fewer kernels, the same numbers)."""
        return cosines(self._project(self.visual.ln_post(torch.stack(features))), targets, "lbd,bkd->bk")

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer embedding, as the official code: ``ln_post(mean of ALL tokens) @ proj``."""
        return self._project(self.visual.ln_post(tokens.mean(dim=1)))

    def layer_logits(self, tokens):
        raise ValueError("an OpenCLIP tower has no classifier: give targets as embeddings [B, D] or [B, K, D]")

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

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    @classmethod
    def example_model(cls):
        from open_clip.transformer import VisionTransformer

        build = lambda: VisionTransformer(image_size=32, patch_size=8, width=64, layers=3, heads=4,  # noqa: E731
                                          mlp_ratio=2.0, output_dim=16)
        return randomised_example(build), (3, 32, 32)
