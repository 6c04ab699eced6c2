"""The explainers LeGrad is compared with, on the same ``(images, targets) -> maps`` interface.

Each follows its paper's definition on an OpenCLIP ViT; the gradient methods score the model's
own image embedding (its pooled token, ``ln_post``, ``proj``) by cosine with the target:

- ``similarity``: MaskCLIP-style dense similarity (Zhou et al. 2022): in the last block every
  token attends only to itself (attention output = its value), the block's residual and MLP are
  kept, and each patch token mapped by ``ln_post`` and ``proj`` is compared with the target by
  cosine.
- ``attention``: the last block's attention from the class-token query to the patches, mean
  over heads (target-independent).
- ``rollout``: attention rollout (Abnar & Zuidema 2020): ``R = prod_l (0.5 mean_h A_l + 0.5 I)``
  from the first block to the last, class-token row (target-independent).
- ``gradcam``: Grad-CAM on the tokens the last block's attention reads (``ln_1`` output, the
  layer pytorch-grad-cam uses for ViTs): channel weights = gradients averaged over patches, map
  = ReLU(weighted sum of channels).
- ``chefercam``: Chefer et al. 2021 (generic attention-model explainability):
  ``R <- R + mean_h((dS/dA_l * A_l)^+) R`` from ``R = I``, class-token row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Explainer


def _cosine_scores(embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` embeddings, unit ``[B, K, D]`` targets -> ``[B, K]`` cosines."""
    return torch.einsum("bd,bkd->bk", F.normalize(embedding.float(), dim=-1), targets)


def _grid(maps: torch.Tensor, vit, images) -> torch.Tensor:
    """``[B, K, N - prefix]`` -> ``[B, K, gh, gw]``."""
    return maps.reshape(*maps.shape[:2], *vit.grid(images.shape[-2], images.shape[-1]))


class DenseSimilarity(Explainer):
    """MaskCLIP-style map: cosine between the target and each patch token in the embedding space."""

    @torch.no_grad()
    def explain_grid(self, images, targets):
        vit = self.vit
        x = vit.tokens_before(images, vit.num_layers - 1)
        last = vit.blocks[-1]
        _, _, v = vit.qkv(last, x)
        tokens = vit.finish_block(last, x, v)  # each token's attention output is its own value
        patches = F.normalize(vit.token_embeddings(tokens).float(), dim=-1)
        return _grid(torch.einsum("bnd,bkd->bkn", patches, targets), vit, images)


class RawAttention(Explainer):
    """The last block's class-token attention over the patches, averaged over heads."""

    @torch.no_grad()
    def explain_grid(self, images, targets):
        vit = self.vit
        x = vit.tokens_before(images, vit.num_layers - 1)
        q, k, _ = vit.qkv(vit.blocks[-1], x)
        cls_row = vit.attention_probs(q, k)[:, :, 0, vit.num_prefix_tokens:].float().mean(dim=1)
        return _grid(cls_row[:, None].expand(-1, targets.shape[1], -1), vit, images)


class AttentionRollout(Explainer):
    """Attention rollout: the product of head-averaged attention plus identity over all blocks."""

    @torch.no_grad()
    def explain_grid(self, images, targets):
        vit = self.vit
        x = vit.embed(images)
        rollout = None
        for block in vit.blocks:
            q, k, v = vit.qkv(block, x)
            attn = vit.attention_probs(q, k)
            x = vit.finish_block(block, x, torch.matmul(attn, v))
            eye = torch.eye(attn.shape[-1], device=attn.device)
            mixed = 0.5 * attn.float().mean(dim=1) + 0.5 * eye  # residual connection as identity
            rollout = mixed if rollout is None else torch.matmul(mixed, rollout)
        cls_row = rollout[:, 0, vit.num_prefix_tokens:]
        return _grid(cls_row[:, None].expand(-1, targets.shape[1], -1), vit, images)


class GradCAM(Explainer):
    """Grad-CAM on the normalised tokens entering the last block's attention."""

    def explain_grid(self, images, targets):
        vit = self.vit
        prefix = vit.num_prefix_tokens
        x = vit.tokens_before(images, vit.num_layers - 1)
        last = vit.blocks[-1]
        with torch.enable_grad():
            with torch.no_grad():
                normed = last.ln_1(x)
            normed.requires_grad_(True)
            tokens = vit.finish_block(last, x, vit.attend(*vit.qkv_from_normed(last, normed)))
            scores = _cosine_scores(vit.model_embedding(tokens), targets)
            K = targets.shape[1]
            maps = []
            for kk in range(K):
                grad, = torch.autograd.grad(scores[:, kk].sum(), normed, retain_graph=kk < K - 1)
                weights = grad[:, prefix:].float().mean(dim=1, keepdim=True)  # [B, 1, C]
                maps.append((normed[:, prefix:].detach().float() * weights).sum(dim=-1).relu())
        return _grid(torch.stack(maps, dim=1), vit, images)


class CheferCAM(Explainer):
    """Gradient-weighted attention relevance propagation (Chefer et al. 2021)."""

    def explain_grid(self, images, targets):
        vit = self.vit
        with torch.enable_grad():
            # a leaf that requires grad: the graph to every A_l exists even for a frozen model
            x = vit.embed(images).detach().requires_grad_(True)
            attentions = []
            for block in vit.blocks:
                q, k, v = vit.qkv(block, x)
                attn = vit.attention_probs(q, k)
                attentions.append(attn)
                x = vit.finish_block(block, x, torch.matmul(attn, v))
            scores = _cosine_scores(vit.model_embedding(x), targets)
            K = targets.shape[1]
            maps = []
            for kk in range(K):
                grads = torch.autograd.grad(scores[:, kk].sum(), attentions, retain_graph=kk < K - 1)
                relevance = None
                for attn, grad in zip(attentions, grads):
                    weighted = (grad * attn).detach().float().clamp(min=0).mean(dim=1)  # [B, N, N]
                    if relevance is None:
                        relevance = torch.eye(weighted.shape[-1], device=weighted.device).expand_as(weighted)
                    relevance = relevance + torch.matmul(weighted, relevance)
                maps.append(relevance[:, 0, vit.num_prefix_tokens:])
        return _grid(torch.stack(maps, dim=1), vit, images)
