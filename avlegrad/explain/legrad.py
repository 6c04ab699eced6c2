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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adapters.base import SCORE_TOKENS, cosines
from .base import Explainer, min_max_normalize, per_target_gradients, register_explainer

FP16_GRAD_SCALE = 1024.0
HEAD_AGGREGATIONS = ("mean", "max")
LAYER_AGGREGATIONS = ("sum", "product")


@dataclass
class LayerMaps:
    """What :meth:`LeGrad.explain_layers` returns, all float32 and detached (``[B, ...]`` for
    one target per image, ``[B, K, ...]`` for ``K``).

    - ``maps`` ``[B, K, H, W]``: the final maps in [0, 1], exactly what calling the explainer gives;
    - ``layers`` ``[B, K, L, H, W]``: each explained layer's map, upsampled by the patch size, NOT
      normalised; with ``layer_aggregation="sum"`` their sum is the final map before min-max;
    - ``heads`` ``[B, K, L, heads, gh, gw]``: each head's map on the patch grid (before any head
      aggregation; ReLU as configured); their mean over heads is the layer's grid map when
      ``head_aggregation="mean"``, their max when ``"max"``;
    - ``share`` ``[B, K, L]``: each layer's share of the summed map, ``layers.sum((H, W)) / total``
      (non-negative with ReLU, summing to 1; zero where the summed map is zero);
    - ``layer_ids``: the block index of each of the ``L`` layers.
    """

    maps: torch.Tensor
    layers: torch.Tensor
    heads: torch.Tensor
    share: torch.Tensor
    layer_ids: list


