"""Reading and writing media: the one place that touches audio/video files.

Audio files (wav, flac, ogg, mp3) are read with soundfile; everything else (mp4, mkv, webm,
m4a, ...) with PyAV, which bundles FFmpeg. torchaudio 2.11 no longer reads files itself, so it is
used only for resampling. Every failure is raised as :class:`MediaError` naming the file.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..fileio import atomic_path

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
# A frame smaller than this on a side holds fewer pixels than the patch grid of the CLIP ViTs
# explained here (14x14 for ViT-B/16 at 224 px, 7x7 for B/32): upsampled to the model's input it
# carries no spatial detail to localize, so such frames are refused rather than scored.
MIN_FRAME_SIDE = 16


class MediaError(RuntimeError):
    """A media file is missing, unreadable, or lacks the stream asked for."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "file not found")


SILENCE_PEAK = 1e-4  # a waveform whose peak is below this is treated as silent


def waveform_problem(waveform, min_samples: int = 1, sample_rate: int = 16000,
                     encoder: str = "the audio encoder", allow_silent: bool = False) -> str | None:
    """The reason a decoded mono waveform ``[T]`` (numpy or torch) is unusable, or None: fewer than
    ``min_samples`` samples, NaN/inf samples, or silence (peak below ``SILENCE_PEAK``) unless
    ``allow_silent`` (the extended sets' silent negatives are scored, not skipped)."""
    wave = np.asarray(waveform.detach().cpu() if hasattr(waveform, "detach") else waveform)  # torch or numpy
    if wave.ndim != 1:
        return f"waveform must be mono [T], got shape {wave.shape}"
    if wave.size < min_samples:
        return (f"audio too short: {wave.size} samples, {encoder} needs at least {min_samples} "
                f"({min_samples / sample_rate:.3f} s at {sample_rate} Hz)")
    if not np.isfinite(wave).all():
        return "audio holds NaN or infinite samples"
    peak = float(np.abs(wave).max())
    if peak < SILENCE_PEAK and not allow_silent:
        return f"silent audio (peak {peak:.2g} < {SILENCE_PEAK:g})"
    return None


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[T] or [T, C] (soundfile layout) -> [T] float32, averaging channels."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation, its defaults)."""
    if orig_sr == target_sr:
        return np.asarray(audio, dtype=np.float32)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_sr, target_sr)
    return out.numpy()


