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
- the sum over layers is taken on the patch grid before the (linear) bilinear upsampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Explainer

FP16_GRAD_SCALE = 1024.0


class LeGrad(Explainer):
    """LeGrad maps of an OpenCLIP ViT's image embedding w.r.t. target embeddings.

    Args:
        model: an open_clip CLIP model, or its ``.visual`` ViT. It is only read.
        layer_index: which blocks to explain, as in the official code: negative ``-n``, the last
            ``n`` blocks (default ``-2``); ``0``, all blocks; positive ``k``, blocks ``k..L-1``.

    ``explainer(images, targets)`` returns maps in [0, 1], see :class:`Explainer`. Works under
    ``torch.autocast`` (bf16/fp16); fp32 is the reference.
    """

    def __init__(self, model, layer_index: int = -2):
        super().__init__(model)
        L = self.vit.num_layers
        if isinstance(layer_index, bool) or not isinstance(layer_index, int) or not -L <= layer_index < L:
            raise ValueError(f"layer_index must be an int in [-{L}, {L - 1}] for this {L}-block ViT "
                             f"(-n: the last n blocks, 0: all, k: blocks k..{L - 1}); got {layer_index!r}")
        self.layer_index = layer_index
        self.first_layer = layer_index % L

    def explain_grid(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        blocks = vit.blocks[self.first_layer:]
        x = vit.tokens_before(images, self.first_layer)

        outputs, values, scores = [], [], []
        with torch.enable_grad():
            for block in blocks:
                with torch.no_grad():
                    q, k, v = vit.qkv(block, x)
                    o = vit.attend(q, k, v)
                o.requires_grad_(True)
                tokens = vit.finish_block(block, x, o)
                embedding = F.normalize(vit.token_mean_embedding(tokens).float(), dim=-1)
                scores.append(torch.einsum("bd,bkd->bk", embedding, targets))
                outputs.append(o)
                values.append(v)
                x = tokens.detach()  # the next block sees no graph: d s_m / d A_l = 0 for m != l
            total = torch.stack(scores).sum(dim=0)  # [B, K]; images are independent, so sum them too
            if outputs[0].dtype == torch.float16:
                # fp16 gradients of a cosine underflow easily; maps are min-max normalised, and
                # ReLU, mean and sum are positively homogeneous, so a constant scale is exact
                total = total * FP16_GRAD_SCALE

            K = targets.shape[1]
            per_target = []
            for kk in range(K):
                grads = torch.autograd.grad(total[:, kk].sum(), outputs, retain_graph=kk < K - 1)
                per_target.append(sum(self._layer_relevance(g, v) for g, v in zip(grads, values)))
        maps = torch.stack(per_target, dim=1)  # [B, K, N - prefix]
        gh, gw = vit.grid(images.shape[-2], images.shape[-1])
        return maps.reshape(maps.shape[0], K, gh, gw)

    def _layer_relevance(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """mean over heads and queries of ReLU(dS/dA), at the patch keys: ``[B, N - prefix]``."""
        grad_attn = torch.matmul(grad_o, v.transpose(-1, -2))  # [B, heads, N query, N key]
        relevance = grad_attn.relu_().mean(dim=(1, 2), dtype=torch.float32)
        return relevance[:, self.vit.num_prefix_tokens:]