@register_explainer("legrad")
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

    Ablation switches (the defaults are the official definition; each variant is tested against
    the slow reference extended by the same switch, ``tests/reference.py``):
        layers: an explicit subset of blocks to explain (ints, negative from the end), instead
            of ``layer_index``'s contiguous range.
        score_tokens: what each layer's score reads, OpenCLIP towers only: ``"all"`` (official:
            mean of all tokens), ``"cls"`` (the class token), ``"patches"`` (mean of the patches).
        relu: ReLU on the attention gradient (official ``True``).
        head_aggregation: ``"mean"`` (official) or ``"max"`` over heads of the per-head maps
            (each the mean over queries of the (ReLU'd) gradient).
        layer_aggregation: ``"sum"`` (official) of the per-layer maps, or ``"product"``:
            rollout-style, ``R <- (I + E_l) R`` from the first explained block to the last with
            ``E_l`` the head-aggregated ``[N, N]`` (ReLU'd) gradient, map = mean over query rows of
            ``R`` at the patch keys (for one layer it equals the sum's map after min-max).

    ``explainer(images, targets)`` returns maps in [0, 1], see :class:`Explainer`;
    :meth:`explain_layers` also returns the per-layer and per-head maps of the same backward.
    Works under ``torch.autocast`` (bf16/fp16); fp32 is the reference.
    """

    def __init__(self, model, layer_index: int = -2, correction_target: torch.Tensor | None = None,
                 correction_threshold: float = 0.8, *, layers=None, score_tokens: str = "all",
                 relu: bool = True, head_aggregation: str = "mean", layer_aggregation: str = "sum"):
        super().__init__(model)
        L = self.vit.num_layers
        if isinstance(layer_index, bool) or not isinstance(layer_index, int) or not -L <= layer_index < L:
            raise ValueError(f"layer_index must be an int in [-{L}, {L - 1}] for this {L}-block ViT "
                             f"(-n: the last n blocks, 0: all, k: blocks k..{L - 1}); got {layer_index!r}")
        self.layer_index = layer_index
        self.first_layer = layer_index % L
        self.layer_ids = list(range(self.first_layer, L))
        if layers is not None:
            layers = [layers] if isinstance(layers, int) else list(layers)
            bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int) or not -L <= i < L]
            if bad or not layers:
                raise ValueError(f"layers must be a non-empty list of block indices in [-{L}, {L - 1}] for this "
                                 f"{L}-block ViT; got {layers!r}")
            self.layer_ids = sorted({i % L for i in layers})
            self.first_layer = self.layer_ids[0]
        for name, value, allowed in (("score_tokens", score_tokens, SCORE_TOKENS),
                                     ("head_aggregation", head_aggregation, HEAD_AGGREGATIONS),
                                     ("layer_aggregation", layer_aggregation, LAYER_AGGREGATIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if score_tokens not in self.vit.score_token_choices:
            raise ValueError("score_tokens applies to OpenCLIP towers; timm models are scored with their own "
                             "pooling and head")
        if layer_aggregation == "product" and self.vit.attention_pool is not None:
            raise ValueError("layer_aggregation='product' needs each block's [N, N] attention; an attention-"
                             "pooled model is explained at its pooler")
        self.score_tokens, self.relu = score_tokens, bool(relu)
        self.head_aggregation, self.layer_aggregation = head_aggregation, layer_aggregation
        # the official definition takes the fast path below, untouched
        self.official = (score_tokens == "all" and self.relu and head_aggregation == "mean"
                         and layer_aggregation == "sum")
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
        mode = "default" if self.official else ("product" if self.layer_aggregation == "product" else "heads")
        maps = self._explain(images, targets, mode)
        if mode == "heads":  # [B, K, L, heads, patches] -> aggregate heads, then sum over layers
            maps = self._aggregate_heads(maps).sum(dim=2)
        return self._to_grid(maps, images)

    def explain_layers(self, images: torch.Tensor, targets: torch.Tensor) -> LayerMaps:
        """The final maps with each explained layer's and head's map, from the same single
        backward (per target column) as the final map; see :class:`LayerMaps`. Same inputs and
        errors as calling the explainer. With ``layer_aggregation="product"`` the final map is not
        a function of the layer maps, and takes a second pass."""
        one_target = self._check(images, targets)
        with torch.inference_mode(False):
            targets = self._prepare_targets(images, targets, one_target)
            heads = self._explain(images, targets, "heads").float()  # [B, K, L, heads, patches]
            B, K, L, nh, _ = heads.shape
            gh, gw = self.vit.grid(images.shape[-2], images.shape[-1])
            heads = heads.reshape(B, K, L, nh, gh, gw)
            layer_grid = self._aggregate_heads(heads)  # [B, K, L, gh, gw]
            if self.correction_target is not None:  # the same cells as in the final map are zeroed
                mask = min_max_normalize(layer_grid[:, -1].sum(dim=1)) > self.correction_threshold
                heads = heads[:, :-1].masked_fill(mask[:, None, None, None], 0)
                layer_grid = layer_grid[:, :-1].masked_fill(mask[:, None, None], 0)
                K -= 1
            layers = self._upsample(layer_grid.reshape(B, K * L, gh, gw), images.shape[-2:])
            layers = layers.reshape(B, K, L, *images.shape[-2:])
            if self.layer_aggregation == "sum":
                total = layer_grid.sum(dim=2)
            else:
                total = self._to_grid(self._explain(images, targets, "product").float(), images)
            maps = min_max_normalize(self._upsample(total, images.shape[-2:]))
            sums = layers.sum(dim=(-2, -1))
            whole = sums.sum(dim=-1, keepdim=True)
            share = torch.where(whole != 0, sums / torch.where(whole != 0, whole, 1), 0.0)
        out = LayerMaps(maps.detach(), layers.detach(), heads.detach(), share.detach(), list(self.layer_ids))
        if one_target:
            out.maps, out.layers, out.heads, out.share = (t[:, 0] for t in (out.maps, out.layers, out.heads,
                                                                              out.share))
        return out

    def _prepare_targets(self, images, targets, one_target: bool) -> torch.Tensor:
        """As the base call: unit fp32 embeddings or long class indices, ``[B, K, ...]``."""
        if targets.is_floating_point():
            targets = F.normalize(targets.to(images.device, torch.float32), dim=-1)
        else:
            targets = targets.to(images.device, torch.long).clone()
        return targets.unsqueeze(1) if one_target else targets

    def _upsample(self, grid: torch.Tensor, size) -> torch.Tensor:
        """``[B, C, gh, gw]`` -> ``[B, C, H, W]`` on the input, as the base call."""
        return self.vit.layout.to_input(grid, size)

    def _aggregate_heads(self, heads: torch.Tensor) -> torch.Tensor:
        """``[..., heads, ...]`` with heads at dim 3 -> head-aggregated (mean or max)."""
        return heads.mean(dim=3) if self.head_aggregation == "mean" else heads.amax(dim=3)

    def _to_grid(self, maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``[B, K(+1), patches]`` -> ``[B, K, gh, gw]``, with SigLIP's correction applied."""
        maps = maps.reshape(*maps.shape[:2], *self.vit.grid(images.shape[-2], images.shape[-1]))
        if self.correction_target is not None:
            maps, empty = maps[:, :-1], maps[:, -1:]
            maps = maps.masked_fill(min_max_normalize(empty) > self.correction_threshold, 0)
        return maps

    def _explain(self, images: torch.Tensor, targets: torch.Tensor, mode: str) -> torch.Tensor:
        """One forward and one backward per target column. ``mode``: ``"default"`` (official
        definition, summed over heads and layers: ``[B, K, patches]``), ``"heads"`` (``[B, K, L,
        heads, patches]``), ``"product"`` (rollout-style aggregation: ``[B, K, patches]``).
        With the SigLIP correction, K includes the empty prompt's column (last)."""
        vit = self.vit
        pooled = vit.attention_pool is not None
        if self.correction_target is not None:  # one more target column: the "empty" prompt
            extra = self.correction_target.to(targets.device).expand(targets.shape[0], 1, -1)
            targets = torch.cat([targets, extra], dim=1)
        x = vit.tokens_before(images, self.first_layer)
        explained = set(self.layer_ids)
        grid = vit.grid(images.shape[-2], images.shape[-1])  # for families whose attention needs it (RoPE)
        outputs, values, scores, features = [], [], [], []
        with torch.enable_grad():
            for index in range(self.first_layer, vit.num_layers):
                block = vit.blocks[index]
                if index not in explained:  # a block between the chosen ones: forward only
                    with torch.no_grad():
                        x = vit.block_forward(block, x, grid)
                    continue
                with torch.no_grad():
                    if pooled:  # the block runs as is; the gradient site is the pooler's attention
                        x = vit.block_forward(block, x, grid)
                        q, k, v = vit.pool_qkv(vit.pool_keys(x))
                    else:
                        q, k, v = vit.qkv(block, x, grid)
                    o = vit.attend(q, k, v)
                o.requires_grad_(True)
                if pooled:
                    scores.append(vit.pool_score(o, targets))
                else:
                    # the next block sees no graph, so d s_m / d A_l = 0 for m != l
                    if self.score_tokens == "all":
                        x, feature = vit.legrad_layer(block, x, o)
                    else:
                        x, feature = vit.legrad_layer(block, x, o, score_tokens=self.score_tokens)
                    features.append(feature)
                outputs.append(o)
                values.append(v)
            # sum over blocks, [B, K]; images are independent, so their scores are summed too
            total = torch.stack(scores).sum(dim=0) if pooled else vit.legrad_total_score(features, targets)
            if outputs[0].dtype == torch.float16:
                # fp16 gradients of a cosine underflow easily; maps are min-max normalised, and
                # ReLU, mean and sum are positively homogeneous, so a constant scale is exact
                total = total * FP16_GRAD_SCALE

            if mode == "default":
                relevance = self._pool_relevance if pooled else self._layer_relevance
                reduce = lambda grads: sum(relevance(g, v) for g, v in zip(grads, values))  # noqa: E731
            elif mode == "heads":
                relevance = self._pool_head_relevance if pooled else self._head_relevance
                reduce = lambda grads: torch.stack(  # noqa: E731
                    [relevance(g, v) for g, v in zip(grads, values)], dim=1)
            else:
                reduce = lambda grads: self._product_relevance(grads, values)  # noqa: E731
            return per_target_gradients(total, outputs, reduce)

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

    def _grad_attention(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """dS/dA ``[B, heads, N query, N key]``, ReLU'd unless the ablation turns it off."""
        grad_attn = torch.matmul(grad_o, v.transpose(-1, -2))
        return grad_attn.relu_() if self.relu else grad_attn

    def _head_relevance(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per head: mean over queries of (ReLU) dS/dA at the patch keys, ``[B, heads, patches]``."""
        n = v.shape[2]
        relevance = self._grad_attention(grad_o, v).sum(dim=2, dtype=torch.float32) / n
        return relevance[..., self.vit.num_prefix_tokens:]

    def _product_relevance(self, grads, values) -> torch.Tensor:
        """Rollout-style aggregation over the explained layers: ``R <- (I + E_l) R`` with
        ``E_l`` the head-aggregated ``[N, N]`` gradient; the mean over queries of ``R`` at the patch
        keys, ``[B, patches]``."""
        rollout = None
        for grad_o, v in zip(grads, values):
            grad_attn = self._grad_attention(grad_o, v).float()
            e = grad_attn.mean(dim=1) if self.head_aggregation == "mean" else grad_attn.amax(dim=1)
            rollout = torch.eye(e.shape[-1], device=e.device) + e if rollout is None else rollout + e @ rollout
        return rollout.mean(dim=1)[:, self.vit.num_prefix_tokens:]

    def _pool_relevance(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The pooler's first latent query: mean over heads of ReLU(dS/dA), ``[B, patches]``."""
        grad_attn = torch.matmul(grad_o, v.transpose(-1, -2))  # [B, heads, latents, N key]
        relevance = grad_attn.relu_().mean(dim=1, dtype=torch.float32)[:, 0]
        # the pooler's keys are the tokens from pool_key_offset on: drop the prefix tokens among them
        return relevance[:, self.vit.num_prefix_tokens - self.vit.pool_key_offset:]

    def _pool_head_relevance(self, grad_o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The pooler's first latent query, per head: ``[B, heads, patches]``."""
        relevance = self._grad_attention(grad_o, v)[:, :, 0].float()
        return relevance[..., self.vit.num_prefix_tokens - self.vit.pool_key_offset:]