def load_audio(path, sample_rate: int | None = None, mono: bool = True,
               start: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio track: returns ``(samples, sample_rate)``.

    ``samples`` is float32 in [-1, 1], ``[T]`` if ``mono`` else ``[T, C]``. ``start`` and
    ``duration`` (seconds) cut a window; ``sample_rate`` resamples (None keeps the file's rate).
    """
    path = Path(path)
    _check_exists(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        audio, sr = _load_audio_soundfile(path, start, duration)
    else:
        audio, sr = _load_audio_av(path, start, duration)
    if audio.size == 0:
        raise MediaError(path, f"no audio samples in the window start={start}s duration={duration}s")
    if mono:
        audio = to_mono(audio)
    if sample_rate is not None and sample_rate != sr:
        if audio.ndim == 2:
            audio = np.stack([resample(c, sr, sample_rate) for c in audio.T], axis=1)
        else:
            audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return audio, sr


def _load_audio_soundfile(path: Path, start: float, duration: float | None):
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            frames = -1 if duration is None else int(round(duration * sr))
            f.seek(min(first, f.frames))
            audio = f.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise MediaError(path, f"cannot read audio with soundfile ({e})") from None
    return audio, sr


def _load_audio_av(path: Path, start: float, duration: float | None):
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "has no audio stream")
            stream = container.streams.audio[0]
            sr = stream.codec_context.sample_rate or stream.rate
            # the encoder pads its last frame; the stream's duration says where the sound ends
            # (read while the file is open: PyAV >= 19 refuses stream attributes after closing)
            end = int(round(stream.duration * stream.time_base * sr)) if stream.duration and stream.time_base else None
            chunks = []
            for frame in container.decode(stream):
                # planar float: [C, n]; interleaved formats come out as [1, n*C]
                arr = frame.to_ndarray()
                channels = len(frame.layout.channels)
                if arr.shape[0] != channels:
                    arr = arr.reshape(-1, channels).T
                chunks.append(_to_float(arr))
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(path, f"cannot decode audio with PyAV ({e})") from None
    if not chunks:
        raise MediaError(path, "audio stream holds no samples")
    audio = np.concatenate(chunks, axis=1).T[:end]  # [T, C]
    first = int(round(start * sr))
    last = None if duration is None else first + int(round(duration * sr))
    return audio[first:last], sr


def _to_float(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    if arr.dtype == np.int32:
        return arr.astype(np.float32) / 2147483648.0
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    return arr.astype(np.float32)


def load_image(path) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB, whatever its format, bit depth or channels.

    8-bit modes go through PIL's ``convert("RGB")`` (palette, grayscale, 1-bit, CMYK and YCbCr
    converted; an alpha channel dropped, keeping the colour under it). PIL's own conversion of
    high-bit-depth single-channel images is wrong (16-bit grayscale PNG/TIFF clip to all white,
    float TIFF to black), so those are scaled here: 16-bit values keep their high byte (as PIL
    reads 16-bit RGB PNGs), 32-bit integers in ``0..65535`` likewise, floats in ``[0, 1]`` times
    255, rounded. Other ranges and non-finite pixels raise MediaError, as do unreadable files.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as im:
            return _image_to_rgb8(path, im)
    except (UnidentifiedImageError, OSError, ValueError) as e:  # ValueError: a mode PIL cannot convert
        raise MediaError(path, f"cannot read image ({e})") from None


def _image_to_rgb8(path, im) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im)
        if im.mode == "F":
            if not np.isfinite(a).all():
                raise MediaError(path, f"float image holds {int((~np.isfinite(a)).sum())} NaN or infinite pixels")
            if a.size and (a.min() < 0 or a.max() > 1):
                raise MediaError(path, f"float image with values in [{a.min():g}, {a.max():g}]: only [0, 1] has a "
                                       "known scale to 8 bits")
            gray = np.rint(a.astype(np.float64) * 255).astype(np.uint8)
        else:
            if a.size and (a.min() < 0 or a.max() > 65535):
                raise MediaError(path, f"32-bit integer image with values in [{a.min()}, {a.max()}]: only 0..65535 "
                                       "(16-bit data) has a known scale to 8 bits")
            gray = (a.astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return np.asarray(im.convert("RGB"))


# swscale in the calling thread: PyAV >= 17 converts with a pool of threads by default (threads=0),
# started for each frame, which made 640x360 yuv420p -> rgb24 5.7x and rgb24 -> yuv420p 1.8x slower
# on our 2-core machine (identical pixels; benchmarks/pipeline_speed.py --compare reformat-threads).
# Older PyAV has no `threads` argument and converts in the calling thread anyway.
_REFORMAT_KWARGS: dict | None = None


def reformat_kwargs() -> dict:
    """``{"threads": 1}`` where PyAV's ``VideoFrame.reformat`` takes it (PyAV >= 17), else ``{}``."""
    global _REFORMAT_KWARGS
    if _REFORMAT_KWARGS is None:
        import av

        try:
            av.VideoFrame(16, 16, "yuv420p").reformat(format="rgb24", threads=1)
            _REFORMAT_KWARGS = {"threads": 1}
        except TypeError:
            _REFORMAT_KWARGS = {}
    return _REFORMAT_KWARGS


def frame_rgb(frame) -> np.ndarray:
    """A decoded PyAV video frame as ``[H, W, 3]`` uint8 RGB (``to_ndarray(format="rgb24")``, one thread)."""
    return frame.to_ndarray(format="rgb24", **reformat_kwargs())


def upright(rgb: np.ndarray, rotation) -> np.ndarray:
    """A decoded frame turned by its display rotation (PyAV's ``frame.rotation``: counter-clockwise
    degrees, multiples of 90; flips in the display matrix are ignored), as players show it."""
    turns = int(round((rotation or 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def check_frame_size(frame: np.ndarray, path) -> np.ndarray:
    """``frame`` unchanged, or MediaError when it is smaller than :data:`MIN_FRAME_SIDE` on a side."""
    h, w = frame.shape[:2]
    if min(h, w) < MIN_FRAME_SIDE:
        raise MediaError(path, f"frame is {w}x{h} px: smaller than {MIN_FRAME_SIDE} px on a side, too small for a "
                               "meaningful map (fewer pixels than the ViT's patch grid)")
    return frame


def video_info(path) -> dict:
    """Duration (s), frame rate, frame size and whether the file has an audio track."""
    import av

    path = Path(path)
    _check_exists(path)
    try:
        with av.open(str(path)) as c:
            info = {"duration": (c.duration or 0) / 1e6, "has_audio": bool(c.streams.audio),
                    "has_video": bool(c.streams.video)}
            if c.streams.video:
                v = c.streams.video[0]
                rate = v.average_rate or v.guessed_rate
                info.update(fps=float(rate) if rate else None, width=v.codec_context.width,
                            height=v.codec_context.height, frames=v.frames or None)
            if c.streams.audio:
                info["sample_rate"] = c.streams.audio[0].codec_context.sample_rate
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(path, f"cannot open with PyAV ({e})") from None
    return info


def load_frame(path, time: float | None = None) -> np.ndarray:
    """One frame as ``[H, W, 3]`` uint8 RGB.

    For an image file, the image. For a video, the first frame shown at or after ``time``
    seconds (None: the middle of the video, the frame the benchmarks annotate), turned upright by
    the stream's display rotation (phone videos) as players and ``localize`` show it. A frame smaller
    than :data:`MIN_FRAME_SIDE` px on a side raises MediaError (too small for a meaningful map).
    """
    import av

    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return check_frame_size(load_image(path), path)
    _check_exists(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(path, "has no video stream")
            stream = c.streams.video[0]
            if time is None:
                duration = (stream.duration * stream.time_base) if stream.duration else (c.duration or 0) / 1e6
                time = float(duration) / 2
            target = int(time / stream.time_base) if stream.time_base else 0
            if target > 0:
                c.seek(target, stream=stream, backward=True, any_frame=False)
            last = None
            for frame in c.decode(stream):
                last = frame
                if frame.pts is None or frame.pts >= target:
                    break
            if last is None:
                raise MediaError(path, "video stream holds no frames")
            return check_frame_size(upright(frame_rgb(last), getattr(last, "rotation", 0)), path)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(path, f"cannot decode video with PyAV ({e})") from None


def write_video(path, frames, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 18, threads: int = 0) -> None:
    """Write an mp4 (H.264 video, AAC audio) atomically: to a temporary name, then renamed.

    ``frames``: iterable of ``[H, W, 3]`` uint8 RGB (even H and W); ``audio``: ``[T]`` or
    ``[T, C]`` float in [-1, 1]. ``threads=1`` makes the encoding byte-for-byte repeatable
    (x264's threaded encoder is not, on a loaded machine); 0 lets the encoder choose.
    """
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            vstream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(crf), "preset": "veryfast"}
            vstream.codec_context.thread_count = threads
            astream = None
            if audio is not None:
                astream = out.add_stream("aac", rate=sample_rate)
                audio = np.asarray(audio, dtype=np.float32)
                channels = 1 if audio.ndim == 1 else audio.shape[1]
                astream.layout = "mono" if channels == 1 else "stereo"
            sized = False
            for rgb in frames:
                rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
                if not sized:
                    vstream.width, vstream.height = rgb.shape[1], rgb.shape[0]
                    sized = True
                for packet in vstream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
            for packet in vstream.encode():
                out.mux(packet)
            if astream is not None:
                planar = audio.reshape(len(audio), -1).T.astype(np.float32)  # [C, T]
                layout = "mono" if planar.shape[0] == 1 else "stereo"
                step = 1024
                for i in range(0, planar.shape[1], step):
                    chunk = np.ascontiguousarray(planar[:, i:i + step])
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                    frame.sample_rate = sample_rate
                    frame.pts = i
                    for packet in astream.encode(frame):
                        out.mux(packet)
                for packet in astream.encode():
                    out.mux(packet)


def write_audio(path, audio: np.ndarray, sample_rate: int) -> None:
    """Write a wav/flac file with soundfile, atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sample_rate)
