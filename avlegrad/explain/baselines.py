"""The explainers LeGrad is compared with, on the same ``(images, targets) -> maps`` interface.

Each follows its paper's definition on any registered model family where it is defined (the
family details come from the model's adapter); the gradient methods score the model's own
image embedding (OpenCLIP: its pooled token, ``ln_post``, ``proj``; timm: its head up to the
classifier) by the fp32 cosine with the target, or its class logit for class targets:

- ``similarity``: MaskCLIP-style dense similarity (Zhou et al. 2022): in the last block every
  token attends only to itself (attention output = its value), the block's residual and MLP are
  kept, and each patch token mapped by ``ln_post`` and ``proj`` is compared with the target by
  cosine.
- ``attention``: the last block's attention from the class-token query to the patches, mean
  over heads (target-independent).
- ``rollout``: attention rollout (Abnar & Zuidema 2020): ``R = prod_l (0.5 mean_h A_l + 0.5 I)``
  from the first block to the last, class-token row (target-independent).
- ``gradcam``: Grad-CAM on the tokens the last block's attention reads (its pre-attention
  norm's output, ``ln_1``/``norm1``: the layer pytorch-grad-cam uses for ViTs): channel
  weights = gradients averaged over patches, map = ReLU(weighted sum of channels).
- ``chefercam``: Chefer et al. 2021 (generic attention-model explainability):
  ``R <- R + mean_h((dS/dA_l * A_l)^+) R`` from ``R = I``, class-token row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Explainer, per_target_gradients, register_explainer


def _needs_class_token(adapter) -> str | None:
    if not adapter.has_class_token:
        return "it reads the class token's attention row, and this model has no class token"
    if adapter.attention_pool is not None:
        return "the model pools with attention, not from its class token"
    return None


def _grid(maps: torch.Tensor, vit, images) -> torch.Tensor:
    """``[B, K, N - prefix]`` -> ``[B, K, gh, gw]``."""
    return maps.reshape(*maps.shape[:2], *vit.grid(images.shape[-2], images.shape[-1]))


@register_explainer("similarity")
class DenseSimilarity(Explainer):
    """MaskCLIP-style map: cosine between the target and each patch token in the embedding space."""

    @classmethod
    def undefined_for(cls, adapter):
        if adapter.attention_pool is not None:
            return "an attention-pooled model has no per-token embedding"
        return None

    @torch.no_grad()
    def explain_grid(self, images, targets):
        vit = self.vit
        x = vit.tokens_before(images, vit.num_layers - 1)
        last = vit.blocks[-1]
        _, _, v = vit.qkv(last, x, vit.grid(images.shape[-2], images.shape[-1]))
        tokens = vit.finish_block(last, x, v)  # each token's attention output is its own value
        if not targets.is_floating_point():
            raise ValueError("dense similarity compares embeddings: give targets as embeddings [B, D] or [B, K, D]")
        patches = F.normalize(vit.token_embeddings(tokens).float(), dim=-1)
        return _grid(torch.einsum("bnd,bkd->bkn", patches, targets), vit, images)


@register_explainer("attention")
class RawAttention(Explainer):
    """The last block's class-token attention over the patches, averaged over heads."""

    undefined_for = classmethod(lambda cls, adapter: _needs_class_token(adapter))

    @torch.no_grad()
    def explain_grid(self, images, targets):
        vit = self.vit
        x = vit.tokens_before(images, vit.num_layers - 1)
        q, k, _ = vit.qkv(vit.blocks[-1], x, vit.grid(images.shape[-2], images.shape[-1]))
        cls_row = vit.attention_probs(q, k)[:, :, 0, vit.num_prefix_tokens:].float().mean(dim=1)
        return _grid(cls_row[:, None].expand(-1, targets.shape[1], -1), vit, images)


@register_explainer("rollout")
class AttentionRollout(Explainer):
    """Attention rollout: the product of head-averaged attention plus identity over all blocks."""

    undefined_for = classmethod(lambda cls, adapter: _needs_class_token(adapter))

    @torch.no_grad()
    def explain_grid(self, images, targets):
        vit = self.vit
        x = vit.embed(images)
        grid = vit.grid(images.shape[-2], images.shape[-1])
        rollout = None
        for block in vit.blocks:
            q, k, v = vit.qkv(block, x, grid)
            attn = vit.attention_probs(q, k)
            x = vit.finish_block(block, x, torch.matmul(attn, v))
            eye = torch.eye(attn.shape[-1], device=attn.device)
            mixed = 0.5 * attn.float().mean(dim=1) + 0.5 * eye  # residual connection as identity
            rollout = mixed if rollout is None else torch.matmul(mixed, rollout)
        cls_row = rollout[:, 0, vit.num_prefix_tokens:]
        return _grid(cls_row[:, None].expand(-1, targets.shape[1], -1), vit, images)


@register_explainer("gradcam")
class GradCAM(Explainer):
    """Grad-CAM on the normalised tokens entering the last block's attention."""

    def explain_grid(self, images, targets):
        vit = self.vit
        prefix = vit.num_prefix_tokens
        x = vit.tokens_before(images, vit.num_layers - 1)
        last = vit.blocks[-1]
        grid = vit.grid(images.shape[-2], images.shape[-1])
        with torch.enable_grad():
            with torch.no_grad():
                normed = vit.pre_attention_norm(last)(x)
            normed.requires_grad_(True)
            tokens = vit.finish_block(last, x, vit.attend(*vit.qkv_from_normed(last, normed, grid)))
            scores = vit.model_scores(tokens, targets)

            def reduce(grad):
                weights = grad[:, prefix:].float().mean(dim=1, keepdim=True)  # [B, 1, C]
                return (normed[:, prefix:].detach().float() * weights).sum(dim=-1).relu()

            maps = per_target_gradients(scores, normed, reduce)
        return _grid(maps, vit, images)


@register_explainer("chefercam")
class CheferCAM(Explainer):
    """Gradient-weighted attention relevance propagation (Chefer et al. 2021)."""

    undefined_for = classmethod(lambda cls, adapter: _needs_class_token(adapter))

    def explain_grid(self, images, targets):
        vit = self.vit
        with torch.enable_grad():
            # a leaf that requires grad: the graph to every A_l exists even for a frozen model
            x = vit.embed(images).detach().requires_grad_(True)
            grid = vit.grid(images.shape[-2], images.shape[-1])
            attentions = []
            for block in vit.blocks:
                q, k, v = vit.qkv(block, x, grid)
                attn = vit.attention_probs(q, k)
                attentions.append(attn)
                x = vit.finish_block(block, x, torch.matmul(attn, v))
            scores = vit.model_scores(x, targets)

            def reduce(grads):
                relevance = None
                for attn, grad in zip(attentions, grads):
                    weighted = (grad * attn).detach().float().clamp(min=0).mean(dim=1)  # [B, N, N]
                    if relevance is None:
                        relevance = torch.eye(weighted.shape[-1], device=weighted.device).expand_as(weighted)
                    relevance = relevance + torch.matmul(weighted, relevance)
                return relevance[:, 0, vit.num_prefix_tokens:]

            maps = per_target_gradients(scores, attentions, reduce)
        return _grid(maps, vit, images)
