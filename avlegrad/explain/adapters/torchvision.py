"""torchvision ``VisionTransformer`` classifiers (``torchvision.models.vit_b_16`` ...)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ModelAdapter, randomised_example, refuse, register_adapter


def _is_torchvision_vit(model) -> bool:
    from torchvision.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


@register_adapter("torchvision", matches=_is_torchvision_vit, priority=10)
class TorchvisionViT(ModelAdapter):
    """Forward-pass pieces of a torchvision ``VisionTransformer`` (``torchvision/models/
    vision_transformer.py``: ``VisionTransformer.forward``, ``Encoder``, ``EncoderBlock``).

    The embedding targets live in is the class token after the encoder's final ``ln`` and,
    where the model has one, its ``pre_logits`` layer and activation (``representation_size``):
    the input of the classifier ``heads.head``, width ``D``. Class targets score the class logit.
    LeGrad's per-layer score applies that same head to each layer's tokens (as for timm).
    """

    supported = ("torchvision VisionTransformer classifiers (vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14; "
                 "not the conv-stem variants)")
    num_prefix_tokens = 1

    def __init__(self, model: nn.Module):
        from torchvision.models.vision_transformer import EncoderBlock

        if not isinstance(model.conv_proj, nn.Conv2d):
            refuse(f"this torchvision ViT embeds patches with a {type(model.conv_proj).__name__} (conv stem), "
                   f"not a single convolution")
        for i, block in enumerate(model.encoder.layers):
            attn = getattr(block, "self_attention", None)
            if type(block) is not EncoderBlock or not isinstance(attn, nn.MultiheadAttention) \
                    or not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
                refuse(f"torchvision block {i} is a {type(block).__name__} with an unusual attention layer")
        self.model = model
        self.blocks = list(model.encoder.layers)
        self.patch_size = (model.patch_size, model.patch_size)
        self.native_grid = (model.image_size // model.patch_size,) * 2
        self.channels = model.conv_proj.in_channels
        self.head = model.heads.head
        self.num_classes = self.head.out_features
        self.embed_dim = self.head.in_features

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> tokens ``[B, 1 + gh*gw, C]`` entering block 0 (any size that
        the patches tile: the position embedding is resampled, as timm does)."""
        m = self.model
        grid = self.grid(images.shape[-2], images.shape[-1])
        x = m.conv_proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([m.class_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.resampled(m.encoder.pos_embedding, grid, 1).to(x.dtype)

    def pre_attention_norm(self, block):
        return block.ln_1

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        attn = block.self_attention
        B, N, _ = h.shape
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        return tuple(t.reshape(B, N, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        attn = block.self_attention
        B, H, N, d = o.shape
        y = x + attn.out_proj(o.transpose(1, 2).reshape(B, N, H * d))
        h = block.ln_2(y)
        for layer in block.mlp:  # Linear, GELU, Dropout, Linear, Dropout: dropout never applied
            if not isinstance(layer, nn.Dropout):
                h = layer(h)
        return y + h

    def _pre_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        for name, layer in self.model.heads.named_children():
            if name != "head":  # pre_logits and its activation (representation_size)
                pooled = layer(pooled)
        return pooled

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The classifier's input from a block's tokens: ``ln`` -> class token -> pre-logits, ``[B, D]``."""
        return self._pre_logits(self.model.encoder.ln(tokens[:, 0]))

    def layer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer_embedding(tokens))

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer_embedding(tokens)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each patch token through ``ln`` and the pre-logits layer, ``[B, gh*gw, D]``."""
        return self._pre_logits(self.model.encoder.ln(tokens[:, 1:]))

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m._process_input(images)
        x = m.encoder(torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1))
        return self._pre_logits(x[:, 0])

    @classmethod
    def example_model(cls):
        from torchvision.models.vision_transformer import VisionTransformer

        build = lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4,  # noqa: E731
                                          hidden_dim=64, mlp_dim=96, num_classes=10, representation_size=48)
        return randomised_example(build), (3, 32, 32)
