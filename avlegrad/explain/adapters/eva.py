"""The adapter for timm ``Eva`` models: rotary-position (RoPE) ViTs such as EVA02 and Perception
Encoder (``eva02_*``, ``vit_pe_core_*``), and the open_clip towers built on them (``EVA02-B-16``,
``PE-Core-B-16``, ...: a ``TimmModel`` whose trunk is an ``Eva``).

What differs from a plain timm ViT (read from timm ``models/eva.py``: ``EvaAttention.forward``,
``EvaBlock.forward``, ``Eva._pos_embed``, ``Eva.forward_head``):

* q, k and v come from a fused ``qkv`` (with ``q_bias``, a zero ``k_bias`` buffer, ``v_bias``) or
  from separate ``q_proj``/``k_proj``/``v_proj``; then ``q_norm``/``k_norm``; then the rotary
  embedding rotates the queries and keys of the patch tokens (the first
  ``attn.num_prefix_tokens`` tokens are left as they are), interleaved or ``rotate_half`` layout;
* the attention output passes ``attn.norm`` (EVA02's inner LayerNorm) before ``proj``; LayerScale
  is ``gamma_1``/``gamma_2``; the MLP may be SwiGLU (with its own inner norm);
* the rotary embedding is built for each call's patch grid from the model's frequency bands
  (``RotaryEmbeddingCat``), as a ``dynamic_img_size=True`` model does, so any input size that the
  patches tile works; the model's cached table is used at its own size. Nothing on the model
  changes;
* heads: the class token or the patch mean (then ``fc_norm``, ``head``); attention-pooled
  models (``global_pool='map'``, Perception Encoder) are explained at the pooler's attention over
  each explained block's tokens (without the final norm), as the official LeGrad code does for
  SigLIP; open_clip's towers use the trunk's classifier as the projection into the CLIP space,
  then the ``TimmModel`` head.

Refused: ``EvaBlockPostNorm``, gated attention, depth-dependent (``rope_type='mixed'``) or other
RoPE variants than ``RotaryEmbeddingCat``, patch embeddings other than one convolution.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import randomised_example, refuse, register_adapter
from .timm import TimmViT, timm_trunk_and_head


def _trunk_and_head(model):
    """(the timm Eva, the open_clip ``TimmModel`` head or None), or (None, None)."""
    from timm.models.eva import Eva

    return timm_trunk_and_head(model, Eva)


@register_adapter("eva", matches=lambda model: _trunk_and_head(model)[0] is not None, priority=10)
class EvaViT(TimmViT):
    """Forward-pass pieces of a timm ``Eva`` (optionally the trunk of an open_clip ``TimmModel``)."""

    supported = ("timm Eva rotary-position ViTs (EVA02 eva02_*, Perception Encoder vit_pe_core_*; not "
                 "post-norm, gated or depth-dependent-RoPE variants) and the open_clip towers built on them "
                 "(EVA02-B-16, PE-Core-B-16, ...)")

    @staticmethod
    def find_trunk(model: nn.Module):
        """(the timm ``Eva`` to explain, a callable mapping its classifier's output into the embedding
        space, or None): a subclass wrapping an Eva in another model overrides this."""
        return _trunk_and_head(model)

    def __init__(self, model: nn.Module):
        from timm.layers import PatchEmbed
        from timm.layers.pos_embed_sincos import RotaryEmbeddingCat
        from timm.layers.attention import AttentionRope
        from timm.models.eva import EvaAttention, EvaBlock

        trunk, tower_head = self.find_trunk(model)
        for i, block in enumerate(trunk.blocks):
            if type(block) is not EvaBlock or type(block.attn) not in (EvaAttention, AttentionRope):
                refuse(f"Eva block {i} is a {type(block).__name__} (post-norm or custom blocks are not supported)")
            if block.attn.gate is not None:
                refuse(f"Eva block {i} uses gated attention")
        other_rope = trunk.rope is not None and type(trunk.rope) is not RotaryEmbeddingCat
        if getattr(trunk, "rope_mixed", False) or other_rope:
            refuse(f"this Eva uses a {type(trunk.rope).__name__} rotary embedding (depth-dependent or other "
                    f"RoPE variants than RotaryEmbeddingCat)")
        if type(trunk.patch_embed) is not PatchEmbed or type(getattr(trunk.patch_embed, "proj", None)) is not nn.Conv2d:
            refuse(f"this Eva embeds patches with a {type(trunk.patch_embed).__name__}, not a single convolution")
        self.trunk = trunk
        self.tower_head = tower_head
        self.blocks = list(trunk.blocks)
        self.num_prefix_tokens = trunk.num_prefix_tokens
        self.has_class_token = trunk.cls_token is not None
        self.channels = trunk.patch_embed.proj.in_channels
        self._rope_tables = {}  # grid -> rotary table, built once per input size (on the adapter)
        self.patch_size = tuple(trunk.patch_embed.patch_size)
        self.native_grid = tuple(trunk.patch_embed.grid_size)
        self.attention_pool = None
        self.num_classes = None
        pool = trunk.attn_pool
        if pool is not None:
            from timm.layers import AttentionPoolLatent

            if type(pool) is not AttentionPoolLatent or pool.pos_embed is not None:
                refuse(f"this Eva pools with a {type(pool).__name__} (only AttentionPoolLatent is supported)")
            self.attention_pool = pool
        if tower_head is not None:  # open_clip: the trunk's classifier is the projection, then the tower's head
            self.embedding_head = lambda features: tower_head(trunk.head(features))
            with torch.no_grad():
                p = next(trunk.parameters())
                self.embed_dim = self.embedding_head(torch.zeros(1, trunk.num_features, device=p.device,
                                                                 dtype=p.dtype)).shape[-1]
        elif pool is not None and trunk.num_classes:
            # timm's Perception Encoder (vit_pe_core_*) keeps its CLIP projection as the attention-pooled
            # model's `head` (timm eva.py `_convert_pe`: `proj` -> `head.weight`, zero bias; num_classes =
            # the CLIP width): targets live after it, as for open_clip's
            # PE-Core tower; pooled models take no class indices (as before)
            self.embedding_head = trunk.head
            self.embed_dim = trunk.num_classes
        else:
            self.embedding_head = None
            self.embed_dim = trunk.num_features
            self.num_classes = (trunk.num_classes or None) if pool is None else None

    # ---- tokens
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> tokens entering block 0 (prefix tokens first)."""
        t = self.trunk
        grid = self.grid(images.shape[-2], images.shape[-1])
        x = t.patch_embed.norm(t.patch_embed.proj(images).flatten(2).transpose(1, 2))
        prefix = [tok.expand(x.shape[0], -1, -1).to(x.dtype) for tok in (t.cls_token, t.reg_token) if tok is not None]
        if t.pos_embed is None:
            x = torch.cat(prefix + [x], dim=1)
        elif t.no_embed_class:
            x = torch.cat(prefix + [x + self.resampled(t.pos_embed, grid, 0).to(x.dtype)], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + self.resampled(t.pos_embed, grid, self.num_prefix_tokens).to(x.dtype)
        return t.norm_pre(x)

    def rope_table(self, grid) -> torch.Tensor | None:
        """The rotary table ``[gh*gw, 2*dim]`` (sin, cos) for this grid: the model's cached one at its
        own size, else built from its frequency bands (what ``dynamic_img_size=True`` does)."""
        rope = self.trunk.rope
        if rope is None:
            return None
        if tuple(grid) == tuple(rope.feat_shape or ()) and rope.pos_embed is not None:
            return rope.pos_embed
        if getattr(rope, "bands", None) is None:
            refuse("this Eva's rotary embedding has no frequency bands to rebuild it for another input size; "
                    f"use {self.native_grid[0] * self.patch_size[0]}x{self.native_grid[1] * self.patch_size[1]} images")
        return rope._build_embed_cat(list(grid), rope.bands, augment=False)

    def _rope_for(self, grid):
        if grid not in self._rope_tables:
            self._rope_tables[grid] = self.rope_table(grid)
        return self._rope_tables[grid]

    def pre_attention_norm(self, block):
        return block.norm1

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        from timm.layers.pos_embed_sincos import apply_rot_embed_cat

        attn = block.attn
        B, N, _ = h.shape
        if attn.qkv is not None:
            if getattr(attn, "q_bias", None) is not None:  # EvaAttention: q and v biases, k's is zero
                qkv = nn.functional.linear(h, attn.qkv.weight, torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)))
            else:  # AttentionRope (Perception Encoder), or no bias
                qkv = attn.qkv(h)
            q, k, v = qkv.reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            kv_heads = getattr(attn, "num_kv_heads", attn.num_heads)
            heads = (attn.num_heads, kv_heads, kv_heads)
            q, k, v = (proj(h).reshape(B, N, n, -1).transpose(1, 2)
                       for proj, n in zip((attn.q_proj, attn.k_proj, attn.v_proj), heads))
        q, k = attn.q_norm(q), attn.k_norm(k)
        grid = tuple(grid) if grid is not None else self.native_grid
        if N - attn.num_prefix_tokens != grid[0] * grid[1]:  # the rotary table must fit these tokens
            raise ValueError(f"{N} tokens do not fit the patch grid {grid[0]}x{grid[1]}: pass the grid of "
                             f"this input (adapter.qkv(block, x, adapter.grid(H, W)))")
        rope = self._rope_for(grid)
        if rope is not None:
            n = attn.num_prefix_tokens
            rope = rope.to(q.device)
            half = attn.rotate_half
            q = torch.cat([q[:, :, :n], apply_rot_embed_cat(q[:, :, n:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :n], apply_rot_embed_cat(k[:, :, n:], rope, half=half)], dim=2).type_as(v)
        groups = getattr(attn, "num_kv_groups", 1)
        if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return q, k, v

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        B, H, N, d = o.shape
        a = attn.proj(attn.norm(o.transpose(1, 2).reshape(B, N, H * d)))
        if block.gamma_1 is not None:
            a = block.gamma_1 * a
        x = x + a
        m = self._mlp(block.mlp, block.norm2(x))
        if block.gamma_2 is not None:
            m = block.gamma_2 * m
        return x + m

    def _mlp(self, mlp, x):
        """The MLP without its dropouts, whatever the train/eval mode."""
        from timm.layers import GluMlp, Mlp, SwiGLU

        if type(mlp) is Mlp:
            return mlp.fc2(mlp.norm(mlp.act(mlp.fc1(x))))
        if type(mlp) is SwiGLU:
            return mlp.fc2(mlp.norm(mlp.act(mlp.fc1_g(x)) * mlp.fc1_x(x)))
        if type(mlp) is GluMlp:
            x = mlp.fc1(x)
            x1, x2 = x.chunk(2, dim=mlp.chunk_dim)
            return mlp.fc2(mlp.norm(x1 * mlp.act(x2) if mlp.gate_last else mlp.act(x1) * x2))
        return mlp(x)

    # ---- heads
    def pre_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own head up to the classifier: final norm, pooling (or the attention
        pooler), ``fc_norm``."""
        t = self.trunk
        x = t.norm(tokens)
        if self.attention_pool is not None:
            x = self.finish_pool(self.attend(*self.pool_qkv(x)), project=False)
        else:
            from timm.layers import global_pool_nlc

            x = global_pool_nlc(x, pool_type=t.global_pool, num_prefix_tokens=self.num_prefix_tokens)
        return t.fc_norm(x)

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (unnormalised) from the last block's tokens."""
        features = self.pre_logits(tokens)
        return self.embedding_head(features) if self.embedding_head is not None else features

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each patch token through the final norm, ``fc_norm`` and the head into the embedding
        space (what a token-pooled model applies to its pooled token), ``[B, gh*gw, D]``."""
        if self.attention_pool is not None:
            from .base import UnsupportedModelError

            raise UnsupportedModelError("an attention-pooled Eva has no per-token embedding (its pooler mixes tokens)")
        t = self.trunk
        x = t.fc_norm(t.norm(tokens[:, self.num_prefix_tokens:]))
        return self.embedding_head(x) if self.embedding_head is not None else x

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        features = t.forward_head(t.forward_features(images), pre_logits=True)
        return self.embedding_head(features) if self.embedding_head is not None else features

    @classmethod
    def example_model(cls):
        """A tiny EVA02-style classifier: separate q/k/v, SwiGLU with inner norm, inner attention
        norm, LayerScale, rotary embedding with a reference grid."""
        from timm.models.eva import Eva

        build = lambda: Eva(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4,  # noqa: E731
                            use_rot_pos_emb=True, qkv_fused=False, swiglu_mlp=True, scale_mlp=True,
                            scale_attn_inner=True, mlp_ratio=8 / 3, ref_feat_shape=(2, 2), init_values=0.3,
                            num_classes=10, global_pool="token")
        return randomised_example(build), (3, 32, 32)

    pool_key_offset = 0  # Eva's pooler attends over every token, prefix included (Eva.pool)

    def finish_pool(self, o: torch.Tensor, project: bool = True) -> torch.Tensor:
        """The pooled features from the pooler's per-head attention output ``o``; with
        ``project``, through ``fc_norm`` and the head into the embedding space."""
        x = self.pooled_features(o)
        if not project:
            return x
        x = self.trunk.fc_norm(x)
        return self.embedding_head(x) if self.embedding_head is not None else x
