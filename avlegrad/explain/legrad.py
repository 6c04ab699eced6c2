"""LeGrad (Bousselham et al., ICCV 2025) for OpenCLIP ViTs, batched and exact.

For each explained block ``l``: the image embedding built from that block's tokens,
``f_l = normalize(ln_post(mean of all tokens) @ proj)``, is scored against the target,
``s_l = <t, f_l>``; the block's map is the mean over heads and queries of
``ReLU(d s_l / d A_l)`` at the patch keys. Maps are summed over the explained blocks, upsampled
by the patch size and min-max normalised (see ``shared/docs/legrad.md``).

How it is computed fast, and still exactly:
- every explained block gets a *detached* copy of the previous block's output, so one backward
  of ``sum_l s_l`` yields each ``d s_l / d (block l)`` with no cross-talk between layers;
- the attention runs as a fused kernel; with ``o = A v`` per head, ``dS/dA = (dS/do) v^T``, so
  autograd only has to reach ``o`` (out-projection, MLP and head of each block: activation
  gradients, never parameter gradients) and ``A`` is never materialised in the forward pass;
- OpenCLIP towers: the score reads the mean token, so the MLP's last layer runs on that mean
  (exact, see ``OpenCLIPViT.legrad_layer``) and all explained blocks share one stacked head;
- the sum over layers is taken on the patch grid before the (linear) bilinear upsampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Explainer, min_max_normalize
from .vit import OpenCLIPViT, TimmViT, cosines

FP16_GRAD_SCALE = 1024.0


class LeGrad(Explainer):
    """LeGrad maps of a ViT's image embedding w.r.t. target embeddings (or classes).

    Args:
        model: an open_clip CLIP model or its ``.visual`` ViT; a timm VisionTransformer
            (classifier, register tokens); an open_clip timm tower such as SigLIP. Only read.
        layer_index: which blocks to explain, as in the official code: negative ``-n``, the last
            ``n`` blocks (default ``-2``); ``0``, all blocks; positive ``k``, blocks ``k..L-1``.
        correction_target: for attention-pooled models (SigLIP) only, the official correction:
            an embedding ``[D]`` of an "empty" prompt (the official code uses the text
            "a photo of a"); grid cells where its own LeGrad map, min-max normalised, exceeds
            ``correction_threshold`` are zeroed.

    Per-layer scores: OpenCLIP ViTs, cosine of the target with ``ln_post(mean of all tokens) @
    proj``; timm classifiers, the model's final norm, pooling, ``fc_norm`` (and head: class
    logit for class targets, cosine for embedding targets); attention-pooled models, the
    gradient is taken at the pooler's attention over the tokens of each explained block.

    ``explainer(images, targets)`` returns maps in [0, 1], see :class:`Explainer`. Works under
    ``torch.autocast`` (bf16/fp16); fp32 is the reference.
    """

    families = (OpenCLIPViT, TimmViT)

    def __init__(self, model, layer_index: int = -2, correction_target: torch.Tensor | None = None,
                 correction_threshold: float = 0.8):
        super().__init__(model)
        L = self.vit.num_layers
        if isinstance(layer_index, bool) or not isinstance(layer_index, int) or not -L <= layer_index < L:
            raise ValueError(f"layer_index must be an int in [-{L}, {L - 1}] for this {L}-block ViT "
                             f"(-n: the last n blocks, 0: all, k: blocks k..{L - 1}); got {layer_index!r}")
        self.layer_index = layer_index
        self.first_layer = layer_index % L
        self.correction_target = None
        if correction_target is not None:
            if self.vit.attention_pool is None:
                raise ValueError("correction_target applies to attention-pooled models (SigLIP), as in the "
                                 "official code; this model pools without attention")
            correction_target = torch.as_tensor(correction_target).detach().float().reshape(-1)
            if correction_target.numel() != self.vit.embed_dim or not correction_target.norm() > 0:
                raise ValueError(f"correction_target must be a non-zero embedding of width {self.vit.embed_dim}")
            self.correction_target = F.normalize(correction_target, dim=0)
            self.correction_threshold = correction_threshold

    def explain_grid(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        pooled = vit.attention_pool is not None
        if self.correction_target is not None:  # one more target column: the "empty" prompt
            extra = self.correction_target.to(targets.device).expand(targets.shape[0], 1, -1)
            targets = torch.cat([targets, extra], dim=1)
        x = vit.tokens_before(images, self.first_layer)
        outputs, values, scores, features = [], [], [], []
        with torch.enable_grad():
            for block in vit.blocks[self.first_layer:]:
                with torch.no_grad():
                    if pooled:  # the block runs as is; the gradient site is the pooler's attention
                        x = vit.block_forward(block, x)
                        q, k, v = vit.pool_qkv(vit.pool_keys(x))
                    else:
                        q, k, v = vit.qkv(block, x)
                    o = vit.attend(q, k, v)
                o.requires_grad_(True)
                if pooled:
                    scores.append(cosines(vit.finish_pool(o), targets))
                else:
                    # the next block sees no graph, so d s_m / d A_l = 0 for m != l
                    x, feature = vit.legrad_layer(block, x, o)
                    features.append(feature)
                outputs.append(o)
                values.append(v)
            # sum over blocks, [B, K]; images are independent, so their scores are summed too
            total = torch.stack(scores).sum(dim=0) if pooled else vit.legrad_total_score(features, targets)
            if outputs[0].dtype == torch.float16:
                # fp16 gradients of a cosine underflow easily; maps are min-max normalised, and
                # ReLU, mean and sum are positively homogeneous, so a constant scale is exact
                total = total * FP16_GRAD_SCALE

            K = total.shape[1]
            relevance = self._pool_relevance if pooled else self._layer_relevance
            per_target = []
            for kk in range(K):
                grads = torch.autograd.grad(total[:, kk].sum(), outputs, retain_graph=kk < K - 1)
                per_target.append(sum(relevance(g, v) for g, v in zip(grads, values)))
        maps = torch.stack(per_target, dim=1)  # [B, K, patches]
        maps = maps.reshape(*maps.shape[:2], *vit.grid(images.shape[-2], images.shape[-1]))
        if self.correction_target is not None:
            maps, empty = maps[:, :-1], maps[:, -1:]
            maps = maps.masked_fill(min_max_normalize(empty) > self.correction_threshold, 0)
        return maps

    def _layer_relevance(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """mean over heads and queries of ReLU(dS/dA), at the patch keys: ``[B, patches]``."""
        heads, n = v.shape[1], v.shape[2]
        # zero keys up to a multiple of 8: rows of the [N, N] product 16-byte aligned, which cuBLAS
        # needs for its fast kernels (N = 197 is not); their columns are cut off below
        v = F.pad(v, (0, 0, 0, -n % 8))
        grad_attn = torch.matmul(grad_o, v.transpose(-1, -2)).relu_()  # [B, heads, N query, N key]
        # reduced into fp32 (on CUDA in one kernel, no fp32 copy of the [B, heads, N, N] tensor)
        relevance = grad_attn.sum(dim=(1, 2), dtype=torch.float32) / (heads * n)
        return relevance[:, self.vit.num_prefix_tokens:n]

    def _pool_relevance(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The pooler's first latent query: mean over heads of ReLU(dS/dA), ``[B, patches]``."""
        grad_attn = torch.matmul(grad_o, v.transpose(-1, -2))  # [B, heads, latents, N key]
        relevance = grad_attn.relu_().mean(dim=1, dtype=torch.float32)[:, 0]
        # the pooler's keys are the patches, plus the prefix tokens when the model includes them
        return relevance[:, self.vit.num_prefix_tokens if self.vit.trunk.pool_include_prefix else 0:]
