"""A video's audio track, streamed: :class:`AudioTrack` (decoded in chunks, never held whole) and
:class:`AudioWindows` (windows centred on given times, mono, resampled to an encoder's rate), as
``localize`` and its spectrogram strip (``avlegrad.audio_strip``) read them. Memory stays bounded
however long the track."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .media import MediaError, _to_float, resample


def _unreadable(path, error) -> MediaError:
    # FFmpeg's message repeats the path; its strerror alone says what went wrong
    return MediaError(path, f"cannot open with PyAV: the file is unreadable or truncated "
                            f"({getattr(error, 'strerror', None) or error})")


# ----------------------------------------------------------------------------- audio
class AudioTrack:
    """The first audio stream of a media file, read as a stream: never held whole.

    ``chunks()`` decodes it from the start, yielding float32 ``[C, n]`` blocks at ``sample_rate``
    (each call opens the file afresh, so the heatmap windows and the muxed output read it
    independently). The first sample plays at ``start`` s on the container's clock. ``samples``
    (``[T, C]``) gives an in-memory track instead of a file (tests). Decoding stops at the length
    the stream declares (the encoder pads its last frame), as ``media.load_audio`` does; on a
    damaged or truncated file it stops at the damage and ``error`` says where and why.
    """

    CHUNK = 1 << 14  # samples per block of an in-memory track

    def __init__(self, samples: np.ndarray | None = None, sample_rate: int = 16000, start: float = 0.0, *,
                 path=None, channels: int | None = None, length: int | None = None):
        self.path = Path(path) if path is not None else None
        self.samples = None if samples is None else np.asarray(samples, np.float32).reshape(len(samples), -1)
        self.sample_rate, self.start = int(sample_rate), float(start)
        self.channels = self.samples.shape[1] if self.samples is not None else int(channels or 1)
        self.length = len(self.samples) if self.samples is not None else length
        self.error: str | None = None

    def chunks(self):
        if self.samples is not None:
            for i in range(0, len(self.samples), self.CHUNK):
                yield np.ascontiguousarray(self.samples[i:i + self.CHUNK].T)
            return
        import av

        done = 0
        try:
            with av.open(str(self.path)) as c:
                for frame in c.decode(c.streams.audio[0]):
                    arr = frame.to_ndarray()  # planar [C, n]; interleaved formats come out as [1, n * C]
                    if arr.shape[0] != self.channels:
                        arr = arr.reshape(-1, self.channels).T
                    if self.length is not None:
                        arr = arr[:, :max(0, self.length - done)]
                    if arr.shape[1]:
                        done += arr.shape[1]
                        yield _to_float(arr)
                    if self.length is not None and done >= self.length:
                        return
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if done == 0 and self.error is None:
                raise MediaError(self.path, f"cannot decode the audio track ({getattr(e, 'strerror', None) or e})") \
                    from None
            if self.error is None:  # the damage is the same for every reader of the file
                self.error = (f"audio decoding stopped at {done / self.sample_rate:.2f} s "
                              f"({getattr(e, 'strerror', None) or e})")


def read_audio_track(path) -> AudioTrack | None:
    """The first audio stream of a media file (to be read as a stream), or None when it has none."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                return None
            s = c.streams.audio[0]
            start = float(s.start_time * s.time_base) if s.start_time is not None and s.time_base else 0.0
            sr = s.codec_context.sample_rate or s.rate
            channels = s.codec_context.channels or len(s.layout.channels) or 1
            length = int(round(s.duration * s.time_base * sr)) if s.duration and s.time_base else None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _unreadable(path, e) from None
    if not sr:
        raise MediaError(path, "the audio stream declares no sample rate")
    return AudioTrack(None, sr, start, path=path, channels=channels, length=length)


