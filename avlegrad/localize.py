"""Sound-source localization on videos: every frame explained, written as a heatmap video with its sound.

    python -m avlegrad.localize clip.mp4 videos/ -o out/ --audio-encoder CKPT
    python -m avlegrad.localize clip.mp4 -o out/ --target-text "a dog" --model ViT-B-16

For each input video, ``<out>/<stem>_legrad.mp4`` holds every frame with LeGrad's map overlaid,
at the input's average frame rate, with the original audio track re-encoded as AAC. The target of
the frame at time ``t`` is the audio embedding of the window ``[t - w/2, t + w/2]`` (zero-padded
past the ends of the track), or one text embedding for all frames.

Memory stays bounded whatever the video's length: frames are decoded in a background thread into
a bounded queue, explained in batches, and handed to a second thread that overlays and encodes
them as soon as their maps are known. At most ``batch_size * stride`` frames wait for the model,
plus two queues of as many (at least 8, at most :data:`QUEUE_BYTES` of pixels each), so the next
batch is decoded and the last one written while the model works. The audio track is streamed as
well (:class:`AudioWindows` for the targets, the writer for the muxed sound): no part of the
pipeline holds the whole track
(``benchmarks/localize_memory.py``). Killed runs' hidden temporary outputs are removed by the
next run into the same folder (:func:`remove_stale_temp_files`); a truncated file is written up
to the damage, reported in one line (``VideoResult.damage``).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .audio_strip import SpectrogramStrip, WindowMap, audio_side_explainer, display_frontend
from .cli import add_import_flag, flag_wording, import_extensions, parser_flags
from .data.audio_track import AudioTrack, AudioWindows, _unreadable, read_audio_track  # noqa: F401 (re-exported)
from .data.media import MediaError, check_frame_size, frame_rgb, reformat_kwargs, upright
from .data.record import VIDEO_SUFFIXES
from .fileio import atomic_path
from .models import DTYPES, encode_text, load_pair
from .profiling import STAGES
from .visualize import COLORMAPS, overlay, save_image

log = logging.getLogger("avlegrad")

OUTPUT_SUFFIX = "_legrad"
DEFAULT_WINDOW = 2.0  # seconds, when the encoder does not say
AAC_FRAME = 1024  # samples per AAC frame


# ----------------------------------------------------------------------------- inputs
def find_videos(inputs) -> tuple[list[Path], list[tuple[str, str]]]:
    """Video files named or found (recursively) in folders: ``(videos, [(input, problem)])``.

    In folders, our own outputs (``*_legrad.mp4``) and hidden files are skipped, so running
    again on a folder that holds earlier results does not explain the results.
    """
    videos, problems, seen = [], [], set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                           and not f.name.startswith(".") and not f.stem.endswith(OUTPUT_SUFFIX))
            if not found:
                problems.append((str(p), f"no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder"))
        elif p.is_file():
            found = [p]
        else:
            problems.append((str(p), "no such file or folder"))
            continue
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                videos.append(f)
    return videos, problems


def output_stems(videos: list[Path]) -> list[str]:
    """One output stem per video; a repeated file name gets ``_2``, ``_3``... so nothing is overwritten."""
    stems, taken = [], set()
    for v in videos:
        stem, n = v.stem, 1
        while stem in taken:
            n += 1
            stem = f"{v.stem}_{n}"
        taken.add(stem)
        stems.append(stem)
    return stems


# temporary names of our outputs while written: <stem>_legrad.tmp<pid>.mp4 (the video), and the npz
# and contact sheet under their final name + .tmp<pid> (MapStore.save, visualize.save_image)
_TEMP_NAME = re.compile(r"^\..+" + OUTPUT_SUFFIX + r"(?:_maps\.npz|_sheet\.png)?\.tmp(\d+)(?:\.mp4)?$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # elsewhere os.kill(pid, 0) is no probe: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale_temp_files(folder) -> list[Path]:
    """Delete the temporary outputs that killed runs left in ``folder`` (hidden, ``*_legrad*.tmp<pid>*``).

    A file is stale when the process named by its pid no longer runs on this machine, so a run
    writing into the same folder at the same time keeps its files. Returns the files removed.
    """
    removed = []
    for f in Path(folder).iterdir():
        m = _TEMP_NAME.match(f.name)
        if m and f.is_file() and not _process_alive(int(m.group(1))):
            try:
                f.unlink()
                removed.append(f)
            except OSError:  # gone meanwhile, or not ours to delete: leave it
                pass
    return removed


def encoder_window(encoder) -> float:
    """The encoder's own clip length if it declares one (``clip_seconds``/``window_seconds``), else 2 s."""
    for attr in ("clip_seconds", "window_seconds"):
        value = getattr(encoder, attr, None)
        if value:
            return float(value)
    return DEFAULT_WINDOW


# ----------------------------------------------------------------------------- decoding
@dataclass
class Frame:
    index: int
    time: float  # presentation time (s) on the container's clock
    rgb: np.ndarray  # [H, W, 3] uint8, display rotation applied
    image: np.ndarray | None = None  # resized for the model by the reader, for frames to explain
    map: np.ndarray | None = None  # [S, S] float32 in [0, 1] once explained
    audio: WindowMap | None = None  # the audio-side map of its (or the nearer explained frame's) window (audio_map)


_END = object()
# pixels that may wait in each of localize's two queues (decoded frames, frames to write): a whole
# batch when frames are small (so decoding and writing run while the model works on a batch),
# fewer for large frames (640x360: 388 frames; 3840x2160: 10)
QUEUE_BYTES = 256 << 20


