"""Read-only, functional views of Vision Transformers: one adapter per model family.

Explainers need the pieces of a ViT's forward pass (tokens, each block's attention inputs and
output, the head) rather than its final output. An adapter recomputes the forward from the
model's own modules and parameters. It never writes to the model: no hooks, no patched
forwards, no changed position embedding or ``requires_grad``; other input sizes are handled by
resampling the position embedding into a new tensor for that call.

Dropout, patch dropout and stochastic depth are not applied, whatever the model's train/eval
mode: an explanation is a deterministic function of the weights and the input.

Families: :class:`OpenCLIPViT` (open_clip ``VisionTransformer`` towers) and :class:`TimmViT`
(timm ``VisionTransformer``: classifiers, models with register tokens, and open_clip's
timm-based towers such as SigLIP, whose attention-pooling head LeGrad explains directly).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SUPPORTED_MODELS = (
    "OpenCLIP VisionTransformer towers (ViT-B-32 ... ViT-bigG-14, QuickGELU, LayerScale, qk-norm/"
    "NormFormer options; the CLIP model or its .visual); timm VisionTransformer models with standard "
    "Block/Attention layers (classifiers, e.g. vit_base_patch16_224, register-token models such as "
    "vit_base_patch16_reg4_gap_256, attention-pooled 'map' models); open_clip timm towers built on "
    "them (SigLIP: ViT-B-16-SigLIP, ...); timm Eva rotary-position ViTs (EVA02 eva02_*, Perception Encoder "
    "vit_pe_core_*) and the open_clip towers built on them (EVA02-B-16, PE-Core-B-16, ...); transformers "
    "CLIPModel/CLIPVisionModel/CLIPVisionModelWithProjection and SiglipModel/SiglipVisionModel. "
    "open_clip CoCa towers (coca_ViT-B-32, ..., explained at their attentional pooler). "
    "Not supported: ResNet, ConvNeXt, BEiT, relative-position "
    "ViTs, parallel-block ViTs (vit_*_xp, *_18x2), hybrid CNN-stem ViTs (vit_*_r50_*), distilled DeiT"
)


class UnsupportedModelError(TypeError):
    pass


def cosines(embedding: torch.Tensor, targets: torch.Tensor, pattern: str = "bd,bkd->bk") -> torch.Tensor:
    """Cosines of (unnormalised) embeddings with unit ``targets``, in fp32 whatever the autocast."""
    with torch.autocast(embedding.device.type, enabled=False):
        return torch.einsum(pattern, F.normalize(embedding.float(), dim=-1), targets.float())


def token_mean(tokens: torch.Tensor) -> torch.Tensor:
    """The mean over tokens (dim 1) as a sum divided by N: a sum's backward is a free broadcast
    where a mean's writes a full gradient tensor. fp16 would overflow the sum: it takes the mean."""
    if tokens.dtype == torch.float16:
        return tokens.mean(dim=1)
    return tokens.sum(dim=1) / tokens.shape[1]


SCORE_TOKENS = ("all", "cls", "patches")


def score_token(tokens: torch.Tensor, which: str = "all", prefix: int = 1) -> torch.Tensor:
    """What LeGrad's per-layer score reads from a block's tokens ``[B, N, C]`` -> ``[B, C]``: the
    mean of ALL tokens (official), the class token, or the mean of the patch tokens. Each is
    linear in the tokens, so it commutes with the MLP's last layer (see ``legrad_layer``)."""
    if which == "all":
        return token_mean(tokens)
    if which == "cls":
        return tokens[:, 0]
    return token_mean(tokens[:, prefix:])


def _refuse(what: str):
    raise UnsupportedModelError(f"{what}. Supported: {SUPPORTED_MODELS}.")


