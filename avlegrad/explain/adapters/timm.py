"""timm ``VisionTransformer`` models, alone or as an open_clip timm tower (SigLIP)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import ModelAdapter, randomised_example, refuse, register_adapter


def timm_trunk_and_head(model, trunk_class: type):
    """(the timm model of ``trunk_class``, alone or the trunk of an open_clip ``TimmModel``; that
    tower's embedding head or None), or (None, None) for any other model."""
    from open_clip.timm_model import TimmModel

    visual = getattr(model, "visual", model)
    if isinstance(visual, TimmModel) and isinstance(visual.trunk, trunk_class):
        return visual.trunk, visual.head
    if isinstance(visual, trunk_class):
        return visual, None
    return None, None


def _trunk_and_head(model):
    """(the timm ViT, the open_clip embedding head or None), or (None, None)."""
    from timm.models.vision_transformer import VisionTransformer

    return timm_trunk_and_head(model, VisionTransformer)


@register_adapter("timm", matches=lambda model: _trunk_and_head(model)[0] is not None, priority=10)
class TimmViT(ModelAdapter):
    """Forward-pass pieces of a timm ``VisionTransformer`` (optionally under an open_clip head;
    ``timm/models/vision_transformer.py``: ``VisionTransformer.forward_features/forward_head``).

    LeGrad's per-layer score applies the model's own final norm, pooling, ``fc_norm`` and (for
    class targets) classifier head to each layer's tokens. A model that pools with attention
    (``global_pool='map'``, SigLIP) is explained at its pooler instead, as the official code does.
    """

    supported = ("timm VisionTransformer models with standard Block/Attention layers (classifiers, e.g. "
                 "vit_base_patch16_224, register-token models such as vit_base_patch16_reg4_gap_256, "
                 "attention-pooled 'map' models) and open_clip timm towers built on them (SigLIP: "
                 "ViT-B-16-SigLIP, ...); not BEiT, relative-position, parallel-block (vit_*_xp, "
                 "*_18x2), hybrid CNN-stem (vit_*_r50_*) or distilled DeiT ViTs")

    def __init__(self, model: nn.Module):
        from timm.layers import Attention, Mlp, PatchEmbed
        from timm.models.vision_transformer import Block

        trunk, embedding_head = _trunk_and_head(model)
        # everything the adapter's own forward would silently get wrong is refused here, before it runs
        for i, block in enumerate(trunk.blocks):
            attn = getattr(block, "attn", None)
            if type(block) is not Block or type(attn) is not Attention:
                inner = f"with {type(attn).__name__}" if attn is not None else "(parallel branches, no single attention)"
                refuse(f"timm block {i} is a {type(block).__name__} {inner}")
            if getattr(attn, "gate", None) is not None:
                refuse(f"timm block {i} uses gated attention")
        if getattr(trunk, "dist_token", None) is not None:
            refuse("this timm ViT has a distillation token (DeiT distilled: two prefix tokens, two heads)")
        if type(trunk.patch_embed) is not PatchEmbed or type(getattr(trunk.patch_embed, "proj", None)) is not nn.Conv2d:
            refuse(f"this timm ViT embeds patches with a {type(trunk.patch_embed).__name__} (e.g. a hybrid CNN "
                   f"stem), not a single convolution")
        if getattr(trunk, "rope", None) is not None:
            refuse("this timm ViT uses rotary position embedding")
        self.trunk = trunk
        self.embedding_head = embedding_head
        self._mlp_type = Mlp
        self.blocks = list(trunk.blocks)
        self.num_prefix_tokens = trunk.num_prefix_tokens
        self.has_class_token = trunk.cls_token is not None
        self.patch_size = tuple(trunk.patch_embed.patch_size)
        self.native_grid = tuple(trunk.patch_embed.grid_size)
        self.channels = trunk.patch_embed.proj.in_channels
        pool = getattr(trunk, "attn_pool", None)
        if pool is not None:
            from timm.layers import AttentionPoolLatent

            if type(pool) is not AttentionPoolLatent or pool.pos_embed is not None:
                refuse(f"this timm ViT pools with a {type(pool).__name__} (only AttentionPoolLatent is supported)")
            self.attention_pool = pool
            # the pooler's keys are the patches, plus the prefix tokens when the model includes them
            self.pool_key_offset = 0 if trunk.pool_include_prefix else self.num_prefix_tokens
        if embedding_head is not None:
            with torch.no_grad():
                self.embed_dim = embedding_head(torch.zeros(1, trunk.num_features)).shape[-1]
        else:
            self.embed_dim = trunk.num_features
            # class targets go through the classifier; an attention-pooled model is explained at its
            # pooler with embedding targets only, as the official code does for SigLIP
            self.num_classes = (trunk.num_classes or None) if pool is None else None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        grid = self.grid(images.shape[-2], images.shape[-1])
        x = t.patch_embed.proj(images).flatten(2).transpose(1, 2)  # conv directly: any size
        x = t.patch_embed.norm(x)
        prefix = [tok.expand(x.shape[0], -1, -1).to(x.dtype)
                  for tok in (t.cls_token, t.reg_token) if tok is not None]
        if t.pos_embed is None:
            x = torch.cat(prefix + [x], dim=1)
        elif t.no_embed_class:  # the position embedding covers the patches only
            x = torch.cat(prefix + [x + self.resampled(t.pos_embed, grid, 0).to(x.dtype)], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1)
            x = x + self.resampled(t.pos_embed, grid, self.num_prefix_tokens).to(x.dtype)
        return t.norm_pre(x)

    def pre_attention_norm(self, block):
        return block.norm1

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        attn = block.attn
        B, N, _ = h.shape
        q, k, v = attn.qkv(h).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return attn.q_norm(q), attn.k_norm(k), v

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        B, H, N, d = o.shape
        a = attn.proj(attn.norm(o.transpose(1, 2).reshape(B, N, H * d)))
        x = x + block.ls1(a)
        return x + block.ls2(self._mlp(block.mlp, block.norm2(x)))

    def _mlp(self, mlp, x):
        if type(mlp) is self._mlp_type:  # skip its dropouts, whatever the train/eval mode
            return mlp.fc2(mlp.norm(mlp.act(mlp.fc1(x))))
        return mlp(x)

    def pre_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own head up to the classifier: final norm, pooling, ``fc_norm``."""
        t = self.trunk
        pooled = t.forward_head(t.norm(tokens), pre_logits=True)
        return pooled

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        features = self.pre_logits(tokens)
        return self.embedding_head(features) if self.embedding_head is not None else features

    def layer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            raise ValueError("this model has no classifier head: give targets as embeddings [B, D] or [B, K, D]")
        return self.trunk.head(self.pre_logits(tokens))

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own embedding from the last block's tokens: its head up to the classifier
        (and the open_clip head): the same function LeGrad scores each layer with."""
        return self.layer_embedding(tokens)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each patch token through the final norm, ``fc_norm`` and the open_clip head (what a
        token-pooled model applies to its pooled token), ``[B, gh*gw, D]``. Attention-pooled models
        have no per-token map: ``UnsupportedModelError``."""
        if self.attention_pool is not None:
            from .base import UnsupportedModelError

            raise UnsupportedModelError("an attention-pooled timm ViT has no per-token embedding "
                                        "(its pooler mixes tokens)")
        t = self.trunk
        x = t.fc_norm(t.norm(tokens[:, self.num_prefix_tokens:]))
        return self.embedding_head(x) if self.embedding_head is not None else x

    # ---- the attention-pooling head (SigLIP): LeGrad's gradient site for these models
    def pool_qkv(self, keys: torch.Tensor):
        p = self.attention_pool
        B, N, C = keys.shape
        q = p.q(p.latent.expand(B, -1, -1)).reshape(B, p.latent_len, p.num_heads, p.head_dim).transpose(1, 2)
        k, v = p.kv(keys).reshape(B, N, 2, p.num_heads, p.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return p.q_norm(q), p.k_norm(k), v

    def pooled_features(self, o: torch.Tensor) -> torch.Tensor:
        """The pooler's output ``[B, C]`` (timm ``AttentionPoolLatent.forward`` after its attention)
        from its per-head attention output ``o`` ``[B, heads, latents, d]``."""
        p = self.attention_pool
        B, H, Lq, d = o.shape
        x = p.proj(o.transpose(1, 2).reshape(B, Lq, H * d))
        if p.mlp is not None:
            x = x + self._mlp(p.mlp, p.norm(x))
        return x[:, 0] if p.pool == "token" else x.mean(dim=1)

    def finish_pool(self, o: torch.Tensor) -> torch.Tensor:
        """The pooled embedding from the pooler's per-head attention output ``o``."""
        x = self.pooled_features(o)
        return self.embedding_head(x) if self.embedding_head is not None else x

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk.forward_head(self.trunk.forward_features(images), pre_logits=True)
        return self.embedding_head(features) if self.embedding_head is not None else features

    @classmethod
    def example_model(cls):
        from timm.models.vision_transformer import VisionTransformer

        build = lambda: VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4,  # noqa: E731
                                          num_classes=10, qkv_bias=True, reg_tokens=2, init_values=0.5)
        return randomised_example(build), (3, 32, 32)
