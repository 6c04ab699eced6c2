"""The model-adapter contract: a read-only, functional view of one Vision Transformer family.

Explainers need the pieces of a ViT's forward pass (tokens, each block's attention inputs and
output, the head) rather than its final output. An adapter recomputes the forward from the
model's own modules and parameters. It never writes to the model: no hooks, no patched
forwards, no changed position embedding or ``requires_grad``; other input sizes are handled by
resampling the position embedding into a new tensor for that call.

Dropout, patch dropout and stochastic depth are not applied, whatever the model's train/eval
mode: an explanation is a deterministic function of the weights and the input.

A family is one module with one subclass of :class:`ModelAdapter` decorated with
:func:`register_adapter` (see ``docs/extending.md``); :func:`adapter_for` picks the
highest-priority adapter whose ``matches(model)`` is true, and the "supported" message of
:class:`UnsupportedModelError` is generated from the registered adapters' ``supported`` text.

Shapes: ``B`` images, ``N = prefix + gh*gw`` tokens, ``C`` the transformer width, ``D`` the
embedding width targets live in, ``heads`` and ``d`` the attention heads and their width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class UnsupportedModelError(TypeError):
    """A model no registered adapter (or not the explainer's) can explain; the message lists
    what is supported."""


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    cls: type
    matches: object  # callable(model) -> bool
    priority: int


_ADAPTERS: dict[str, AdapterEntry] = {}


def register_adapter(name: str, *, matches, priority: int = 0):
    """Class decorator: register a :class:`ModelAdapter` subclass for the models where
    ``matches(model)`` is true (``model`` as the user passed it: a CLIP model, its ``.visual``,
    a classifier). Higher ``priority`` is tried first (ties: registration order). ``cls(model)``
    builds the adapter and may raise :class:`UnsupportedModelError` (call :func:`refuse`) for a
    matched model whose details it cannot replay exactly."""
    def decorate(cls):
        if name in _ADAPTERS and _ADAPTERS[name].cls is not cls:
            raise ValueError(f"an adapter named {name!r} is already registered ({_ADAPTERS[name].cls.__name__})")
        cls.adapter_name = name
        _ADAPTERS[name] = AdapterEntry(name, cls, matches, priority)
        return cls
    return decorate


def registered_adapters() -> list[AdapterEntry]:
    """The registered adapters, in the order :func:`adapter_for` tries them."""
    entries = list(_ADAPTERS.values())
    return sorted(entries, key=lambda e: -e.priority)


def supported_models() -> str:
    """What the registered adapters support, each adapter's ``supported`` text (for messages)."""
    return "; ".join(e.cls.supported for e in registered_adapters())


def supported_models_markdown() -> str:
    """README's supported-models list: one line per adapter shipped in the package (adapters
    registered from outside it are left out), ``- `name`: supported``, in :func:`adapter_for`'s
    order. ``python scripts/update_supported_models.py`` writes it into README.md."""
    return "\n".join(f"- `{e.name}`: {e.cls.supported}" for e in registered_adapters()
                     if e.cls.__module__.startswith("avlegrad."))


def refuse(what: str):
    """Raise :class:`UnsupportedModelError` naming ``what`` and listing what is supported."""
    raise UnsupportedModelError(f"{what}. Supported: {supported_models()}.")


def adapter_for(model: nn.Module) -> "ModelAdapter":
    """The adapter of a model's family; refuses anything else with the list of what is supported."""
    for entry in registered_adapters():
        if entry.matches(model):
            return entry.cls(model)
    visual = getattr(model, "visual", model)
    trunk = getattr(visual, "trunk", None)
    inner = f" with a {type(trunk).__name__} trunk" if isinstance(trunk, nn.Module) else ""
    refuse(f"cannot explain a {type(visual).__module__}.{type(visual).__name__}{inner}")


def image_embedding(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The images' embeddings ``[B, D]`` float32 by any supported tower: open_clip's
    ``encode_image`` where the model has one, else its adapter's :meth:`ModelAdapter.model_forward`
    (the family's own forward: ``get_image_features`` of a ``transformers`` CLIP/SigLIP, PE-AV's
    one-frame ``video_embeds``, ...). Raises :class:`UnsupportedModelError` for other models."""
    encode = getattr(model, "encode_image", None)
    return (encode(images) if callable(encode) else adapter_for(model).model_forward(images)).float()


def cosines(embedding: torch.Tensor, targets: torch.Tensor, pattern: str = "bd,bkd->bk") -> torch.Tensor:
    """Cosines of (unnormalised) embeddings with unit ``targets``, in fp32 whatever the autocast:
    ``[B, D]`` and ``[B, K, D]`` -> ``[B, K]`` (or as ``pattern`` says)."""
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


@dataclass(frozen=True)
class PatchLayout:
    """How an input is cut into patch tokens and how a patch-grid map maps back onto it.

    ``channels``: the input's channel count (3 for images, 1 for a spectrogram);
    ``patch_size`` ``(ph, pw)`` in input pixels (or spectrogram bins); ``stride`` ``(sh, sw)``:
    the step between patches, the patch size unless patches overlap (``stride < patch``) or
    leave gaps. With ``stride == patch`` the input must tile exactly (as every image ViT here);
    otherwise the grid is ``((H - ph) // sh + 1, (W - pw) // sw + 1)`` as a strided convolution's.
    """

    channels: int
    patch_size: tuple
    stride: tuple | None = None

    @property
    def step(self) -> tuple:
        return tuple(self.stride) if self.stride is not None else tuple(self.patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid ``(gh, gw)`` of an input ``H x W``; ``ValueError`` where it does not fit."""
        (ph, pw), (sh, sw) = self.patch_size, self.step
        if (sh, sw) == (ph, pw):
            if height % ph or width % pw:
                raise ValueError(f"image size {height}x{width} is not a multiple of the patch size "
                                 f"{ph}x{pw}; resize or crop the images to a multiple of it")
            return height // ph, width // pw
        if height < ph or width < pw:
            raise ValueError(f"input size {height}x{width} is smaller than one patch {ph}x{pw}")
        return (height - ph) // sh + 1, (width - pw) // sw + 1

    def to_input(self, grid_maps: torch.Tensor, size: tuple) -> torch.Tensor:
        """Grid maps ``[M, C, gh, gw]`` -> ``[M, C, H, W]`` on the input: bilinear upsampling by
        the patch size (the reference code's), or to the input size for strided/overlapping
        patches (each cell then covers its stride's share of the input)."""
        if tuple(self.step) == tuple(self.patch_size):
            return F.interpolate(grid_maps, scale_factor=tuple(self.patch_size), mode="bilinear",
                                 align_corners=False)
        return F.interpolate(grid_maps, size=tuple(size), mode="bilinear", align_corners=False)


class ModelAdapter:
    """What every family provides; the shared parts of the forward pass live here.

    Adapter data (set by ``__init__``): ``num_prefix_tokens`` (class/register tokens before the
    patches), ``patch_size``, ``native_grid``, ``blocks`` (the transformer blocks, in order),
    ``embed_dim`` (``D``), ``num_classes`` (a classifier head: targets may be class indices),
    ``attention_pool`` (an attention-pooling head that LeGrad explains instead of the blocks),
    ``pool_key_offset`` (how many leading tokens the pooler does NOT attend over), ``layout``
    (:class:`PatchLayout`, the input layout; by default ``channels`` 3 and ``patch_size``).

    Family-specific methods to implement: :meth:`embed`, :meth:`pre_attention_norm`,
    :meth:`qkv_from_normed`, :meth:`finish_block`, :meth:`layer_embedding`,
    :meth:`model_embedding`, :meth:`token_embeddings`, and (where defined) :meth:`layer_logits`,
    :meth:`pool_qkv` / :meth:`finish_pool`. :meth:`model_forward` runs the model's OWN forward
    (the conformance test compares the replay with it) and :meth:`example_model` builds a small
    random-weight model of the family for that test.
    """

    adapter_name: str = "?"
    supported: str = ""  # one line for the "Supported:" message
    num_prefix_tokens: int
    patch_size: tuple[int, int]
    native_grid: tuple[int, int]
    blocks: list
    embed_dim: int  # width of the embedding targets live in
    channels: int = 3
    num_classes: int | None = None  # a classifier head: targets may also be class indices
    attention_pool = None  # an attention-pooling head (SigLIP): LeGrad explains its attention
    pool_key_offset: int = 0
    has_class_token: bool = True  # token 0 is a class token (attention/rollout read its row)
    extra_keys: int = 0  # keys appended after the N tokens that are not tokens (ImageBind's bias key)
    score_token_choices: tuple = ("all",)  # what LeGrad's per-layer score may read (ablation)

    @property
    def layout(self) -> PatchLayout:
        return PatchLayout(self.channels, tuple(self.patch_size))

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid ``(gh, gw)`` of an ``H x W`` input (see :class:`PatchLayout`)."""
        return self.layout.grid(height, width)

    def resampled(self, pos: torch.Tensor, grid, prefix: int) -> torch.Tensor:
        """``pos`` ``[1, prefix + gh*gw, C]`` for another grid, as timm's dynamic size does."""
        if tuple(grid) == self.native_grid:
            return pos
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(self.native_grid),
                                      num_prefix_tokens=prefix, interpolation="bicubic", antialias=True)

    def qkv(self, block, x: torch.Tensor, grid=None):
        """``x`` ``[B, N, C]`` entering the block -> q, k, v as ``[B, heads, N, d]``. ``grid``
        ``(gh, gw)``: the patch grid, for families whose attention needs it (RoPE)."""
        return self.qkv_from_normed(block, self.pre_attention_norm(block)(x), grid)

    @staticmethod
    def attend(q, k, v) -> torch.Tensor:
        """Per-head attention output ``o = softmax(q k^T / sqrt(d)) v`` (fused kernel)."""
        return F.scaled_dot_product_attention(q, k, v)

    @staticmethod
    def attention_probs(q, k) -> torch.Tensor:
        """The attention matrix ``softmax(q k^T / sqrt(d))``, ``[B, heads, N query, N key]``."""
        return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)

    def block_forward(self, block, x: torch.Tensor, grid=None) -> torch.Tensor:
        """One block: tokens ``[B, N, C]`` in, ``[B, N, C]`` out."""
        return self.finish_block(block, x, self.attend(*self.qkv(block, x, grid)))

    @torch.no_grad()
    def tokens_before(self, images: torch.Tensor, layer: int) -> torch.Tensor:
        """Tokens ``[B, N, C]`` entering block ``layer`` (no autograd graph)."""
        x = self.embed(images)
        grid = self.grid(images.shape[-2], images.shape[-1])
        for block in self.blocks[:layer]:
            x = self.block_forward(block, x, grid)
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
        """LeGrad's per-layer score of a block's output tokens: ``[B, K]``, fp32.

        ``targets``: unit embeddings ``[B, K, D]`` (cosine with the layer's embedding) or class
        indices ``[B, K]`` (the class logit), where the family has a classifier.
        """
        if targets.is_floating_point():
            return cosines(self.layer_embedding(tokens), targets)
        return self.layer_logits(tokens).float().gather(1, targets)

    def model_scores(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The model's own score of its last block's tokens, ``[B, K]`` fp32: the cosine of its
        image embedding with unit targets ``[B, K, D]``, or the class logit of class indices."""
        if targets.is_floating_point():
            return cosines(self.model_embedding(tokens), targets)
        return self.model_logits(tokens).float().gather(1, targets)

    # ---- family-specific
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Inputs ``[B, channels, H, W]`` -> tokens ``[B, N, C]`` entering block 0."""
        raise NotImplementedError

    def pre_attention_norm(self, block) -> nn.Module:
        """The module a block applies to its input before q, k, v (``ln_1``, ``norm1``)."""
        raise NotImplementedError

    def qkv_from_normed(self, block, h: torch.Tensor, grid=None):
        """The normalised tokens ``[B, N, C]`` -> q, k, v ``[B, heads, N, d]`` (``grid`` for RoPE)."""
        raise NotImplementedError

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The block's input ``x`` ``[B, N, C]`` and per-head attention output ``o``
        ``[B, heads, N, d]`` -> the block's output tokens ``[B, N, C]``."""
        raise NotImplementedError

    def layer_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer embedding of a block's output tokens: ``[B, N, C]`` -> ``[B, D]``."""
        raise NotImplementedError

    def layer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, classes]`` of a block's tokens (classifiers only)."""
        raise ValueError("this model has no classifier head: give targets as embeddings [B, D] or [B, K, D]")

    def model_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding (unnormalised) ``[B, D]`` from the last block's tokens."""
        raise NotImplementedError

    def model_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own class logits ``[B, classes]`` from the last block's tokens."""
        return self.layer_logits(tokens)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every patch token mapped into the embedding space, ``[B, N, C]`` -> ``[B, gh*gw, D]``
        (dense similarity); ``UnsupportedModelError`` where the family has no such map."""
        raise UnsupportedModelError(f"a {type(self).__name__} has no per-token embedding")

    def pool_qkv(self, keys: torch.Tensor):
        """The attention pooler's q ``[B, heads, latents, d]``, k, v ``[B, heads, N', d]`` over
        ``keys`` ``[B, N', C]`` (the tokens from ``pool_key_offset`` on)."""
        raise NotImplementedError

    def finish_pool(self, o: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``[B, D]`` from the pooler's per-head attention output ``o``."""
        raise NotImplementedError

    def pool_score(self, o: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """LeGrad's per-layer score of an attention-pooled tower, ``[B, K]`` fp32, from the
        pooler's per-head output ``o`` and unit targets ``[B, K, D]``: the cosine of
        :meth:`finish_pool` with the targets (the official SigLIP rule). A family whose official
        rule differs (CoCa: a raw dot product) overrides this."""
        return cosines(self.finish_pool(o), targets)

    def pool_keys(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens the pooler attends over: ``tokens[:, pool_key_offset:]``."""
        return tokens[:, self.pool_key_offset:] if self.pool_key_offset else tokens

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        """The model's OWN forward to the embedding (or logits) the adapter replays: ``[B, D]``."""
        raise NotImplementedError

    def replayed_forward(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`model_forward` recomputed from the adapter's pieces (the conformance check)."""
        return self.model_embedding(self.tokens_before(images, self.num_layers))

    @classmethod
    def example_model(cls) -> tuple[nn.Module, tuple]:
        """A small random-weight model of this family and an input shape ``(C, H, W)`` it takes:
        what the conformance test (``tests/test_adapters.py``) runs every adapter on."""
        raise NotImplementedError(f"{cls.__name__} gives no example model")


def randomised_example(build, seed: int = 0) -> nn.Module:
    """``build()`` under a fixed seed, every parameter then perturbed (no unit norms, no zero
    biases, so a replay cannot match by accident of an initialisation), in eval mode; the global
    random state is left as it was. For :meth:`ModelAdapter.example_model`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 1 and name.endswith("weight"):
                    p.copy_(1 + 0.3 * torch.randn_like(p))
                elif p.ndim == 1:
                    p.copy_(0.2 * torch.randn_like(p))
                else:
                    if not torch.isfinite(p).all() or p.abs().max() > 1e3:  # left as torch.empty by its
                        p.normal_(0, 0.02)  # builder (CoCa's text_decoder.text_projection): garbage, maybe NaN
                    p.add_(0.05 * torch.randn_like(p))
    return model.eval()


ViTAdapter = ModelAdapter  # the name before the adapters became a package