class AudioWindows:
    """Windows of ``seconds`` centred on given times, from a track resampled to ``sample_rate``, mono.

    The track is streamed: only the stretch that the current batch's windows need (plus the
    resampler's support) is held, so memory does not grow with the track's length. Each window
    equals the same stretch of the whole track mixed to mono and resampled at once
    (``media.resample``): the stretch is resampled from a multiple of the resampling period with
    a margin wider than the sinc filter's support, and the track's real ends stay its ends.
    Frames come in display order, so the times only grow; an earlier time restarts the decoding.
    """

    def __init__(self, track: AudioTrack, sample_rate: int, seconds: float):
        self.track, self.sample_rate = track, int(sample_rate)
        self.start = track.start
        self.length = int(round(seconds * sample_rate))
        g = math.gcd(track.sample_rate, self.sample_rate)
        self._o, self._n = track.sample_rate // g, self.sample_rate // g  # input / output samples per period
        # torchaudio's sinc kernel reaches ceil(6 * o / (0.99 * min(o, n))) input samples each side
        # (lowpass_filter_width 6, rolloff 0.99); a margin of whole periods beyond that
        width = math.ceil(6 * self._o / (0.99 * min(self._o, self._n)))
        self._margin = self._o * (width // self._o + 2) if self._o != self._n else 0
        self._restart()

    def _restart(self) -> None:
        self._chunks = self.track.chunks()
        self._buf = np.zeros(0, np.float32)  # mono input samples [_buf_start, _buf_start + len)
        self._buf_start, self._eof = 0, False

    def _segment(self, a: int, b: int) -> np.ndarray:
        """Mono input samples ``[a, b)`` (fewer where the track ends); the buffer keeps only these."""
        if a < self._buf_start:
            self._restart()
        parts, start = [self._buf], self._buf_start
        pos = start + len(self._buf)
        while pos < b and not self._eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
                break
            # channels averaged as media.to_mono does ([T, C].mean(1) == [C, T].mean(0))
            parts.append(chunk.mean(axis=0, dtype=np.float32) if chunk.shape[0] > 1 else chunk[0])
            pos += len(parts[-1])
            if pos <= a:  # all before the window: dropped at once, so skipping holds nothing
                parts, start = [], pos
        buf = np.concatenate(parts) if len(parts) != 1 else parts[0]
        cut = min(max(a - start, 0), len(buf))
        self._buf, self._buf_start = buf[cut:], start + cut
        return self._buf[:b - self._buf_start] if self._buf_start == a else self._buf[:0]

    def first_sample(self, t: float) -> int:
        """The window's first sample at ``sample_rate``, counted from the track's first (may be negative)."""
        return int(round((t - self.start) * self.sample_rate)) - self.length // 2

    def window(self, t: float) -> np.ndarray:
        """Samples ``[t - w/2, t + w/2]`` (``t`` on the container's clock), zeros beyond the track."""
        return self._windows([t])[0]

    def batch(self, times) -> torch.Tensor:
        return torch.from_numpy(self._windows(list(times)))

    def _windows(self, times) -> np.ndarray:
        out = np.zeros((len(times), self.length), np.float32)
        if not times or self.length == 0:
            return out
        los = [self.first_sample(t) for t in times]
        first, last = max(min(los), 0), max(los) + self.length  # output samples needed: [first, last)
        if last <= 0:
            return out
        o, n = self._o, self._n
        a = max(0, (first // n) * o - self._margin)  # a multiple of o: the resampler's phase is kept
        b = -(-last // n) * o + self._margin  # past b the resampler's zero padding is never read
        segment = self._segment(a, b)
        if not len(segment):  # the track ended before these windows
            return out
        if o == n:
            y, base = segment, a
        else:
            y, base = resample(segment, self.track.sample_rate, self.sample_rate), (a // o) * n
        for i, lo in enumerate(los):
            s, e = max(lo, base), min(lo + self.length, base + len(y))
            if s < e:
                out[i, s - lo:e - lo] = y[s - base:e - base]
        return out