class FrameReader:
    """Decodes a video's frames with PyAV in a background thread, through a bounded queue.

    Iterating yields :class:`Frame` objects in display order, rotated upright when the stream
    carries a display rotation (``frame.rotation``; flips in the display matrix are ignored).
    ``prepare(rgb)`` runs in the thread for every ``prepare_every``-th frame, so the
    resize for the model overlaps the model work too. Up to ``queue_size`` decoded frames wait in
    the queue, but never more than :data:`QUEUE_BYTES` of pixels (at least 8 frames). Use as a context
    manager: leaving it stops the thread and closes the file.
    """

    def __init__(self, path, prepare=None, prepare_every: int = 1, queue_size: int = 8):
        import av

        self.path = Path(path)
        self.prepare, self.prepare_every = prepare, max(1, prepare_every)
        if not self.path.is_file():
            raise MediaError(self.path, "file not found")
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise _unreadable(self.path, e) from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(self.path, "has no video stream")
        s = self.stream = self.container.streams.video[0]
        s.thread_type = "AUTO"  # frame + slice threads: decoding keeps up with the model
        self.time_base = s.time_base
        rate = s.average_rate or s.guessed_rate
        duration = float(s.duration * s.time_base) if s.duration and s.time_base else (self.container.duration or 0) / 1e6
        if not rate and s.frames and duration > 0:
            rate = Fraction(s.frames / duration).limit_denominator(1001)
        self.rate_known = bool(rate)
        self.fps = Fraction(rate) if rate else Fraction(25)
        self.duration = duration
        self.expected_frames = s.frames or (int(round(duration * self.fps)) if duration else None)
        sar = s.codec_context.sample_aspect_ratio
        self.sample_aspect_ratio = Fraction(sar) if sar and sar > 0 else None
        frame_bytes = max(1, (s.codec_context.width or 1) * (s.codec_context.height or 1) * 3)
        self.queue_size = max(1, min(int(queue_size), max(8, QUEUE_BYTES // frame_bytes)))
        self.rotation = 0  # counter-clockwise degrees applied, read from the first frame
        self.error = None  # why decoding stopped early, if it did
        self._queue: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"decode {self.path.name}", daemon=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        import av

        index = -1
        try:
            for index, frame in enumerate(STAGES.iterate("reader: decode", self.container.decode(self.stream))):
                with STAGES.stage("reader: to RGB"):
                    rgb = frame_rgb(frame)
                if index == 0:
                    check_frame_size(rgb, self.path)  # a 1x1 video has nothing to localize: fail it, saying why
                if index == 0:
                    self.rotation = 90 * (int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4)
                rgb = upright(rgb, getattr(frame, "rotation", 0))  # rotation is counter-clockwise
                t = float(frame.time) if frame.time is not None else index / float(self.fps)
                item = Frame(index, t, rgb)
                if self.prepare is not None and index % self.prepare_every == 0:
                    with STAGES.stage("reader: resize"):
                        item.image = self.prepare(rgb)
                if not self._put(item):
                    return
            self._put(_END)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if index < 0:  # nothing decodable: the consumer raises it with the file's name
                self._put(e)
            else:  # a damaged or truncated file: keep the frames before the damage, and say so
                self.error = f"video decoding stopped after frame {index + 1} ({getattr(e, 'strerror', None) or e})"
                self._put(_END)
        except BaseException as e:
            self._put(e)

    def __iter__(self):
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                import av

                if isinstance(item, (av.error.FFmpegError, OSError, ValueError)):
                    reason = getattr(item, "strerror", None) or item
                    raise MediaError(self.path, f"cannot decode video: the file is damaged or truncated ({reason})")
                raise item
            yield item

    def close(self):
        self._stop.set()
        if self._thread.is_alive():
            while self._thread.is_alive():  # unblock a put waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.05)
        self.container.close()


# ----------------------------------------------------------------------------- encoding
class VideoWriter:
    """H.264 (yuv420p) + AAC mp4 at a constant ``fps``, written to ``path``; audio interleaved with video.

    yuv420p needs even sizes: an odd width or height is padded by one edge pixel (``padded``).
    The audio track keeps its samples, rate and (up to 2) channels; it starts where it started
    relative to the first frame (``audio_offset`` s; sound before the first frame is dropped).
    """

    def __init__(self, path, width: int, height: int, fps: Fraction, audio: AudioTrack | None = None,
                 audio_offset: float = 0.0, sample_aspect_ratio: Fraction | None = None, crf: int = 20):
        import av

        self.fps = Fraction(fps).limit_denominator(1001)
        self.padded = (width % 2, height % 2)
        self.out = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            v = self.video = self.out.add_stream("libx264", rate=self.fps)
            v.width, v.height = width + self.padded[0], height + self.padded[1]
            v.pix_fmt = "yuv420p"
            v.codec_context.time_base = 1 / self.fps
            v.options = {"crf": str(crf), "preset": "veryfast"}
            if sample_aspect_ratio and sample_aspect_ratio != 1:
                v.codec_context.sample_aspect_ratio = sample_aspect_ratio
            self.audio = None
            if audio is not None:
                self.channels = min(audio.channels, 2)  # AAC layouts beyond stereo are not worth the trouble here
                self.skip = max(0, int(round(-audio_offset * audio.sample_rate)))  # sound before the first frame
                self.audio_pts = max(0, int(round(audio_offset * audio.sample_rate)))  # a later start keeps its delay
                self.layout = "mono" if self.channels == 1 else "stereo"
                self.audio = self.out.add_stream("aac", rate=audio.sample_rate)
                self.audio.layout = self.layout
                self.sample_rate, self.audio_done = audio.sample_rate, 0
                # streamed from the file alongside the frames: only a block or two is ever held
                self._chunks, self._pending, self._eof = audio.chunks(), np.zeros((self.channels, 0), np.float32), False
        except BaseException:
            self.out.close()
            raise
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        if any(self.padded):
            rgb = np.pad(rgb, ((0, self.padded[1]), (0, self.padded[0]), (0, 0)), mode="edge")
        # converted here rather than inside encode(), to convert in this thread (media.reformat_kwargs)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", **reformat_kwargs())
        frame.pts, frame.time_base = self.frames, 1 / self.fps
        self.out.mux(self.video.encode(frame))
        self.frames += 1
        self._audio_until(self.frames / self.fps)

    def _next_audio(self) -> bool:
        """Append the track's next block to ``_pending`` (False at its end)."""
        chunk = next(self._chunks, None)
        if chunk is None:
            self._eof = True
            return False
        if chunk.shape[0] > 2:
            chunk = np.stack([chunk[0::2].mean(0), chunk[1::2].mean(0)])
        if self.skip:
            drop = min(self.skip, chunk.shape[1])
            chunk, self.skip = chunk[:, drop:], self.skip - drop
        self._pending = np.concatenate([self._pending, chunk], axis=1)
        return True

    def _audio_until(self, seconds=None) -> None:
        """Encode the audio up to ``seconds`` (None: all of it) into the output, so the file is interleaved."""
        import av

        if self.audio is None:
            return
        end = None if seconds is None else max(0, int(seconds * self.sample_rate) - self.audio_pts)
        while end is None or self.audio_done < end:
            if not self._pending.shape[1] and (self._eof or not self._next_audio()):
                return
            n = self._pending.shape[1] if end is None else min(end - self.audio_done, self._pending.shape[1])
            n = min(n, AAC_FRAME)
            chunk = np.ascontiguousarray(self._pending[:, :n])
            self._pending = self._pending[:, n:]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self.layout)
            frame.sample_rate = self.sample_rate
            frame.pts, frame.time_base = self.audio_pts + self.audio_done, Fraction(1, self.sample_rate)
            self.out.mux(self.audio.encode(frame))
            self.audio_done += n

    def finish(self) -> None:
        self.out.mux(self.video.encode())
        if self.audio is not None:
            self._audio_until()  # all of it
            self.out.mux(self.audio.encode())
        self.out.close()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # the file is deleted anyway
            pass


class MapStore:
    """Per-frame maps spooled to a temporary file, then saved as an npz: memory stays bounded.

    The npz holds ``maps`` float16 ``[T, S, S]`` (as computed, on the model's square input),
    ``times`` (s), ``explained`` (bool: computed, not interpolated) and ``fps``. With ``--audio-map``
    also the audio side of each explained frame (:meth:`add_audio`): ``audio_maps`` float16
    ``[E, F, Tw]``, ``audio_times`` (the frames' times), ``audio_starts`` (when each window's frame 0
    is centred, s) and ``audio_frame_seconds`` (between its frames).
    """

    def __init__(self, folder):
        self.folder = folder
        self.spool = tempfile.TemporaryFile(dir=folder)
        self.shape, self.times, self.explained = None, [], []
        self.audio = None  # audio-side maps: spool, shape, frame times, window starts, seconds per frame

    def add_audio(self, m: np.ndarray, t: float, start: float, frame_seconds: float) -> None:
        """An explained frame's audio-side map ``[F, Tw]``, frame ``k`` centred at ``start + k * frame_seconds``."""
        if self.audio is None:
            self.audio = {"spool": tempfile.TemporaryFile(dir=self.folder), "shape": m.shape, "times": [],
                          "starts": [], "frame_seconds": frame_seconds}
        self.audio["spool"].write(np.ascontiguousarray(m, dtype=np.float16).tobytes())
        self.audio["times"].append(t)
        self.audio["starts"].append(start)

    def add(self, m: np.ndarray, t: float, explained: bool) -> None:
        self.shape = m.shape
        self.spool.write(np.ascontiguousarray(m, dtype=np.float16).tobytes())
        self.times.append(t)
        self.explained.append(explained)

    def save(self, path, fps: float) -> None:
        try:
            with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                _spooled_array(zf, "maps", self.spool, (len(self.times), *(self.shape or (0, 0))))
                extras = {"times": np.asarray(self.times, np.float64), "explained": np.asarray(self.explained),
                          "fps": np.float64(fps)}
                if self.audio is not None:
                    a = self.audio
                    _spooled_array(zf, "audio_maps", a["spool"], (len(a["times"]), *a["shape"]))
                    extras.update(audio_times=np.asarray(a["times"], np.float64),
                                  audio_starts=np.asarray(a["starts"], np.float64),
                                  audio_frame_seconds=np.float64(a["frame_seconds"]))
                for name, arr in extras.items():
                    with zf.open(f"{name}.npy", "w") as f:
                        np.lib.format.write_array(f, arr)
        finally:
            self.close()

    def close(self):
        self.spool.close()
        if self.audio is not None:
            self.audio["spool"].close()


def _spooled_array(zf: zipfile.ZipFile, name: str, spool, shape) -> None:
    """Write float16 rows spooled in ``spool`` as ``<name>.npy`` of ``shape`` into an open npz."""
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                 "shape": shape})
        spool.seek(0)
        shutil.copyfileobj(spool, f, 1 << 20)


