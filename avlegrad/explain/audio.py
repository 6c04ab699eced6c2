"""LeGrad on the sound: which frequencies, and when, hold what a target embedding shows.

Audio encoders that embed into a CLIP space are ViTs over log-mel patches (ImageBind's audio
tower: 16 x 16 patches at stride 10 on 128 mel x 204 frames, 3 clips of 2 s per waveform; our
trainable :class:`~avlegrad.audio.timm_encoder.TimmAudioEncoder` with a timm ViT backbone). LeGrad
applies to them as to an image ViT (``shared/docs/legrad.md``; Bousselham et al., ICCV 2025,
official ``legrad_torch`` 1.1): for each explained block ``l``, the encoder's embedding built from
that block's output tokens (the encoder's own final norm, pooling, head and post-processing;
for several clips per waveform, their combination as the encoder combines them) is scored
against the target, ``s_l = cos(t, f_l)``; the block's map is the mean over heads and queries of
``ReLU(d s_l / d A_l)`` at the patch keys; maps are summed over the explained blocks.

What differs from images: patches may overlap (stride < kernel). Each patch's relevance is spread
over its receptive field on the (padded) input and every (mel, frame) bin takes the mean of the
patches that cover it (accumulated, then divided by the coverage; bins no patch covers get 0).
A waveform cut into several clips gets each clip's map placed at the clip's own seconds on the
waveform's frame grid (frame ``k`` at ``k * hop / sample_rate`` s), averaged where clips overlap.

The encoder is only read: nothing is hooked or patched, no parameter, ``requires_grad`` or mode
changes; dropout, drop-path and patch dropout are never applied. Gradients are taken with
respect to the attention maps only (one backward per target column); each explained block gets a
detached copy of the previous block's output, so one backward serves every layer (exact).

An encoder is explained through an *adapter* (:func:`audio_adapter_for`): its front-end and clip
layout, its patch layout, its blocks' attention and its head. Two are built in:
:class:`TimmAudioViT` and :class:`ImageBindAudioViT`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adapters import image_embedding
from .base import min_max_normalize
from .vit import UnsupportedModelError


@dataclass(frozen=True)
class PatchLayout:
    """How a token grid lies on an input of ``size`` (mel bands, frames): patches of ``kernel`` at
    ``stride`` (no padding), on the input zero-padded to ``padded`` (right and bottom) first."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    grid: tuple[int, int]
    size: tuple[int, int]
    padded: tuple[int, int]


