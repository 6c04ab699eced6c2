"""The adapter for open_clip CoCa image towers (``coca_ViT-B-32``, ``coca_ViT-L-14``, ...): an
open_clip ``VisionTransformer`` whose image embedding comes from an attentional pooler.

The model (open_clip ``transformer.py``: ``AttentionalPooler.forward``,
``VisionTransformer._pool``, the original OpenCLIP CoCa setup): the last block's tokens (class
token and patches) go through the pooler, ``ln_k`` on the keys, ``ln_q`` on the learnt queries
(256), ``nn.MultiheadAttention`` (keys of the tower's width, queries of the embedding's); then
``ln_post`` on the pooled tokens; the first pooled token, ``@ proj``, is the contrastive image
embedding.

How LeGrad explains it, as the official code does (WalBouss/LeGrad ``legrad/wrapper.py``,
``LeWrapper.compute_legrad_coca``): for each explained block, its tokens go through the pooler;
the score of the first pooled token's embedding against the target is differentiated w.r.t. the
POOLER's attention; the map is the mean over heads of ReLU(gradient) in the first query's row,
at the patch keys (the class-token key dropped). The score is the official one: the raw dot product
of the target with the first pooled token ``@ proj``, WITHOUT ``ln_post`` (``compute_legrad_coca``
skips it) and without normalising the embedding (a cosine's gradient would add a projection
term and weigh layers by their embeddings' norms). The model's own embedding
(:meth:`model_embedding`, used by the other explainers and the conformance test) keeps ``ln_post``
as open_clip's forward applies it. One official defect is not followed: its mean over dim 0 of
the ``[B*heads, 256, N]`` weights averages heads and the images of a batch together; here each
image gets its own map (so a batch equals its images one at a time).

Refused: the unfinished ``attentional_pool='parallel'/'cascade'`` variants (two poolers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import randomised_example, refuse, register_adapter
from .open_clip import OpenCLIPViT


def _is_coca_tower(model) -> bool:
    from open_clip.transformer import VisionTransformer

    visual = getattr(model, "visual", model)
    return isinstance(visual, VisionTransformer) and getattr(visual, "attn_pool", None) is not None


@register_adapter("open_clip_coca", matches=_is_coca_tower, priority=20)
class OpenCLIPCoCa(OpenCLIPViT):
    """Forward-pass pieces of an open_clip CoCa ``VisionTransformer`` (attentional pooler)."""

    supported = "open_clip CoCa towers (coca_ViT-B-32, coca_ViT-L-14, ...; explained at their attentional pooler)"
    pools_with_attention = True
    score_token_choices = ("all",)
    pool_key_offset = 0  # the pooler attends over every token, the class token included

    def __init__(self, model):
        visual = getattr(model, "visual", model)
        if getattr(visual, "attn_pool_contrastive", None) is not None:
            refuse("this open_clip tower has two attentional poolers (attentional_pool='parallel'/'cascade')")
        if visual.pool_type not in ("tok", "avg"):
            refuse(f"this CoCa tower has pool_type={visual.pool_type!r} (no single image embedding)")
        super().__init__(model)
        self.attention_pool = visual.attn_pool
        self.embed_dim = visual.proj.shape[1] if visual.proj is not None else visual.attn_pool.query.shape[1]

    def pool_qkv(self, keys: torch.Tensor):
        """q (the learnt queries), k, v of the pooler's attention, ``[B, heads, *, head_dim]``."""
        p = self.attention_pool
        mha = p.attn
        B, N, _ = keys.shape
        E, h = mha.embed_dim, mha.num_heads
        if mha._qkv_same_embed_dim:
            wq, wk, wv = mha.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        bq, bk, bv = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
        x = p.ln_k(keys)
        q = F.linear(p.ln_q(p.query), wq, bq)  # [queries, E]
        q = q.unsqueeze(0).expand(B, -1, -1).reshape(B, -1, h, E // h).transpose(1, 2)
        k = F.linear(x, wk, bk).reshape(B, N, h, E // h).transpose(1, 2)
        v = F.linear(x, wv, bv).reshape(B, N, h, E // h).transpose(1, 2)
        return q, k, v

    def _pooled_tokens(self, o: torch.Tensor) -> torch.Tensor:
        B, H, Lq, d = o.shape
        return self.attention_pool.attn.out_proj(o.transpose(1, 2).reshape(B, Lq, H * d))

    def finish_pool(self, o: torch.Tensor) -> torch.Tensor:
        """The image embedding from the pooler's per-head attention output ``o``: ``ln_post``,
        the first (or mean) pooled token, ``proj``."""
        return self._project(self._pool(self.visual.ln_post(self._pooled_tokens(o))))

    def pool_score(self, o: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The official CoCa score: ``target . (pooled[:, 0] @ proj)``, no ``ln_post``, no
        normalisation of the embedding; ``[B, K]`` in fp32 (``targets`` ``[B, K, D]``)."""
        embedding = self._project(self._pool(self._pooled_tokens(o)))
        with torch.autocast(embedding.device.type, enabled=False):
            return torch.einsum("bd,bkd->bk", embedding.float(), targets.float())

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].mean(dim=1) if self.visual.pool_type == "avg" else tokens[:, 0]

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (unnormalised) from the last block's tokens."""
        return self.finish_pool(self.attend(*self.pool_qkv(tokens)))

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model_embedding(tokens)

    def legrad_layer(self, block, x, o, score_tokens="all"):
        raise NotImplementedError("CoCa towers are explained at their attentional pooler")

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        from .base import UnsupportedModelError

        raise UnsupportedModelError("a CoCa tower has no per-token embedding (its attentional pooler mixes tokens)")

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)[0]  # (pooled, tokens): the contrastive embedding, unnormalised

    @classmethod
    def example_model(cls):
        import open_clip

        build = lambda: open_clip.CoCa(  # noqa: E731
            embed_dim=32,
            vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16, attentional_pool=True,
                            attn_pooler_heads=4, attn_pooler_queries=5, output_tokens=True),
            text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1, embed_cls=True,
                          output_tokens=True),
            multimodal_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1, attn_pooler_heads=2))
        return randomised_example(build), (3, 32, 32)