def adapter_for(model: nn.Module) -> "ViTAdapter":
    """The adapter of a model's family; refuses anything else with the list of what is supported."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

    from .eva import EvaViT, is_eva
    from .hf import hf_adapter

    hf = hf_adapter(model)
    if hf is not None:
        return hf
    visual = getattr(model, "visual", model)
    if isinstance(visual, TimmModel) and is_eva(visual.trunk):
        return EvaViT(visual.trunk, tower_head=visual.head)
    if is_eva(visual):
        return EvaViT(visual)
    if isinstance(visual, VisionTransformer):
        if getattr(visual, "attn_pool", None) is not None:
            from .coca import OpenCLIPCoCa

            return OpenCLIPCoCa(visual)
        return OpenCLIPViT(visual)
    if isinstance(visual, TimmModel) and isinstance(visual.trunk, TimmVisionTransformer):
        return TimmViT(visual.trunk, embedding_head=visual.head)
    if isinstance(visual, TimmVisionTransformer):
        return TimmViT(visual)
    inner = f" with a {type(visual.trunk).__name__} trunk" if isinstance(visual, TimmModel) else ""
    _refuse(f"cannot explain a {type(visual).__module__}.{type(visual).__name__}{inner}")


class ViTAdapter:
    """What every family provides; the shared parts of the forward pass live here."""

    num_prefix_tokens: int
    patch_size: tuple[int, int]
    native_grid: tuple[int, int]
    blocks: list
    embed_dim: int  # width of the embedding targets live in
    num_classes: int | None = None  # a classifier head: targets may also be class indices
    attention_pool = None  # an attention-pooling head (SigLIP): LeGrad explains its attention

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size "
                             f"{ph}x{pw}; resize or crop the images to a multiple of it")
        return height // ph, width // pw

    def resampled(self, pos: torch.Tensor, grid, prefix: int) -> torch.Tensor:
        """``pos`` ``[1, prefix + gh*gw, C]`` for another grid, as timm's dynamic size does."""
        if tuple(grid) == self.native_grid:
            return pos
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(self.native_grid),
                                      num_prefix_tokens=prefix, interpolation="bicubic", antialias=True)

    def qkv(self, block, x: torch.Tensor):
        """``x`` entering the block -> q, k, v as ``[B, heads, N, head_dim]``."""
        return self.qkv_from_normed(block, self.pre_attention_norm(block)(x))

    @staticmethod
    def attend(q, k, v) -> torch.Tensor:
        """Per-head attention output ``o = softmax(q k^T / sqrt(d)) v`` (fused kernel)."""
        return F.scaled_dot_product_attention(q, k, v)

    @staticmethod
    def attention_probs(q, k) -> torch.Tensor:
        """The attention matrix ``softmax(q k^T / sqrt(d))``, ``[B, heads, N query, N key]``."""
        return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)

    def block_forward(self, block, x: torch.Tensor) -> torch.Tensor:
        return self.finish_block(block, x, self.attend(*self.qkv(block, x)))

    @torch.no_grad()
    def tokens_before(self, images: torch.Tensor, layer: int) -> torch.Tensor:
        """Tokens entering block ``layer`` (no autograd graph)."""
        x = self.embed(images)
        for block in self.blocks[:layer]:
            x = self.block_forward(block, x)
        return x

    def legrad_layer(self, block, x: torch.Tensor, o: torch.Tensor):
        """One explained block from its attention output ``o``: (its output tokens, detached; what
        its LeGrad score reads, with the autograd graph back to ``o``: here the tokens)."""
        tokens = self.finish_block(block, x, o)
        return tokens.detach(), tokens

    def legrad_total_score(self, features: list, targets: torch.Tensor) -> torch.Tensor:
        """The sum over explained blocks of LeGrad's per-layer scores, ``[B, K]``, from what
        :meth:`legrad_layer` returned for each block."""
        return sum(self.legrad_scores(f, targets) for f in features)

    def legrad_scores(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer score of a block's output tokens: ``[B, K]``.

        ``targets``: unit embeddings ``[B, K, D]`` (cosine with the layer's embedding) or class
        indices ``[B, K]`` (the class logit), where the family has a classifier.
        """
        if targets.is_floating_point():
            return cosines(self.layer_embedding(tokens), targets)
        return self.layer_logits(tokens).float().gather(1, targets)

    # family-specific
    def embed(self, images): raise NotImplementedError
    def pre_attention_norm(self, block): raise NotImplementedError
    def qkv_from_normed(self, block, h): raise NotImplementedError
    def finish_block(self, block, x, o): raise NotImplementedError
    def layer_embedding(self, tokens): raise NotImplementedError
    def layer_logits(self, tokens): raise NotImplementedError


class OpenCLIPViT(ViTAdapter):
    """Forward-pass pieces of an open_clip ``VisionTransformer`` (batch-first, open_clip >= 2.24)."""

    num_prefix_tokens = 1
    pools_with_attention = False  # CoCa's attentional pooler: OpenCLIPCoCa (coca.py)

    def __init__(self, visual: nn.Module):
        from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock

        if getattr(visual, "attn_pool", None) is not None and not self.pools_with_attention:
            _refuse("this open_clip tower pools with attention (CoCa-style attn_pool)")
        if visual.pool_type not in ("tok", "avg"):
            _refuse(f"this tower has pool_type={visual.pool_type!r} (no single image embedding)")
        if not getattr(visual.transformer, "batch_first", True):
            _refuse("this tower runs its transformer token-first (open_clip < 2.24 layout)")
        for i, block in enumerate(visual.transformer.resblocks):
            if isinstance(block, ResidualAttentionBlock):
                attn = block.attn
                if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim \
                        or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
                    _refuse(f"block {i} has an unusual attention layer ({type(attn).__name__})")
            elif isinstance(block, CustomResidualAttentionBlock):
                if block.attn.logit_scale is not None:
                    _refuse(f"block {i} uses scaled cosine attention")
            else:
                _refuse(f"block {i} is a {type(block).__name__}")
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.patch_size = tuple(visual.patch_size)
        self.native_grid = tuple(visual.grid_size)
        self.width = visual.conv1.out_channels
        self.embed_dim = visual.proj.shape[1] if visual.proj is not None else self.width

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> tokens ``[B, 1 + gh*gw, width]`` entering block 0."""
        v = self.visual
        grid = self.grid(images.shape[-2], images.shape[-1])
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.resampled(v.positional_embedding.unsqueeze(0), grid, 1)[0].to(x.dtype)
        return v.ln_pre(x)

    def pre_attention_norm(self, block):
        return block.ln_1

    def qkv_from_normed(self, block, h: torch.Tensor):
        attn = block.attn
        B, N, C = h.shape
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, N, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        if hasattr(attn, "ln_q"):  # open_clip's own Attention (qk-norm option)
            q, k = attn.ln_q(q), attn.ln_k(k)
        return q, k, v

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The rest of the block after the per-head attention output ``o``: its output tokens."""
        y = self._attention_residual(block, x, o)
        return y + block.ls_2(block.mlp(block.ln_2(y)))

    def _attention_residual(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        B, H, N, d = o.shape
        if getattr(attn, "head_scale", None) is not None:
            o = o * attn.head_scale
        a = o.transpose(1, 2).reshape(B, N, H * d)
        if hasattr(attn, "ln_inner"):
            a = attn.ln_inner(a)
        a = F.linear(a, attn.out_proj.weight, attn.out_proj.bias)
        if hasattr(block, "ln_attn"):
            a = block.ln_attn(a)
        return x + block.ls_1(a)

    def legrad_layer(self, block, x: torch.Tensor, o: torch.Tensor, score_tokens: str = "all"):
        """As the base, but cheaper to differentiate, exactly: the score reads only the MEAN of the
        block's tokens, and the MLP's last layer (and LayerScale) are affine, so
        ``mean(y + ls(W h + b)) = mean(y) + ls(W mean(h) + b)``. The graph then holds that layer
        on one vector per image instead of every token: its backward costs almost nothing.
        ``score_tokens`` (an ablation, see :func:`score_token`): the class token or the patches'
        mean instead of all tokens' mean (equally linear).
        Returns (output tokens, detached; the reduced token ``[B, width]`` with its graph)."""
        mlp = block.mlp
        if not (isinstance(mlp, nn.Sequential) and isinstance(mlp[-1], nn.Linear)):
            tokens = self.finish_block(block, x, o)
            return tokens.detach(), score_token(tokens, score_tokens, self.num_prefix_tokens)
        y = self._attention_residual(block, x, o)
        hidden = mlp[:-1](block.ln_2(y))
        with torch.no_grad():
            tokens = y + block.ls_2(mlp[-1](hidden))
        if score_tokens == "all":
            pooled = token_mean(y) + block.ls_2(mlp[-1](token_mean(hidden)))
        else:
            reduce = lambda t: score_token(t, score_tokens, self.num_prefix_tokens)  # noqa: E731
            pooled = reduce(y) + block.ls_2(mlp[-1](reduce(hidden)))
        return tokens, pooled

    def legrad_total_score(self, features: list, targets: torch.Tensor) -> torch.Tensor:
        """Every explained block's mean token through ``ln_post`` and ``proj`` at once: one
        ``[L, B, width]`` stack instead of L small heads (fewer kernels, the same numbers)."""
        return cosines(self._project(self.visual.ln_post(torch.stack(features))), targets, "lbd,bkd->bk")

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer embedding, as the official code: ``ln_post(mean of ALL tokens) @ proj``."""
        return self._project(self.visual.ln_post(tokens.mean(dim=1)))

    def layer_logits(self, tokens):
        raise ValueError("an OpenCLIP tower has no classifier: give targets as embeddings [B, D] or [B, K, D]")

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (unnormalised) from the last block's tokens."""
        v = self.visual
        if v.final_ln_after_pool:
            return self._project(v.ln_post(self._pool(tokens)))
        return self._project(self._pool(v.ln_post(tokens)))

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.num_prefix_tokens:].mean(dim=1) if self.visual.pool_type == "avg" else tokens[:, 0]

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every patch token mapped into the embedding space: ``ln_post(token) @ proj``, ``[B, N - prefix, D]``."""
        return self._project(self.visual.ln_post(tokens[:, self.num_prefix_tokens:]))


class TimmViT(ViTAdapter):
    """Forward-pass pieces of a timm ``VisionTransformer`` (optionally under an open_clip head).

    LeGrad's per-layer score applies the model's own final norm, pooling, ``fc_norm`` and (for
    class targets) classifier head to each layer's tokens. A model that pools with attention
    (``global_pool='map'``, SigLIP) is explained at its pooler instead, as the official code does.
    """

    def __init__(self, trunk: nn.Module, embedding_head: nn.Module | None = None):
        from timm.layers import Attention, Mlp, PatchEmbed
        from timm.models.vision_transformer import Block

        # everything the adapter's own forward would silently get wrong is refused here, before it runs
        for i, block in enumerate(trunk.blocks):
            attn = getattr(block, "attn", None)
            if type(block) is not Block or type(attn) is not Attention:
                inner = f"with {type(attn).__name__}" if attn is not None else "(parallel branches, no single attention)"
                _refuse(f"timm block {i} is a {type(block).__name__} {inner}")
            if getattr(attn, "gate", None) is not None:
                _refuse(f"timm block {i} uses gated attention")
        if getattr(trunk, "dist_token", None) is not None:
            _refuse("this timm ViT has a distillation token (DeiT distilled: two prefix tokens, two heads)")
        if type(trunk.patch_embed) is not PatchEmbed or type(getattr(trunk.patch_embed, "proj", None)) is not nn.Conv2d:
            _refuse(f"this timm ViT embeds patches with a {type(trunk.patch_embed).__name__} (e.g. a hybrid CNN "
                    f"stem), not a single convolution")
        if getattr(trunk, "rope", None) is not None:
            _refuse("this timm ViT uses rotary position embedding")
        self.trunk = trunk
        self.embedding_head = embedding_head
        self._mlp_type = Mlp
        self.blocks = list(trunk.blocks)
        self.num_prefix_tokens = trunk.num_prefix_tokens
        self.patch_size = tuple(trunk.patch_embed.patch_size)
        self.native_grid = tuple(trunk.patch_embed.grid_size)
        pool = getattr(trunk, "attn_pool", None)
        if pool is not None:
            from timm.layers import AttentionPoolLatent

            if type(pool) is not AttentionPoolLatent or pool.pos_embed is not None:
                _refuse(f"this timm ViT pools with a {type(pool).__name__} (only AttentionPoolLatent is supported)")
            self.attention_pool = pool
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

    def qkv_from_normed(self, block, h: torch.Tensor):
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

    # ---- the attention-pooling head (SigLIP): LeGrad's gradient site for these models
    @property
    def pool_key_offset(self) -> int:
        """Where the patches start among the pooler's keys."""
        return self.num_prefix_tokens if self.trunk.pool_include_prefix else 0

    def pool_keys(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens the pooler attends over."""
        return tokens if self.trunk.pool_include_prefix else tokens[:, self.num_prefix_tokens:]

    def pool_qkv(self, keys: torch.Tensor):
        p = self.attention_pool
        B, N, C = keys.shape
        q = p.q(p.latent.expand(B, -1, -1)).reshape(B, p.latent_len, p.num_heads, p.head_dim).transpose(1, 2)
        k, v = p.kv(keys).reshape(B, N, 2, p.num_heads, p.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return p.q_norm(q), p.k_norm(k), v

    def finish_pool(self, o: torch.Tensor) -> torch.Tensor:
        """The pooled embedding from the pooler's per-head attention output ``o``."""
        p = self.attention_pool
        B, H, Lq, d = o.shape
        x = p.proj(o.transpose(1, 2).reshape(B, Lq, H * d))
        if p.mlp is not None:
            x = x + self._mlp(p.mlp, p.norm(x))
        x = x[:, 0] if p.pool == "token" else x.mean(dim=1)
        return self.embedding_head(x) if self.embedding_head is not None else x