def grid_to_input(grid_maps: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """``[..., gh, gw]`` patch relevances -> ``[..., F, T]`` at the input's resolution: each bin the
    mean relevance of the patches whose receptive field covers it (0 where none does)."""
    lead = grid_maps.shape[:-2]
    x = grid_maps.reshape(-1, 1, *layout.grid).float()
    ones = torch.ones(1, 1, *layout.kernel, dtype=x.dtype, device=x.device)
    summed = F.conv_transpose2d(x, ones, stride=layout.stride)  # [n, 1, (gh-1)*sh+kh, (gw-1)*sw+kw]
    coverage = F.conv_transpose2d(torch.ones_like(x[:1]), ones, stride=layout.stride)
    out = torch.where(coverage > 0, summed / coverage.clamp(min=1), torch.zeros_like(summed))
    fh, ft = layout.size
    out = F.pad(out, (0, max(ft - out.shape[-1], 0), 0, max(fh - out.shape[-2], 0)))[..., :fh, :ft]
    return out.reshape(*lead, fh, ft)


def place_clips(clip_maps: torch.Tensor, bounds, frames, hop: int, frame_offset: int, num_frames: int) -> torch.Tensor:
    """Clips' maps ``[B, S, K, F, Tc]`` -> the waveform's ``[B, K, F, num_frames]``: frame ``f`` of clip
    ``c`` (starting at sample ``bounds[c][0]``) is centred on sample ``start + frame_offset + f * hop``
    and lands on the waveform frame nearest to it (frame ``k`` at sample ``k * hop``); only its
    first ``frames[c]`` frames are real (the rest is padding); overlapping clips are averaged,
    frames no clip reaches are 0."""
    b, s, k, fh, _ = clip_maps.shape
    acc = clip_maps.new_zeros(b, k, fh, num_frames)
    count = clip_maps.new_zeros(num_frames)
    for c, ((start, _), n) in enumerate(zip(bounds, frames)):
        idx = torch.div(start + frame_offset + hop * torch.arange(n, device=clip_maps.device) + hop // 2,
                        hop, rounding_mode="floor")
        keep = idx < num_frames
        acc.index_add_(3, idx[keep], clip_maps[:, c, :, :, :n][..., keep])
        count.index_add_(0, idx[keep], torch.ones(int(keep.sum()), device=clip_maps.device, dtype=clip_maps.dtype))
    return torch.where(count > 0, acc / count.clamp(min=1), torch.zeros_like(acc))


@dataclass
class AudioMaps:
    """What :meth:`AudioLeGrad.explain_waveforms` returns (float32, detached, on the CPU):

    - ``maps`` ``[B, F, Tw]`` (``[B, K, F, Tw]`` for ``K`` targets per waveform): mel bands x the
      waveform's frames, min-max normalised per map;
    - ``curve`` ``[B, Tw]`` (``[B, K, Tw]``): the per-frame relevance, the map's mean over mel bands;
    - ``times`` ``[Tw]``: each frame's time in seconds (frame ``k`` at ``k * hop / sample_rate``);
    - ``clips`` ``[B, S, F, T]`` (``[B, S, K, F, T]``): each clip's own map before placement, not
      normalised (the sum over layers), and ``clip_bounds``: each clip's sample range.
    """

    maps: torch.Tensor
    curve: torch.Tensor
    times: torch.Tensor
    clips: torch.Tensor
    clip_bounds: list


# ------------------------------------------------------------------------------------------------
# adapters
# ------------------------------------------------------------------------------------------------
class AudioViTAdapter:
    """What LeGrad needs of an audio ViT. ``prefix``: tokens before the patches (class token);
    keys after ``prefix + gh * gw`` (ImageBind's learned bias key) are not patches."""

    prefix: int = 1
    model_adapter: object  # the encoder's registered model adapter (avlegrad.explain.adapters.audio)
    blocks: list
    sample_rate: int
    hop: int  # samples between spectrogram frames
    n_mels: int  # mel bands of the spectrograms
    frame_offset: int = 0  # sample of a clip's frame 0 centre, relative to the clip's start
    # frames per patch column where patches tile one clip's time axis from frame 0 without overlap
    # (every map at the input's resolution is then constant over such blocks); None otherwise
    patch_frames: int | None = None

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def clips(self, waveforms: torch.Tensor):
        """``[B, T]`` -> (spectrograms ``[B, S, 1, F, Tc]``, ``[(start, end), ...]`` sample ranges of the
        ``S`` clips, number of real (unpadded) frames of each clip)."""
        raise NotImplementedError

    def embed(self, specs: torch.Tensor) -> tuple[torch.Tensor, PatchLayout]:
        """Spectrograms ``[N, 1, F, T]`` -> (tokens entering block 0 ``[N, L, D]``, the patch layout)."""
        raise NotImplementedError

    # the blocks, head and post-processing are the registered model adapter's
    # (``model_adapter``, avlegrad.explain.adapters.audio): the same pieces LeGrad(encoder) uses
    def qkv(self, block, x: torch.Tensor):
        """Tokens entering ``block`` -> q, k, v ``[N, heads, L(+extra keys), head_dim]``."""
        return self.model_adapter.qkv(block, x)

    def finish_block(self, block, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The block's output tokens from its input ``x`` and per-head attention output ``o``."""
        return self.model_adapter.finish_block(block, x, o)

    def clip_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """A block's output tokens ``[N, L, D]`` -> the clip's embedding ``[N, E]`` (the encoder's head
        and post-processing)."""
        return self.model_adapter.layer_embedding(tokens)

    def combine(self, clip_embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, S, E]`` -> the waveform's embedding ``[B, E]`` (as the encoder combines its clips)."""
        return clip_embeddings.mean(dim=1)

    def block_forward(self, block, x):
        q, k, v = self.qkv(block, x)
        return self.finish_block(block, x, attention_probs(q, k) @ v)


def attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)


class TimmAudioViT(AudioViTAdapter):
    """Our :class:`~avlegrad.audio.timm_encoder.TimmAudioEncoder` with a timm ``VisionTransformer``
    backbone: ``LogMel`` (one clip: the whole waveform, centred frames) -> the registered model
    adapter :class:`avlegrad.explain.adapters.audio.TimmAudioViT` (padding as timm's
    ``dynamic_img_pad``, the blocks, the head without dropout; the same pieces ``LeGrad(encoder)``
    uses on spectrograms)."""

    def __init__(self, encoder):
        from timm.models.vision_transformer import VisionTransformer

        from .adapters.audio import TimmAudioViT as Registered

        if not isinstance(getattr(encoder, "backbone", None), VisionTransformer):
            raise UnsupportedModelError(f"TimmAudioViT explains a TimmAudioEncoder with a timm VisionTransformer "
                                        f"backbone; got {type(getattr(encoder, 'backbone', encoder)).__name__}")
        self.encoder = encoder
        self.model_adapter = vit = Registered(encoder)
        self.blocks = vit.blocks
        self.prefix = vit.num_prefix_tokens
        self.sample_rate, self.hop = encoder.frontend.sample_rate, encoder.frontend.hop_length
        self.n_mels = encoder.frontend.n_mels
        self.frame_offset = 0  # torchaudio's centred STFT: frame f is centred on sample f * hop
        lay = vit.layout
        self.patch_frames = int(lay.patch_size[1]) if lay.step[1] == lay.patch_size[1] else None

    def clips(self, waveforms):
        specs = self.encoder.frontend(waveforms)  # [B, 1, F, T]
        n = waveforms.shape[1]
        return specs[:, None], [(0, n)], [specs.shape[-1]]

    def embed(self, specs):
        fh, ft = specs.shape[-2:]
        vit = self.model_adapter
        lay = vit.layout
        weight = self.encoder.backbone.patch_embed.proj.weight
        tokens = vit.embed(specs.to(dtype=weight.dtype))
        return tokens, PatchLayout(tuple(lay.patch_size), tuple(lay.step), vit.grid(fh, ft), (fh, ft),
                                   lay.padded(fh, ft))


class ImageBindAudioViT(AudioViTAdapter):
    """ImageBind's audio tower (:class:`~avlegrad.audio.imagebind.ImageBindAudioEncoder`): 3 clips of
    2 s (Kaldi fbank frames, centred 200 samples after each frame's start), 16 x 16 patches at
    stride 10, pre-norm blocks with ``nn.MultiheadAttention`` (``add_bias_kv``: one learned key and
    value appended; not a patch), head = LayerNorm, class token, linear, then L2 norm x 20; the
    waveform's embedding is the mean of its clips'."""

    def __init__(self, encoder):
        from .adapters.audio import ImageBindAudioTower

        self.encoder = encoder
        self.model_adapter = ImageBindAudioTower(encoder)
        self.blocks = self.model_adapter.blocks
        self.prefix = 1
        self.sample_rate, self.hop, self.frame_offset = encoder.sample_rate, 160, 200
        self.n_mels = encoder.num_mel_bins

    def clips(self, waveforms):
        from ..audio.imagebind import imagebind_clip_bounds

        specs = self.encoder.preprocess(waveforms)  # [B, S, 1, 128, 204]
        bounds = imagebind_clip_bounds(waveforms.shape[1], self.sample_rate)
        frames = [max(0, 1 + (end - start - 400) // self.hop) for start, end in bounds]  # Kaldi, snip_edges
        return specs, bounds, [min(f, specs.shape[-1]) for f in frames]

    def embed(self, specs):
        fh, ft = specs.shape[-2:]
        t = self.model_adapter
        return t.embed(specs), PatchLayout(t.patch_size, t.stride, t.native_grid, (fh, ft), (fh, ft))


def audio_adapter_for(encoder) -> AudioViTAdapter:
    """The adapter of an audio encoder; refuses anything that is not an audio ViT it knows."""
    from ..audio.imagebind import ImageBindAudioEncoder
    from ..audio.timm_encoder import TimmAudioEncoder

    if isinstance(encoder, ImageBindAudioEncoder):
        return ImageBindAudioViT(encoder)
    if isinstance(encoder, TimmAudioEncoder):
        return TimmAudioViT(encoder)
    raise UnsupportedModelError(f"cannot explain a {type(encoder).__name__} on the audio side: LeGrad on sound "
                                f"supports ImageBind's audio tower and TimmAudioEncoder with a timm ViT backbone")


# ------------------------------------------------------------------------------------------------
# the explainer
# ------------------------------------------------------------------------------------------------
class AudioLeGrad:
    """LeGrad maps of an audio encoder's embedding w.r.t. target embeddings in its space.

    ``layer_index`` as for images: ``-n`` the last ``n`` blocks (default ``-2``), ``0`` all, ``k``
    blocks ``k..L-1``. Targets: ``[B, D]`` or ``[B, K, D]`` (an image embedding, a text embedding,
    another sound), need not be normalised.

    - ``explainer(spectrograms, targets)``: the encoder's own front-end output, ``[B, 1, F, T]``
      (one clip each) -> maps ``[B, F, T]`` (``[B, K, F, T]``) in [0, 1]; or ``[B, S, 1, F, T]``
      (the ``S`` clips of each waveform, combined as the encoder combines them) -> ``[B, S, F, T]``
      (``[B, S, K, F, T]``), min-max normalised over each waveform's clips together.
    - :meth:`explain_waveforms`: waveforms ``[B, T]`` -> :class:`AudioMaps` on the waveform's time
      axis, with the per-frame relevance curve.
    - :meth:`curve`: a map ``[..., F, T]`` -> its per-frame relevance ``[..., T]`` (mean over mel bands).
    """

    def __init__(self, encoder, layer_index: int = -2):
        self.encoder = encoder
        self.adapter = audio_adapter_for(encoder)
        L = self.adapter.num_layers
        if isinstance(layer_index, bool) or not isinstance(layer_index, int) or not -L <= layer_index < L:
            raise ValueError(f"layer_index must be an int in [-{L}, {L - 1}] for this {L}-block audio ViT; "
                             f"got {layer_index!r}")
        self.layer_index = layer_index
        self.layer_ids = list(range(layer_index % L, L))

    @staticmethod
    def curve(maps: torch.Tensor) -> torch.Tensor:
        return maps.mean(dim=-2)

    def _targets(self, targets, batch: int):
        t = torch.as_tensor(targets).detach()
        if not t.is_floating_point() or t.ndim not in (2, 3) or t.shape[0] != batch:
            raise ValueError(f"targets must be float embeddings [B, D] or [B, K, D] for B = {batch} inputs, "
                             f"got {tuple(t.shape)} {t.dtype}")
        single = t.ndim == 2
        t = t[:, None] if single else t
        if not torch.isfinite(t).all():
            raise ValueError("targets hold NaN or infinite values")
        width = getattr(self.encoder, "embed_dim", t.shape[-1])
        if t.shape[-1] != width:
            raise ValueError(f"targets have width {t.shape[-1]}; {type(self.encoder).__name__} embeds into {width} "
                             f"dimensions")
        return F.normalize(t.float(), dim=-1), single

    def raw_maps(self, specs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed per-layer maps, not normalised: ``specs [B, S, 1, F, T]``, unit ``targets [B, K, E]``
        -> ``[B, S, K, F, T]`` float32."""
        ad = self.adapter
        b, s = specs.shape[:2]
        k_targets = targets.shape[1]
        with torch.inference_mode(False), torch.enable_grad():
            specs, targets = specs.flatten(0, 1).clone(), targets.clone()  # not inference tensors
            with torch.no_grad():
                x, layout = ad.embed(specs)
                for block in ad.blocks[:self.layer_ids[0]]:
                    x = ad.block_forward(block, x)
            attentions, total = [], 0.0
            patches = slice(ad.prefix, ad.prefix + layout.grid[0] * layout.grid[1])
            for i in self.layer_ids:
                block = ad.blocks[i]
                x_in = x.detach()
                q, k, v = ad.qkv(block, x_in)
                probs = attention_probs(q, k).detach().requires_grad_(True)
                out = ad.finish_block(block, x_in, probs @ v)
                emb = ad.combine(ad.clip_embedding(out).float().reshape(b, s, -1))  # [B, E]
                total = total + torch.einsum("be,bke->bk", F.normalize(emb, dim=-1), targets.to(emb.device))
                attentions.append(probs)
                x = out.detach()
            grids = []
            for col in range(k_targets):
                grads = torch.autograd.grad(total[:, col].sum(), attentions, retain_graph=col + 1 < k_targets)
                # ReLU, mean over heads and queries, patch keys only; summed over layers
                grid = sum(g.float().clamp(min=0).mean(dim=(1, 2))[:, patches] for g in grads)
                grids.append(grid.reshape(b * s, *layout.grid))
        grid = torch.stack(grids, dim=1).detach()  # [N, K, gh, gw]
        with torch.autocast(grid.device.type, enabled=False):  # float32 maps under autocast too
            return grid_to_input(grid, layout).reshape(b, s, k_targets, *layout.size)

    def __call__(self, spectrograms: torch.Tensor, targets) -> torch.Tensor:
        specs = spectrograms
        if not torch.is_tensor(specs) or specs.ndim not in (4, 5) or specs.shape[-3] != 1 or not specs.is_floating_point():
            raise ValueError(f"spectrograms must be the encoder's front-end output [B, 1, F, T] or [B, S, 1, F, T] "
                             f"(float), got {tuple(specs.shape) if torch.is_tensor(specs) else type(specs).__name__}")
        per_clip = specs.ndim == 4
        specs = specs[:, None] if per_clip else specs
        t, single = self._targets(targets, specs.shape[0])
        if specs.shape[0] == 0:
            shape = (0, *(() if per_clip else (specs.shape[1],)), *(() if single else (t.shape[1],)), *specs.shape[-2:])
            return torch.zeros(shape)
        raw = self.raw_maps(specs, t.to(specs.device))  # [B, S, K, F, T]
        maps = min_max_normalize(raw.transpose(1, 2).flatten(2, 3)).reshape(raw.transpose(1, 2).shape).transpose(1, 2)
        maps = maps.cpu()
        if single:
            maps = maps[:, :, 0]
        return maps[:, 0] if per_clip else maps

    def explain_waveforms(self, waveforms: torch.Tensor, targets) -> AudioMaps:
        """Waveforms ``[B, T]`` (mono, at the encoder's sample rate) -> :class:`AudioMaps`."""
        if not torch.is_tensor(waveforms) or waveforms.ndim != 2 or not waveforms.is_floating_point():
            shape = tuple(waveforms.shape) if torch.is_tensor(waveforms) else type(waveforms).__name__
            raise ValueError(f"waveforms must be float mono [B, T] at {self.adapter.sample_rate} Hz, got {shape}")
        if waveforms.shape[1] < self.encoder.min_samples:
            raise ValueError(f"waveforms have {waveforms.shape[1]} samples; {type(self.encoder).__name__} needs at "
                             f"least {self.encoder.min_samples}")
        bad = (~torch.isfinite(waveforms)).any(dim=1)
        if bad.any():
            raise ValueError(f"waveforms {bad.nonzero().flatten().tolist()} hold NaN or infinite samples")
        t, single = self._targets(targets, waveforms.shape[0])
        ad = self.adapter
        if waveforms.shape[0] == 0:
            num = 1 + waveforms.shape[1] // ad.hop
            times = torch.arange(num, dtype=torch.float32) * ad.hop / ad.sample_rate
            k = () if single else (t.shape[1],)
            return AudioMaps(torch.zeros(0, *k, ad.n_mels, num), torch.zeros(0, *k, num), times, torch.zeros(0), [])
        with torch.no_grad():
            specs, bounds, frames = ad.clips(waveforms)
        raw = self.raw_maps(specs, t.to(specs.device)).cpu()  # [B, S, K, F, Tc]
        num = 1 + waveforms.shape[1] // ad.hop
        placed = place_clips(raw, bounds, frames, ad.hop, ad.frame_offset, num)
        maps = min_max_normalize(placed)
        curve = self.curve(maps)
        times = torch.arange(num, dtype=torch.float32) * ad.hop / ad.sample_rate
        if single:
            maps, curve, raw = maps[:, 0], curve[:, 0], raw[:, :, 0]
        return AudioMaps(maps, curve, times, raw, list(bounds))


def explain_both(clip_model, encoder, images: torch.Tensor, waveforms: torch.Tensor, layer_index: int = -2):
    """Both directions from one call: where in the picture the sound is (image-side LeGrad of the
    CLIP image tower w.r.t. the sound's embedding) and when and at which frequencies the sound holds
    what the picture shows (audio-side LeGrad of ``encoder`` w.r.t. the picture's embedding).

    ``images`` ``[B, 3, H, W]`` (normalised for ``clip_model``), ``waveforms`` ``[B, T]`` (mono, at the
    encoder's rate), pair ``b`` with pair ``b``. Returns ``(image maps [B, H, W], AudioMaps)``. The
    encoder must embed into ``clip_model``'s image space (as a trained pair does).
    """
    from .legrad import LeGrad

    if images.shape[0] != waveforms.shape[0]:
        raise ValueError(f"{images.shape[0]} images and {waveforms.shape[0]} waveforms: give one waveform per image")
    with torch.no_grad():
        sound = encoder(waveforms)
        picture = image_embedding(clip_model, images)
    image_maps = LeGrad(clip_model, layer_index=layer_index)(images, sound.to(images.device))
    audio_maps = AudioLeGrad(encoder, layer_index=layer_index).explain_waveforms(waveforms, picture.to(waveforms.device))
    return image_maps, audio_maps
