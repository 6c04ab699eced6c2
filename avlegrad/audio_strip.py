"""The audio side of a heatmap video: a scrolling spectrogram strip under each frame.

``python -m avlegrad.localize VIDEO -o OUT --audio-encoder CKPT --audio-map`` writes, under every
frame (whose picture carries the image-side LeGrad map of its sound), the log-mel spectrogram of
the sound around the frame's time with the *audio-side* LeGrad map of the explained window blended
over it (:class:`~avlegrad.explain.audio.AudioLeGrad` of the audio encoder against that frame's
image embedding: when, and at which frequencies, the sound holds what the picture shows).

The strip's geometry, on one grid of spectrogram columns per video (column ``j`` centred on sample
``j * hop`` of the track at the audio encoder's rate, sample 0 at the track's start):

- the strip shows ``C = round(strip_seconds * sample_rate / hop)`` columns, ``[p - C // 2, p - C // 2 + C)``,
  where ``p = floor((t - track_start) * sample_rate / hop + 1/2)`` is the playhead's column (the
  column nearest to the frame's time ``t``; halves go right). The playhead is drawn in the middle
  and the spectrogram scrolls under it, one column per ``hop`` samples (10 ms at 16 kHz / hop 160);
- the explained window (the audio encoder's input for the frame, ``[t - w/2, t + w/2]``) starts at
  the column nearest to its first sample; its map's frame ``k`` (``AudioMaps.maps[..., k]``, centred
  on the window's sample ``k * hop``) lies on column ``start + k`` and is drawn there (so off by at
  most half a column, 5 ms); its bounds are marked. Outside the window the spectrogram is shown
  alone (grey). Between explained frames (``--stride``) a frame shows the nearer explained window;
- low mel bands at the bottom; the grey level is the log-mel relative to the loudest column seen so
  far in the video (``DYNAMIC_RANGE_DB`` below it is black), so the strip does not flicker as it scrolls.

Memory is bounded: the spectrogram is computed in blocks of columns from a streamed
:class:`~avlegrad.data.audio_track.AudioWindows`, and only the columns the current strip shows (plus one
block) are held. Each column equals the one of the whole track's log-mel (zeros beyond its ends) to
float rounding: a block is computed with enough context on both sides that no frame of it reaches
the block's reflect padding.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .data.audio_track import AudioWindows
from .visualize import overlay

DYNAMIC_RANGE_DB = 80.0  # grey levels span this many dB of power below the loudest column seen
BLOCK = 100  # spectrogram columns computed at a time (1 s at 16 kHz / hop 160)


@dataclass
class WindowMap:
    """The audio-side LeGrad map of one explained audio window: ``map`` ``[F, Tw]`` float32 in [0, 1]
    (:attr:`AudioMaps.maps` of the window: mel bands x the window's frames) and ``start``, the strip
    column of the window's frame 0."""

    map: np.ndarray
    start: int


@dataclass
class StripView:
    """What the strip shows at one time, before drawing: ``spec`` ``[F, C]`` log-mel of columns
    ``first .. first + C - 1``; ``relevance`` ``[F, C]`` float32, the explained window's map on its
    columns and NaN elsewhere; ``playhead`` the column under the playhead; ``window`` the explained
    window's columns ``[a, b)`` (may reach beyond the strip), or None."""

    first: int
    spec: np.ndarray
    relevance: np.ndarray
    playhead: int
    window: tuple[int, int] | None

    @property
    def columns(self) -> np.ndarray:
        return np.arange(self.first, self.first + self.spec.shape[1])


def display_frontend(encoder, hop: int, sample_rate: int, n_mels: int):
    """The log-mel the strip shows, on the CPU: a copy of the encoder's own ``LogMel`` front end when it
    has one (what the model sees), else a ``LogMel`` on the explainer's grid (ImageBind: 25 ms frames,
    ``hop`` 160, ``n_mels`` 128, as its Kaldi fbank; the window zero-padded to a 1024-point FFT)."""
    from .audio.frontend import LogMel

    own = getattr(encoder, "frontend", None)
    if isinstance(own, LogMel) and own.hop_length == hop and own.sample_rate == sample_rate:
        return copy.deepcopy(own).cpu().eval()
    win = int(round(0.025 * sample_rate))
    # the 25 ms window zero-padded to a longer FFT: finer bins, so no low mel band is left empty
    n_fft = max(1024, 1 << (win - 1).bit_length())
    return LogMel(sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=n_mels).eval()


class SpectrogramColumns:
    """The log-mel columns of a track, streamed: ``get(a, b)`` -> ``[F, b - a]`` float32, columns
    ``a .. b-1`` (column ``j`` centred on sample ``j * hop`` at ``frontend.sample_rate``; zeros
    beyond the track). Requests should move forward (an earlier one restarts the decoding); only
    the columns from the last request's ``a`` on are held, plus at most one block."""

    def __init__(self, track, frontend, block: int = BLOCK):
        self.frontend, self.block = frontend, int(block)
        self.hop, self.sample_rate = frontend.hop_length, frontend.sample_rate
        # columns of context each side: no frame of a kept column reaches the block's reflect padding
        self.context = -(-(frontend.n_fft // 2) // self.hop) + 1
        self.length = (self.block + 2 * self.context) * self.hop  # samples per block
        self.audio = AudioWindows(track, self.sample_rate, self.length / self.sample_rate)
        self.start = track.start
        self.first, self.data = 0, np.zeros((frontend.n_mels, 0), np.float32)  # held: [first, first + n)

    def _block(self, j0: int) -> np.ndarray:
        """Columns ``[j0, j0 + block)`` from samples ``[(j0 - context) * hop, (j0 + block + context) * hop)``."""
        lo = (j0 - self.context) * self.hop
        t = self.start + (lo + self.length // 2) / self.sample_rate  # AudioWindows' window starting at lo
        wave = self.audio.batch([t])
        with torch.no_grad():
            spec = self.frontend(wave)[0, 0].numpy()
        return spec[:, self.context:self.context + self.block]

    def get(self, a: int, b: int) -> np.ndarray:
        if a < self.first or a > self.first + self.data.shape[1]:
            self.first, self.data = a, self.data[:, :0]  # a jump: start afresh from a
        self.data, self.first = self.data[:, a - self.first:], a
        parts = [self.data]
        end = a + self.data.shape[1]
        while end < b:
            parts.append(self._block(end))
            end += self.block
        self.data = np.concatenate(parts, axis=1) if len(parts) > 1 else self.data
        return self.data[:, :b - a]


class SpectrogramStrip:
    """Draws the strip for each frame of one video (see the module's docstring for the geometry).

    ``track``: the video's :class:`~avlegrad.data.audio_track.AudioTrack`; ``frontend``: the log-mel shown
    (:func:`display_frontend`); ``seconds``: the span shown; ``alpha``/``colormap``: the relevance
    blend, as the frame's overlay. ``attach(image, t, window)`` returns the frame with its strip below.
    """

    def __init__(self, track, frontend, seconds: float, alpha: float = 0.5, colormap: str = "jet"):
        self.columns = SpectrogramColumns(track, frontend)
        self.hop, self.sample_rate, self.start = frontend.hop_length, frontend.sample_rate, track.start
        self.count = max(2, int(round(seconds * self.sample_rate / self.hop)))
        self.alpha, self.colormap = float(alpha), colormap
        self.top = -math.inf  # the loudest log-mel value seen so far
        self._range = DYNAMIC_RANGE_DB * math.log(10) / 10  # dB of power -> natural-log units

    def playhead(self, t: float) -> int:
        """The column nearest to time ``t`` (container clock)."""
        return math.floor((t - self.start) * self.sample_rate / self.hop + 0.5)

    def time(self, column: int) -> float:
        """When column ``column`` is centred (container clock, s)."""
        return self.start + column * self.hop / self.sample_rate

    def view(self, t: float, window: WindowMap | None = None) -> StripView:
        p = self.playhead(t)
        first = p - self.count // 2
        spec = self.columns.get(first, first + self.count)
        rel = np.full(spec.shape, np.nan, np.float32)
        span = None
        if window is not None:
            a, b = window.start, window.start + window.map.shape[1]
            lo, hi = max(a, first), min(b, first + self.count)
            if lo < hi:
                rel[:, lo - first:hi - first] = window.map[:, lo - a:hi - a]
            span = (a, b)
        return StripView(first, spec, rel, p, span)

    @staticmethod
    def height(width: int, frame_height: int) -> int:
        """The strip's height in pixels under a ``width`` x ``frame_height`` frame: a quarter of the width,
        at least 64, made so that frame + strip has an even height (H.264 in yuv420p)."""
        h = max(64, int(round(width / 4)))
        return h + (frame_height + h) % 2

    def x(self, view: StripView, column: float, width: int) -> int:
        """The pixel column where strip column ``column`` (fractional: its left edge + offset) is drawn."""
        return int(math.floor((column - view.first) * width / self.count))

    def render(self, view: StripView, width: int, height: int) -> np.ndarray:
        """``[height, width, 3]`` uint8 RGB: grey log-mel, relevance blended on the window's columns,
        the window's bounds and the playhead in white."""
        import cv2

        self.top = max(self.top, float(view.spec.max()))
        level = np.clip((view.spec - (self.top - self._range)) / self._range, 0, 1)
        grey = np.repeat(np.uint8(level * 255)[..., None], 3, axis=2)
        mask = ~np.isnan(view.relevance)
        image = grey
        if mask.any():
            blended = overlay(grey, np.nan_to_num(view.relevance), self.alpha, self.colormap)
            image = np.where(mask[..., None], blended, grey)
        image = cv2.resize(np.ascontiguousarray(image[::-1]), (width, height), interpolation=cv2.INTER_AREA)
        white = (255, 255, 255)
        if view.window is not None:
            a, b = view.window
            xa, xb = self.x(view, a, width), self.x(view, b, width) - 1
            if xa < width and xb >= 0:
                cv2.rectangle(image, (max(xa, 0), 0), (min(xb, width - 1), height - 1), white, 1)
        xp = self.x(view, view.playhead + 0.5, width)
        image[:, xp] = white
        return image

    def attach(self, image: np.ndarray, t: float, window: WindowMap | None = None) -> np.ndarray:
        """The frame ``[H, W, 3]`` with its strip below: ``[H + height(W, H), W, 3]``."""
        h, w = image.shape[:2]
        strip = self.render(self.view(t, window), w, self.height(w, h))
        return np.concatenate([image, strip], axis=0)


def audio_side_explainer(encoder, layer_index: int = -2, name=None):
    """The :class:`~avlegrad.explain.audio.AudioLeGrad` of ``encoder`` for ``--audio-map``, or a
    one-line ValueError naming the encoder and those that have an audio-side adapter."""
    from .explain.audio import AudioLeGrad
    from .explain.vit import UnsupportedModelError

    try:
        return AudioLeGrad(encoder, layer_index=layer_index)
    except UnsupportedModelError:
        backbone = getattr(encoder, "backbone", None)
        what = type(encoder).__name__ + (f" with a {type(backbone).__name__} backbone" if backbone is not None else "")
        raise ValueError(f"`audio_map`: the audio encoder {str(name) + ' ' if name else ''}({what}) has no "
                         f"audio-side LeGrad; it needs an audio ViT: ImageBind's audio tower (imagebind) or a "
                         f"timm encoder with a ViT backbone (e.g. checkpoints/world/audio_vit.pt)") from None
