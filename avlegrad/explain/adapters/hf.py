"""Adapters for Hugging Face ``transformers`` image towers: ``CLIPModel`` / ``CLIPVisionModel`` /
``CLIPVisionModelWithProjection`` and ``SiglipModel`` / ``SiglipVisionModel``.

``transformers`` is an optional dependency (``pip install -e ".[hf]"``); nothing here imports it
unless such a model is given. Targets live where ``get_image_features`` puts images: build them
with ``model.get_text_features(**inputs).pooler_output`` (transformers >= 5 returns an output
object; older versions the tensor itself).

What is reproduced (transformers ``models/clip/modeling_clip.py``: ``CLIPVisionEmbeddings``,
``CLIPAttention``, ``CLIPEncoderLayer``, ``CLIPVisionTransformer``, ``CLIPModel.get_image_features``;
``models/siglip/modeling_siglip.py``: ``SiglipVisionEmbeddings``, ``SiglipVisionTransformer``,
``SiglipMultiheadAttentionPoolingHead``):

* CLIP: patch conv (no bias), class token, position embedding (other sizes: the model's own
  ``interpolate_pos_encoding``, as ``get_image_features(..., interpolate_pos_encoding=True)``),
  ``pre_layrnorm``; pre-norm blocks (``layer_norm1``, q/k/v/out projections, ``layer_norm2``, MLP);
  ``post_layernorm`` of the class token, then ``visual_projection`` (``CLIPModel``,
  ``...WithProjection``; none for ``CLIPVisionModel``). LeGrad's per-layer embedding is the one the
  official code uses for OpenCLIP: the mean of ALL tokens through ``post_layernorm`` and the
  projection.
* SigLIP: no class token; ``post_layernorm``; the attention-pooling head (a learnt probe attending
  over the patches through ``nn.MultiheadAttention``, then LayerNorm + MLP residual) gives the
  image embedding (no projection). LeGrad is taken at that pooler's attention over each explained
  block's tokens (before ``post_layernorm``), as the official code and :class:`TimmViT` do for
  open_clip's SigLIP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ModelAdapter, randomised_example, refuse, register_adapter

HF_CLIP_CLASSES = ("CLIPModel", "CLIPVisionModel", "CLIPVisionModelWithProjection")
HF_SIGLIP_CLASSES = ("SiglipModel", "SiglipVisionModel")


def _is(model, names) -> bool:
    return type(model).__module__.startswith("transformers.") and type(model).__name__ in names


class _HFBlocks(ModelAdapter):
    """What CLIP and SigLIP share: the encoder layers and the position embedding per size."""

    def __init__(self, model, vision):
        cfg = vision.config
        self.model = model
        self.vision = vision
        self.blocks = list(vision.encoder.layers)
        emb = vision.embeddings
        self.patch_size = (emb.patch_size, emb.patch_size)
        side = emb.image_size // emb.patch_size
        self.native_grid = (side, side)
        if getattr(cfg, "_attn_implementation", None) not in (None, "eager", "sdpa", "flash_attention_2"):
            refuse(f"this transformers model uses attention {cfg._attn_implementation!r}")

    def _positions(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        emb = self.vision.embeddings
        if self.grid(height, width) == self.native_grid:
            return emb.position_embedding.weight.unsqueeze(0)
        return emb.interpolate_pos_encoding(x, height, width)  # the model's own resampling (read only)

    def pre_attention_norm(self, block):
        return block.layer_norm1

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        attn = block.self_attn
        B, N, _ = h.shape
        return tuple(proj(h).reshape(B, N, attn.num_heads, attn.head_dim).transpose(1, 2)
                     for proj in (attn.q_proj, attn.k_proj, attn.v_proj))

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        B, H, N, d = o.shape
        x = x + block.self_attn.out_proj(o.transpose(1, 2).reshape(B, N, H * d))
        return x + block.mlp(block.layer_norm2(x))

    def layer_logits(self, tokens):
        raise ValueError("a transformers CLIP/SigLIP has no classifier: give targets as embeddings [B, D] or [B, K, D]")


@register_adapter("transformers_clip", matches=lambda model: _is(model, HF_CLIP_CLASSES), priority=10)
class HFCLIPViT(_HFBlocks):
    """Forward-pass pieces of a ``transformers`` CLIP image tower."""

    supported = "transformers CLIPModel, CLIPVisionModel and CLIPVisionModelWithProjection (pip install -e \".[hf]\")"
    num_prefix_tokens = 1

    def __init__(self, model):
        vision = getattr(model, "vision_model", model)  # transformers >= 5: the vision model is the tower
        super().__init__(model, vision)
        self.projection = getattr(model, "visual_projection", None)
        hidden = vision.config.hidden_size
        self.embed_dim = self.projection.out_features if self.projection is not None else hidden

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.vision.embeddings
        H, W = images.shape[-2:]
        self.grid(H, W)
        x = emb.patch_embedding(images.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([emb.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        return self.vision.pre_layrnorm(x + self._positions(x, H, W).to(x.dtype))

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.projection(pooled) if self.projection is not None else pooled

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer embedding: ``post_layernorm(mean of ALL tokens)``, projected."""
        return self._project(self.vision.post_layernorm(tokens.mean(dim=1)))

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (``get_image_features``), unnormalised."""
        return self._project(self.vision.post_layernorm(tokens[:, 0]))

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._project(self.vision.post_layernorm(tokens[:, 1:]))

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        return _own_image_features(self.model, images, self.grid(*images.shape[-2:]) != self.native_grid)

    @classmethod
    def example_model(cls):
        from transformers import CLIPConfig, CLIPModel

        cfg = CLIPConfig(vision_config=EXAMPLE_VISION, text_config=EXAMPLE_TEXT, projection_dim=16)
        return randomised_example(lambda: CLIPModel(cfg)), (3, 32, 32)


@register_adapter("transformers_siglip", matches=lambda model: _is(model, HF_SIGLIP_CLASSES), priority=10)
class HFSiglipViT(_HFBlocks):
    """Forward-pass pieces of a ``transformers`` SigLIP image tower (attention-pooled)."""

    supported = "transformers SiglipModel and SiglipVisionModel (pip install -e \".[hf]\")"
    num_prefix_tokens = 0
    pool_key_offset = 0
    has_class_token = False

    def __init__(self, model):
        vision = getattr(model, "vision_model", model)  # transformers >= 5: the vision model is the tower
        if not getattr(vision, "use_head", False):
            refuse("this SigLIP tower has no attention-pooling head (vision_use_head=False): no image embedding")
        super().__init__(model, vision)
        self.attention_pool = vision.head
        self.embed_dim = vision.config.hidden_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.vision.embeddings
        H, W = images.shape[-2:]
        self.grid(H, W)
        x = emb.patch_embedding(images.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        return x + self._positions(x, H, W).to(x.dtype)

    # ---- the attention-pooling head: LeGrad's gradient site
    def pool_keys(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def pool_qkv(self, keys: torch.Tensor):
        head = self.attention_pool
        mha = head.attention
        B, N, C = keys.shape
        h, d = mha.num_heads, C // mha.num_heads
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        q = F.linear(head.probe.expand(B, -1, -1), wq, bq).reshape(B, -1, h, d).transpose(1, 2)
        k = F.linear(keys, wk, bk).reshape(B, N, h, d).transpose(1, 2)
        v = F.linear(keys, wv, bv).reshape(B, N, h, d).transpose(1, 2)
        return q, k, v

    def finish_pool(self, o: torch.Tensor) -> torch.Tensor:
        """The pooled embedding from the pooler's per-head attention output ``o``."""
        head = self.attention_pool
        B, H, Lq, d = o.shape
        x = head.attention.out_proj(o.transpose(1, 2).reshape(B, Lq, H * d))
        x = x + head.mlp(head.layernorm(x))
        return x[:, 0]

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.finish_pool(self.attend(*self.pool_qkv(self.vision.post_layernorm(tokens))))

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (``get_image_features``), unnormalised."""
        return self.layer_embedding(tokens)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        from .base import UnsupportedModelError

        raise UnsupportedModelError("a SigLIP tower has no per-token embedding (its pooler mixes tokens)")

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        return _own_image_features(self.model, images, self.grid(*images.shape[-2:]) != self.native_grid)

    @classmethod
    def example_model(cls):
        from transformers import SiglipConfig, SiglipModel

        cfg = SiglipConfig(vision_config=EXAMPLE_VISION, text_config={**EXAMPLE_TEXT, "hidden_size": 64,
                                                                    "projection_size": 64})
        return randomised_example(lambda: SiglipModel(cfg)), (3, 32, 32)


EXAMPLE_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      image_size=32, patch_size=8)
EXAMPLE_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    vocab_size=99, max_position_embeddings=16)


def _own_image_features(model, images, other_size: bool) -> torch.Tensor:
    """transformers' own image embedding: ``get_image_features`` (its output object's
    ``pooler_output`` in transformers >= 5), or the vision model's ``image_embeds``/``pooler_output``."""
    kw = dict(pixel_values=images, interpolate_pos_encoding=other_size)
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(**kw)
        return out if torch.is_tensor(out) else out.pooler_output
    out = model(**kw)
    return out.image_embeds if getattr(out, "image_embeds", None) is not None else out.pooler_output