class ContactSheet:
    """Keeps a few evenly spaced overlay thumbnails without knowing the length in advance.

    Every ``step``-th frame is kept; when more than ``2 * count`` are held, ``step`` doubles and
    half are dropped. ``render`` picks the ``count`` nearest to evenly spaced times, the last included.
    ``legend``: lines of text written under the grid, after a colour bar of ``colormap`` (low to
    high) when one is given, so that the picture says what it shows without the docs.
    """

    def __init__(self, count: int = 6, columns: int = 3, width: int = 240, legend=(), colormap: str | None = None):
        self.count, self.columns, self.width = count, columns, width
        self.legend, self.colormap = list(legend), colormap
        self.step, self.tiles, self.last = 1, {}, None

    def _thumb(self, image):
        import cv2

        h, w = image.shape[:2]
        return cv2.resize(image, (self.width, max(1, round(h * self.width / w))), interpolation=cv2.INTER_AREA)

    def add(self, index: int, t: float, image: np.ndarray) -> None:
        if index % self.step == 0:
            self.tiles[index] = (t, self._thumb(image))
            if len(self.tiles) > 2 * self.count:
                self.step *= 2
                self.tiles = {i: v for i, v in self.tiles.items() if i % self.step == 0}
        self.last = (index, t, image)

    def render(self) -> np.ndarray:
        import cv2

        index, t, image = self.last
        tiles = dict(self.tiles)
        tiles[index] = (t, self._thumb(image))
        kept = np.array(sorted(tiles))
        wanted = np.linspace(0, index, min(self.count, len(kept)))  # evenly spaced in time
        keys = sorted({int(kept[np.abs(kept - w).argmin()]) for w in wanted})
        h = max(tiles[k][1].shape[0] for k in keys)
        gap = 4
        rows = math.ceil(len(keys) / self.columns)
        sheet = np.full((rows * (h + gap) + gap, self.columns * (self.width + gap) + gap, 3), 255, np.uint8)
        for n, k in enumerate(keys):
            t, tile = tiles[k]
            tile = tile.copy()
            label = f"{t:.2f}s"
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            y, x = gap + (n // self.columns) * (h + gap), gap + (n % self.columns) * (self.width + gap)
            sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        if self.legend or self.colormap:
            sheet = np.concatenate([sheet, self.footer(sheet.shape[1], gap)])
        return sheet

    LINE = 16  # px per legend line (cv2's simplex font at scale 0.4 is about 9 px tall)
    BAR = (160, 10)  # colour bar width, height in px

    def footer(self, width: int, gap: int = 4) -> np.ndarray:
        """The legend under the grid: ``[h, width, 3]`` uint8 on white; the colour bar (if any) at
        ``(gap + 40, gap)``, then one line of text per ``legend`` entry."""
        import cv2

        from .visualize import colorize

        def text(img, label, x, y):
            cv2.putText(img, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)

        h = gap + (self.BAR[1] + gap if self.colormap else 0) + self.LINE * len(self.legend) + gap
        out = np.full((h, width, 3), 255, np.uint8)
        y = gap
        if self.colormap:
            x = gap + 40
            bar = colorize(np.tile(np.linspace(0, 1, self.BAR[0]), (self.BAR[1], 1)), self.colormap)
            out[y:y + self.BAR[1], x:x + self.BAR[0]] = bar
            text(out, "low", gap + 8, y + self.BAR[1] - 1)
            text(out, "high  relevance (each map min-max normalised)", x + self.BAR[0] + 6, y + self.BAR[1] - 1)
            y += self.BAR[1] + gap
        for line in self.legend:
            text(out, line, gap, y + self.LINE - 4)
            y += self.LINE
        return out


# ----------------------------------------------------------------------------- the localizer
AUDIO_MAP_NEEDS_SOUND = ("`audio_map` explains each frame's sound against the frame: it needs an audio encoder "
                         "(`audio_encoder`), not a text target")

@dataclass
class VideoResult:
    input: Path
    output: Path
    frames: int
    fps: float
    seconds: float  # wall-clock time spent
    maps: Path | None = None
    contact_sheet: Path | None = None
    notes: list[str] = field(default_factory=list)
    damage: str | None = None  # a damaged or truncated input: what was written and what failed


class Localizer:
    """Explains every frame of videos and writes heatmap videos; the models are only read.

    ``model``: an open_clip CLIP whose image tower LeGrad explains; ``preprocess_cfg``: its
    open_clip preprocess config (mean/std/size). Targets come from ``encoder`` (an AudioEncoder in
    this tower's space, on the audio window centred on each frame) or from ``text_embedding``
    (``[D]``, the same for every frame). ``stride``: explain every k-th frame (and the last) and
    interpolate the maps of the frames between linearly. ``method``: the explainer
    (``avlegrad.explain.create_explainer``'s names; ``layer_index`` is LeGrad's). The models run on
    the device they are on.

    ``audio_map``: also explain the other direction, the audio encoder's embedding of each
    explained window against that frame's image embedding (audio-side LeGrad,
    :class:`~avlegrad.explain.audio.AudioLeGrad`, same ``layer_index``), drawn as a scrolling
    spectrogram strip ``strip_seconds`` wide (default: twice the window) under each frame
    (:mod:`avlegrad.audio_strip`). Needs an audio encoder with an audio-side adapter (ImageBind's
    audio tower, a timm ViT encoder); others are refused here with one line.
    """

    def __init__(self, model, preprocess_cfg: dict, encoder=None, text_embedding: torch.Tensor | None = None, *,
                 layer_index: int = -2, image_size: int | None = None, window: float | None = None,
                 stride: int = 1, batch_size: int = 16, alpha: float = 0.5, colormap: str = "jet",
                 dtype: str = "fp32", save_maps: bool = False, contact_sheet: bool = False,
                 progress: bool = True, method: str = "legrad", audio_map: bool = False,
                 strip_seconds: float | None = None):
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        from .explain import create_explainer

        if (encoder is None) == (text_embedding is None):
            raise ValueError("give exactly one target source: an audio encoder or a text embedding")
        if stride < 1 or batch_size < 1:
            raise ValueError(f"stride and batch size must be at least 1, got {stride} and {batch_size}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {colormap!r}; choose from {', '.join(COLORMAPS)}")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        self.device = next(model.parameters()).device  # the models run where they are
        # towers built from a config name only their size: the rest are open_clip's defaults
        self.model, self.preprocess_cfg = model, merge_preprocess_dict(PreprocessCfg(), preprocess_cfg)
        kwargs = {"layer_index": layer_index} if method == "legrad" else {}
        self.explainer = create_explainer(method, model, **kwargs)
        size = self.preprocess_cfg["size"]
        self.image_size = int(image_size or (size[0] if isinstance(size, (tuple, list)) else size))
        self.explainer.vit.grid(self.image_size, self.image_size)  # a size the patches do not tile fails now
        self.encoder, self.text_embedding = encoder, text_embedding
        if encoder is not None:
            self.window = float(window) if window is not None else encoder_window(encoder)
            need = encoder.min_samples / encoder.sample_rate
            if self.window <= 0 or int(round(self.window * encoder.sample_rate)) < encoder.min_samples:
                raise ValueError(f"audio window {self.window} s is too short: {type(encoder).__name__} needs "
                                 f"at least {need:.3f} s")
            if encoder.embed_dim != self.explainer.vit.embed_dim:
                raise ValueError(f"the audio encoder embeds into {encoder.embed_dim} dimensions but the image "
                                 f"tower's embedding has {self.explainer.vit.embed_dim}: not the same space")
        else:
            self.window = None
        self.audio_explainer = None  # audio-side LeGrad (audio_map)
        if strip_seconds is not None and not audio_map:
            raise ValueError("`strip_seconds` sets the span of the `audio_map` strip: add `audio_map`")
        if audio_map:
            if encoder is None:
                raise ValueError(AUDIO_MAP_NEEDS_SOUND)
            self.audio_explainer = audio_side_explainer(encoder, layer_index)
            self.strip_seconds = float(strip_seconds) if strip_seconds is not None else 2 * self.window
            if not self.strip_seconds > 0:
                raise ValueError(f"strip_seconds must be positive, got {strip_seconds}")
        self.stride, self.batch_size = int(stride), int(batch_size)
        self.alpha, self.colormap = float(alpha), colormap
        self.dtype = dtype
        self.save_maps, self.contact_sheet, self.progress = save_maps, contact_sheet, progress
        self._cleaned: set[Path] = set()  # output folders already cleared of stale temporary files

    # --- building from names ----------------------------------------------------------------
    @classmethod
    def from_names(cls, audio_encoder: str | None = None, target_text: str | None = None,
                   model: str | None = None, pretrained: str | None = None, device=None, **kwargs) -> "Localizer":
        """Load the models by name: an audio encoder (name or checkpoint) or a text prompt, and the tower.

        Without ``model``/``pretrained`` the tower is the audio encoder's own (``clip_tower_spec``),
        else open_clip's ``model`` (default ViT-B-16) with ``pretrained`` (default ``openai``);
        a tower that is not the audio encoder's is refused.
        """
        if (audio_encoder is None) == (target_text is None):
            raise ValueError("give `audio_encoder` (a name or checkpoint: localize the sound) or `target_text` "
                             "(a prompt: localize it in every frame), not both nor neither")
        if kwargs.get("audio_map") and target_text is not None:  # said before any weights load (or fail to)
            raise ValueError(AUDIO_MAP_NEEDS_SOUND)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        clip, cfg, model, _, encoder = load_pair(audio_encoder, model, pretrained, device=device)
        if kwargs.get("audio_map") and encoder is not None:  # refused naming the encoder as the user did
            audio_side_explainer(encoder, kwargs.get("layer_index", -2), name=audio_encoder)
        text = None
        if target_text is not None:
            text = text_embedding(clip, model, target_text)
        return cls(clip, cfg, encoder, text, **kwargs)

    # --- the model step ---------------------------------------------------------------------
    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """A frame resized without crop to ``image_size`` (``[S, S, 3]`` uint8), as ``models.image_tensor`` does.

        The normalisation follows in :meth:`to_model`, on the device and for a whole batch: it
        keeps torch out of the decoding thread (small CPU ops there fight the model's threads for
        the cores) and sends a quarter of the bytes to the GPU.
        """
        from PIL import Image

        resample = Image.BICUBIC if self.preprocess_cfg.get("interpolation", "bicubic") == "bicubic" else Image.BILINEAR
        return np.asarray(Image.fromarray(rgb).resize((self.image_size, self.image_size), resample))

    def to_model(self, prepared: list[np.ndarray]) -> torch.Tensor:
        """Prepared frames -> the normalised ``[B, 3, S, S]`` float batch on the device (= ``image_tensor``'s)."""
        x = torch.from_numpy(np.stack(prepared)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.preprocess_cfg["mean"], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess_cfg["std"], device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _autocast(self):
        dtype = DTYPES[self.dtype]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def targets(self, frames: list[Frame], audio: AudioWindows | None,
                waves: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, D]``: each frame's audio window through the encoder (each as if alone), or the text embedding."""
        if self.encoder is None:
            return self.text_embedding.to(self.device).expand(len(frames), -1)
        if waves is None:
            waves = audio.batch([f.time for f in frames]).to(self.encoder.device)
        with torch.no_grad(), STAGES.stage("audio"):
            return self.encoder.embed_each(waves)

    def explain(self, frames: list[Frame], audio: AudioWindows | None) -> None:
        """Set ``frame.map`` for a batch: frames through the image tower, their windows through the encoder
        (and ``frame.audio``, the audio-side map of each window, with ``audio_map``)."""
        images = self.to_model([f.image if f.image is not None else self.prepare(f.rgb) for f in frames])
        with STAGES.stage("audio windows"):
            waves = None if self.encoder is None else audio.batch([f.time for f in frames]).to(self.encoder.device)
        with self._autocast():
            targets = self.targets(frames, audio, waves)
            with STAGES.stage("explain"):
                maps = self.explainer(images, targets).cpu().numpy()
        windows = [None] * len(frames)
        if self.audio_explainer is not None:
            with STAGES.stage("audio-side map"):
                out = self.audio_maps(images, waves)
            hop = self.audio_explainer.adapter.hop
            # the window's frame k is centred on its sample k * hop: frame 0 on the column nearest its first sample
            windows = [WindowMap(m.float().numpy(), (audio.first_sample(f.time) + hop // 2) // hop)
                       for f, m in zip(frames, out.maps)]
        for f, m, w in zip(frames, maps, windows):
            f.map, f.image, f.audio = m, None, w

    def audio_maps(self, images: torch.Tensor, waves: torch.Tensor):
        """Audio-side LeGrad of each window ``waves [B, T]`` against its frame's image embedding
        (``images [B, 3, S, S]`` as :meth:`to_model` gives) -> :class:`~avlegrad.explain.audio.AudioMaps`
        (maps ``[B, F, Tw]`` in [0, 1] on the window's frames, frame ``k`` at ``k * hop`` samples)."""
        from .explain.adapters import image_embedding

        with torch.no_grad(), self._autocast():
            picture = image_embedding(self.model, images)
        with self._autocast():
            return self.audio_explainer.explain_waveforms(waves, picture.to(waves.device))

    def explain_frame(self, rgb: np.ndarray, audio_window: np.ndarray | None = None):
        """Both directions for one frame and the sound around it, from one call.

        ``rgb`` ``[H, W, 3]`` uint8; ``audio_window`` ``[T]`` float mono at the encoder's sample rate
        (the frame's window; None with a text target). Returns ``(image_map, audio)``: the
        image-side map ``[S, S]`` float32 in [0, 1] on the model's square input (the frame squashed
        to ``image_size``), and with ``audio_map`` the audio-side
        :class:`~avlegrad.explain.audio.AudioMaps` of the window with the batch axis removed
        (``maps [F, Tw]`` in [0, 1], ``curve [Tw]``, ``times [Tw]`` s from the window's start), else None.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or min(rgb.shape[:2]) < 1:
            raise ValueError(f"explain_frame needs an RGB frame [H, W, 3] (uint8), got shape {tuple(rgb.shape)}")
        images = self.to_model([self.prepare(np.ascontiguousarray(rgb, dtype=np.uint8))])
        waves = None
        if self.encoder is not None:
            if audio_window is None:
                raise ValueError("explain_frame needs the frame's audio window [T] (mono, at the encoder's rate)")
            audio_window = np.asarray(audio_window, np.float32)
            if audio_window.ndim != 1:
                raise ValueError(f"explain_frame needs a mono audio window [T], got shape {audio_window.shape}")
            bad = int((~np.isfinite(audio_window)).sum())
            if bad:
                raise ValueError(f"the audio window holds {bad} NaN/inf samples of {audio_window.size}")
            waves = torch.from_numpy(audio_window).reshape(1, -1).to(self.encoder.device)
        with self._autocast():
            target = self.text_embedding.to(self.device)[None] if waves is None else self.targets([], None, waves)
            image_map = self.explainer(images, target)[0].float().cpu().numpy()
        if self.audio_explainer is None:
            return image_map, None
        out = self.audio_maps(images, waves)
        out.maps, out.curve, out.clips = out.maps[0], out.curve[0], out.clips[0]
        return image_map, out

    def sheet_legend(self) -> list[str]:
        """What the contact sheet's pictures show, a line each (written under them)."""
        explained = "every frame" if self.stride == 1 else f"one frame in {self.stride} (interpolated between)"
        if self.encoder is None:
            lines = [f"Frames: LeGrad map of the text prompt, {explained}."]
        else:
            lines = [f"Frames: LeGrad map of the frame's sound ({self.window:.2f} s centred on it), {explained}."]
        if self.audio_explainer is not None:
            lines += [f"Strip: log-mel of {self.strip_seconds:.2f} s of sound (low frequencies at the bottom), "
                      "white line: the frame's time;",
                      "the box: the audio encoder's window, coloured by the audio-side LeGrad map against the frame."]
        return lines

    def spectrogram_strip(self, track: AudioTrack) -> SpectrogramStrip:
        """The strip drawer for one video's sound (``audio_map``)."""
        ad = self.audio_explainer.adapter
        frontend = display_frontend(self.encoder, ad.hop, ad.sample_rate, ad.n_mels)
        return SpectrogramStrip(track, frontend, self.strip_seconds, self.alpha, self.colormap)

    # --- one video ----------------------------------------------------------------------------
    def localize(self, path, out_dir, stem: str | None = None) -> VideoResult:
        """Write ``<out_dir>/<stem>_legrad.mp4`` (and the maps / contact sheet if asked) for one video.

        Three stages overlap: decoding (a thread), the models (this thread), overlay + encoding
        (a thread). Raises MediaError (or ValueError) naming the file when it cannot be done;
        nothing is left behind then (outputs are written under temporary names, renamed when complete).
        """
        from tqdm import tqdm

        path, out_dir = Path(path), Path(out_dir)
        stem = stem or path.stem
        out_dir.mkdir(parents=True, exist_ok=True)
        if out_dir.resolve() not in self._cleaned:  # once per folder: what killed runs left behind
            self._cleaned.add(out_dir.resolve())
            stale = remove_stale_temp_files(out_dir)
            if stale:
                log.info("%s: removed %d temporary file(s) left by interrupted runs (%s)", out_dir, len(stale),
                         ", ".join(f.name for f in stale[:3]) + (", ..." if len(stale) > 3 else ""))
        started = time.perf_counter()
        track = read_audio_track(path) if path.is_file() else None
        if track is None and self.encoder is not None and path.is_file():
            raise MediaError(path, "has no audio track, so there is no sound to localize (`target_text` "
                             "explains a text prompt instead)")
        audio = AudioWindows(track, self.encoder.sample_rate, self.window) if self.encoder is not None else None

        # the next batch is decoded, and the last one written, while the model works on this one
        with FrameReader(path, prepare=self.prepare, prepare_every=self.stride,
                         queue_size=max(8, self.batch_size * self.stride)) as reader, \
                tqdm(total=reader.expected_frames, unit="frame", desc=path.name, leave=False,
                     disable=not self.progress) as bar:
            output = _Output(self, reader, track, out_dir, f"{stem}{OUTPUT_SUFFIX}", bar)
            try:
                self._run(reader, audio, output)
                result = output.finish(path)
            except BaseException:
                output.abort()
                raise
        result.seconds = time.perf_counter() - started
        return result

    def _run(self, reader: FrameReader, audio: AudioWindows | None, output: "_Output") -> None:
        """Explain every ``stride``-th frame (and the last) in batches; hand frames to ``output`` in order."""
        pending: list[Frame] = []  # frames not yet handed on, in order
        batch: list[Frame] = []  # frames of `pending` waiting for the model
        prev = None  # the last explained frame handed on

        def hand_on():
            nonlocal prev
            while True:  # every pending frame up to the next explained one
                j = next((i for i, f in enumerate(pending) if f.map is not None), None)
                if j is None:
                    return
                key = pending[j]
                for f in pending[:j]:  # between two explained frames: linear interpolation
                    w = (f.index - prev.index) / (key.index - prev.index)
                    f.audio = prev.audio if w < 0.5 else key.audio  # windows are not interpolated: the nearer one
                    output.put(f, (1 - w) * prev.map + w * key.map, False)
                output.put(key, key.map, True)
                prev = key
                del pending[:j + 1]

        for frame in STAGES.iterate("wait for frames", reader):
            pending.append(frame)
            if frame.index % self.stride == 0:
                batch.append(frame)
            if len(batch) == self.batch_size:
                self.explain(batch, audio)
                batch = []
                with STAGES.stage("wait for writer"):
                    hand_on()
        if pending and pending[-1].index % self.stride != 0:
            batch.append(pending[-1])  # the last frame is always explained: nothing to extrapolate
        if batch:
            self.explain(batch, audio)
            with STAGES.stage("wait for writer"):
                hand_on()


class _Output:
    """Everything written for one video, fed in display order from a background thread.

    ``put(frame, map, explained)`` queues a frame; a thread overlays the map, encodes the frame,
    and adds it to the map store and contact sheet. The outputs open when the first frame arrives
    (its size, after rotation, sizes the video). ``finish`` renames the complete files into place.
    """

    def __init__(self, loc: Localizer, reader: FrameReader, track: AudioTrack | None, out_dir: Path, name: str, bar):
        self.loc, self.reader, self.track, self.out_dir, self.name, self.bar = loc, reader, track, out_dir, name, bar
        self.tmp = out_dir / f".{name}.tmp{os.getpid()}.mp4"
        self.writer = self.maps = None
        self.sheet = ContactSheet(legend=loc.sheet_legend(), colormap=loc.colormap) if loc.contact_sheet else None
        self.strip = loc.spectrogram_strip(track) if loc.audio_explainer is not None else None
        self.notes: list[str] = []
        self.times: list[float] = []
        self._queue: queue.Queue = queue.Queue(maxsize=reader.queue_size)  # a batch: the model never waits on us
        self._error: BaseException | None = None
        self._cancel = False
        self._thread = threading.Thread(target=self._work, name=f"encode {name}", daemon=True)
        self._thread.start()

    def put(self, frame: Frame, heat: np.ndarray, explained: bool) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((frame, heat, explained))

    def _work(self):
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is None and not self._cancel:
                try:
                    self._write(*item)
                except BaseException as e:  # raised in the caller's thread by put/finish
                    self._error = e

    def _write(self, frame: Frame, heat: np.ndarray, explained: bool) -> None:
        if self.writer is None:
            self._open(frame)
        with STAGES.stage("writer: overlay"):
            image = overlay(frame.rgb, heat, self.loc.alpha, self.loc.colormap)
            if self.strip is not None:
                image = self.strip.attach(image, frame.time, frame.audio)
        frame.rgb = None  # written: the frame's memory can go
        with STAGES.stage("writer: encode"):
            self.writer.write(image)
        if self.maps is not None:
            self.maps.add(heat, frame.time, explained)
            if explained and frame.audio is not None:
                strip = self.strip
                self.maps.add_audio(frame.audio.map, frame.time, strip.time(frame.audio.start),
                                    strip.hop / strip.sample_rate)
        self.times.append(frame.time)
        if self.sheet is not None:
            self.sheet.add(frame.index, frame.time - self.times[0], image)
        self.bar.update(1)

    def _open(self, first: Frame) -> None:
        reader, h, w = self.reader, *first.rgb.shape[:2]
        frame_h = h
        if self.strip is not None:  # the spectrogram strip below the frame
            h += self.strip.height(w, h)
        if not reader.rate_known:
            self.notes.append("no frame rate in the file: written at 25 fps")
        if w % 2 or h % 2:
            self.notes.append(f"odd frame size {w}x{h}: padded to {w + w % 2}x{h + h % 2} by repeating the edge "
                              "(H.264 in yuv420p needs even sizes)")
        sar = reader.sample_aspect_ratio
        if reader.rotation:
            self.notes.append(f"display rotation applied: turned {reader.rotation} degrees counter-clockwise "
                              f"to {w}x{frame_h}")
            if sar and reader.rotation % 180:
                sar = 1 / sar  # a quarter turn turns the pixel shape too
        offset = 0.0
        if self.track is not None:
            offset = self.track.start - first.time
            if abs(offset) > 0.05:
                self.notes.append(f"the audio starts {offset:+.3f} s from the first frame; kept in sync")
        self.writer = VideoWriter(self.tmp, w, h, reader.fps, self.track, offset, sar)
        if self.loc.save_maps:
            self.maps = MapStore(self.out_dir)

    def _join(self) -> None:
        self._queue.put(_END)
        self._thread.join()

    def finish(self, path: Path) -> VideoResult:
        self._join()
        if self._error is not None:
            raise self._error
        if self.writer is None:
            raise MediaError(path, "the video stream holds no decodable frames")
        self.writer.finish()
        frames, fps, reader = self.writer.frames, float(self.writer.fps), self.reader
        dt = np.diff(self.times)
        if len(dt) > 1 and dt.max() - dt.min() > 0.05 * dt.min() + float(reader.time_base or 0):
            self.notes.append(f"variable frame rate (frame intervals {dt.min() * 1000:.1f} to {dt.max() * 1000:.1f}"
                              f" ms): all {frames} frames kept, written at the average rate {fps:.3f} fps")
        damage = self.damage(frames)
        out = self.out_dir / f"{self.name}.mp4"
        os.replace(self.tmp, out)
        result = VideoResult(path, out, frames, fps, 0.0, notes=self.notes, damage=damage)
        if self.maps is not None:
            result.maps = self.out_dir / f"{self.name}_maps.npz"
            self.maps.save(result.maps, fps)
        if self.sheet is not None:
            result.contact_sheet = save_image(self.out_dir / f"{self.name}_sheet.png", self.sheet.render())
        return result

    def damage(self, frames: int) -> str | None:
        """One line on a damaged or truncated input (what was written, what failed), or None."""
        reader, track = self.reader, self.track
        announced = reader.stream.frames or 0  # an exact count (mp4, mov); estimates from the duration are not
        audio_error = track.error if track is not None else None
        if not (reader.error or audio_error or frames < announced):
            return None
        shown = f"{self.times[-1] - self.times[0] + 1 / float(reader.fps):.2f} s" if self.times else "0 s"
        line = f"damaged or truncated: wrote {frames}"
        if announced > frames:
            line += f" of the {announced} frames the file announces ({shown} of {reader.duration:.2f} s)"
        else:
            line += f" frames ({shown})"
        failed = [e for e in (reader.error, audio_error) if e]
        return line + ("; " + "; ".join(failed) if failed else "; the stream ends early")

    def abort(self) -> None:
        self._cancel = True
        self._join()
        if self.writer is not None:
            self.writer.abort()
        if self.maps is not None:
            self.maps.close()
        if self.tmp.exists():
            self.tmp.unlink()


def text_embedding(model, model_name: str | None, prompt: str) -> torch.Tensor:
    """CLIP's text embedding of ``prompt`` (``[D]``, float32), with the model's own tokenizer."""
    return encode_text(model, model_name or "ViT-B-16", [prompt])[0]


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    installed = Path(sys.argv[0]).name == "avlegrad-localize"  # the console script, else python -m
    ap = argparse.ArgumentParser(
        prog="avlegrad-localize" if installed else "python -m avlegrad.localize",
        description="Sound-source localization on videos: writes <OUTDIR>/<stem>_legrad.mp4 per input, each "
                    "frame with LeGrad's heatmap overlaid and the original sound.")
    ap.add_argument("inputs", nargs="+", metavar="INPUT",
                    help=f"video files, or folders searched recursively for {', '.join(VIDEO_SUFFIXES)}")
    ap.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="output folder")
    target = ap.add_argument_group("target (one of)")
    target.add_argument("--audio-encoder", metavar="NAME_OR_CKPT",
                        help="registered audio encoder or a checkpoint written by train.py")
    target.add_argument("--target-text", metavar="PROMPT",
                        help='explain a text prompt (CLIP text tower) in every frame, e.g. "a dog"')
    ap.add_argument("--model", help="open_clip model name or model-config JSON (default: the audio encoder's "
                                     "tower, else ViT-B-16)")
    ap.add_argument("--pretrained", help="open_clip tag, checkpoint file, or none (default: the audio encoder's "
                                         "tower, else openai)")
    ap.add_argument("--layer-index", type=int, default=-2, help="LeGrad layers: -n the last n blocks (default -2)")
    ap.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1] (default 0.5)")
    ap.add_argument("--colormap", default="jet", choices=sorted(COLORMAPS))
    ap.add_argument("--stride", type=int, default=1, metavar="K",
                    help="explain every K-th frame (and the last), interpolate the maps between (default 1)")
    ap.add_argument("--window", type=float, metavar="SECONDS",
                    help=f"audio window centred on each frame (default: the encoder's, else {DEFAULT_WINDOW})")
    ap.add_argument("--batch-size", type=int, default=16, help="frames per model batch (default 16)")
    ap.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda if available)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast precision (default fp32)")
    ap.add_argument("--image-size", type=int, help="model input size (default: the model's)")
    ap.add_argument("--save-maps", action="store_true",
                    help="also write <stem>_legrad_maps.npz: float16 maps [T, S, S], times, explained, fps "
                         "(with --audio-map also audio_maps [E, F, Tw], audio_times, audio_starts)")
    ap.add_argument("--contact-sheet", action="store_true",
                    help="also write <stem>_legrad_sheet.png: a grid of a few frames with their overlays")
    ap.add_argument("--audio-map", action="store_true",
                    help="also the other direction: under each frame a scrolling spectrogram strip with the "
                         "audio-side LeGrad map of its window against the frame (audio ViT encoders only)")
    ap.add_argument("--strip-seconds", type=float, metavar="SECONDS",
                    help="span of sound the --audio-map strip shows (default: twice the window)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_import_flag(ap)
    return ap


def main(argv=None) -> int:
    """Run the command; returns 0 when every input was written, 1 when any failed, 2 on a setup error."""
    problem = import_extensions(argv)  # before the parser: its help lists the registries
    if problem:
        log.error("localize: error: %s", problem)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = parser_flags(parser)  # library errors name arguments: said here as flags
    if not logging.getLogger().handlers:
        # the root at WARNING: open_clip logs every step of building a model at INFO there
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    try:
        localizer = Localizer.from_names(
            args.audio_encoder, args.target_text, args.model, args.pretrained, device=args.device,
            layer_index=args.layer_index, image_size=args.image_size, window=args.window, stride=args.stride,
            batch_size=args.batch_size, alpha=args.alpha, colormap=args.colormap, dtype=args.dtype,
            save_maps=args.save_maps, contact_sheet=args.contact_sheet, progress=not args.quiet,
            audio_map=args.audio_map, strip_seconds=args.strip_seconds)
    except (ValueError, OSError, RuntimeError) as e:
        log.error("localize: error: %s", flag_wording(str(e), flags))
        return 2

    videos, problems = find_videos(args.inputs)
    for item, problem in problems:
        log.error("FAILED %s: %s", item, problem)
    failed = len(problems)
    if localizer.encoder is not None:
        log.info("target: audio, %.2f s windows centred on each frame (%s)", localizer.window,
                 type(localizer.encoder).__name__)
    for video, stem in zip(videos, output_stems(videos)):
        try:
            r = localizer.localize(video, args.out, stem)
        except KeyboardInterrupt:
            raise
        except MediaError as e:
            log.error("FAILED %s: %s", video, flag_wording(e.reason, flags))
            failed += 1
            continue
        except Exception as e:  # one bad input must not stop the others
            log.error("FAILED %s: %s: %s", video, type(e).__name__, flag_wording(str(e), flags))
            log.debug("traceback", exc_info=True)
            failed += 1
            continue
        for note in r.notes:
            log.info("%s: %s", video, note)
        if r.damage:
            log.warning("DAMAGED %s: %s", video, r.damage)
        log.info("%s -> %s (%d frames at %.3f fps, %.1f frames/s)", video, r.output, r.frames, r.fps,
                 r.frames / max(r.seconds, 1e-9))
    done = len(videos) - (failed - len(problems))
    log.info("%d of %d inputs written to %s%s", done, len(videos) + len(problems), args.out,
             f"; {failed} failed" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    from .cli import run_command

    sys.exit(run_command(main, name="localize", interrupted="interrupted; the videos finished so far are kept"))
