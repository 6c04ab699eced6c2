"""The web demo: upload a video with sound (or a picture with a sound or a text prompt), see where
the sound comes from.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_PORT, --port, --host)
    avlegrad-app --port 8080

A `Gradio <https://www.gradio.app>`_ page in the style of the official LeGrad demo (its ``app.py``):
the inputs on the left, the result on the right: the frame beside the frame with the heatmap
overlaid, for a video the heatmap video with its sound (the code path of
``python -m avlegrad.localize``: :class:`avlegrad.localize.Localizer`), and downloads (the maps as
``.npz``, the overlay). By default the offline world's shipped models explain a few generated world
clips, offered as clickable examples; ``imagebind``, ``wav2clip``, a ``train.py`` checkpoint and any
open_clip tower work where their weights are available, and say in the page what is missing where
they are not. Models load once and are reused between requests; a bad upload (unreadable, no
sound, too long) is answered with a message, never a traceback, and the app stays up.

The functions below the page (:func:`localize_video`, :func:`localize_picture`) do the work and
are what the tests call; the page only adapts them to Gradio.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .cli import add_import_flag, import_extensions
from .fileio import atomic_path
from .data.media import MediaError, load_image, video_info
from .localize import Localizer
from .visualize import COLORMAPS, overlay, save_image

log = logging.getLogger("avlegrad")

WORLD = "world"  # the offline world's shipped CLIP + audio encoder (docs/world.md)
AUTO_TOWER = "auto"  # the image tower the audio encoder was trained against
NO_AUDIO = "none"  # an image tower alone, for text prompts
DEFAULT_TOWER = "ViT-B-16:openai"  # the tower without an audio encoder, as for localize --target-text
AUDIO_ENCODER_CHOICES = (WORLD, "imagebind", "wav2clip", NO_AUDIO)  # or the path of a train.py checkpoint
MAX_SECONDS = 60.0  # longest upload accepted, in seconds (--max-seconds)
MAX_UPLOAD = "500mb"  # Gradio refuses bigger uploads in the page
MAX_RESULTS = 16  # request folders kept on disk; older ones are deleted
LOOPBACK = ("127.0.0.1", "localhost", "::1")
GAP = 6  # pixels between the frame and its overlay
MIN_HEIGHT = 320  # smaller frames are shown enlarged (by a whole factor, pixels kept sharp)


NO_ENCODER = ("no audio encoder is chosen (audio encoder: none), so there is no sound embedding; pick one under "
              "Models and method, or explain a text prompt")


class UserError(ValueError):
    """Something the person using the page can fix; its message is shown in the page as it is."""


# ----------------------------------------------------------------------------- options and models
@dataclass(frozen=True)
class Options:
    """What the page's option controls set. ``tower``: ``auto`` (the audio encoder's own image
    tower) or an open_clip ``NAME[:PRETRAINED]`` (``ViT-B-16:openai``; ``:none`` for random
    weights). ``layer_index`` is LeGrad's (``-n``: the last n blocks, ``0``: all). ``stride``:
    explain every k-th video frame and interpolate between."""
    audio_encoder: str = WORLD
    tower: str = AUTO_TOWER
    method: str = "legrad"
    layer_index: int = -2
    device: str = "cpu"
    stride: int = 1
    alpha: float = 0.5
    colormap: str = "jet"
    max_seconds: float = MAX_SECONDS

    def checked(self) -> "Options":
        from .explain import list_explainers

        if self.method not in list_explainers():
            raise UserError(f"unknown method {self.method!r}; choose from {', '.join(list_explainers())}")
        if self.colormap not in COLORMAPS:
            raise UserError(f"unknown colormap {self.colormap!r}; choose from {', '.join(COLORMAPS)}")
        try:
            layer_index, stride = int(self.layer_index), int(self.stride)
        except (TypeError, ValueError):
            raise UserError(f"layers and stride must be whole numbers, got {self.layer_index!r} and "
                            f"{self.stride!r}") from None
        if stride < 1:
            raise UserError(f"stride must be at least 1, got {stride}")
        if not 0 <= float(self.alpha) <= 1:
            raise UserError(f"heatmap opacity must be in [0, 1], got {self.alpha}")
        device = (self.device or "cpu").strip()
        try:
            torch.device(device)
        except RuntimeError:
            raise UserError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:1") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {device!r}: no CUDA GPU is available here; use cpu")
        return replace(self, layer_index=layer_index, stride=stride, alpha=float(self.alpha), device=device,
                       audio_encoder=(self.audio_encoder or WORLD).strip(), tower=(self.tower or AUTO_TOWER).strip())


@dataclass
class Models:
    """A loaded pair: the CLIP whose image tower is explained, its preprocessing config, the name
    its tokenizer goes by, and the audio encoder in its space (None where only text is used)."""
    clip: torch.nn.Module
    preprocess_cfg: dict
    model_name: str
    encoder: torch.nn.Module | None
    description: str


def _split_tower(tower: str) -> tuple[str, str]:
    name, _, pretrained = tower.partition(":")
    return name.strip(), (pretrained.strip() or "openai")


def load_models(audio_encoder: str = WORLD, tower: str = AUTO_TOWER, device="cpu") -> Models:
    """The models behind a request, loaded as ``eval.py``/``localize`` load them.

    ``audio_encoder``: ``world`` (the shipped offline models, ``avlegrad.world_clip``), a registered
    name (``imagebind``, ``wav2clip``), a ``train.py`` checkpoint, or ``none`` (the tower alone, for
    text prompts); ``tower``: ``auto`` (the encoder's own; ViT-B-16:openai without one) or an
    open_clip ``NAME[:PRETRAINED]`` (NAME may be a model-config JSON). Raises :class:`UserError`
    with a one-line reason (weights that cannot be found name where to put them; a tower that is
    not the encoder's is refused).
    """
    from .download import DownloadError
    from .models import WeightsUnavailableError, load_pair
    from .world_clip import WORLD_CHECKPOINTS, WORLD_CLIP_NAME, load_world_models

    device = torch.device(device)
    try:
        if audio_encoder == WORLD:
            if tower not in (AUTO_TOWER, WORLD):
                raise UserError(f"the world audio encoder pairs only with the world CLIP; set the image tower to "
                                f"{AUTO_TOWER!r} (got {tower!r})")
            if not (WORLD_CHECKPOINTS / "audio.pt").is_file():
                raise UserError(f"the world models are missing from {WORLD_CHECKPOINTS} (a fresh clone ships them)")
            clip, cfg, encoder = load_world_models(device=device)
            return Models(clip, cfg, WORLD_CLIP_NAME, encoder.eval(), "the offline world's CLIP + audio encoder")
        if audio_encoder.lower() == NO_AUDIO:
            name, pretrained = _split_tower(DEFAULT_TOWER if tower == AUTO_TOWER else tower)
            clip, cfg, name, _, _ = load_pair(None, name, pretrained, device=device)
            return Models(clip, cfg, name, None, f"the {name} image tower (no audio encoder)")
        # auto: the encoder's own tower; else NAME[:PRETRAINED], refused when it is not the encoder's
        name, pretrained = _split_tower(tower) if tower != AUTO_TOWER else (None, None)
        clip, cfg, name, _, encoder = load_pair(audio_encoder, name, pretrained, device=device)
        return Models(clip, cfg, name, encoder, f"{audio_encoder} with the {name} image tower")
    except UserError:
        raise
    except (ValueError, OSError, RuntimeError, DownloadError, WeightsUnavailableError) as e:
        # CheckpointError, a refused pair, missing weights (offline: the URL and where to put the file)
        reason = " ".join(line.strip() for line in str(e).splitlines())  # one line in the page
        raise UserError(f"cannot load {audio_encoder!r} / {tower!r}: {reason}") from None


class ModelCache:
    """Models load once and are reused between requests; the ``size`` most recently used pairs
    are kept (each can be GBs), and one request loads at a time."""

    def __init__(self, size: int = 2, loader=load_models):
        self.size, self.loader = size, loader
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, opts: Options) -> Models:
        key = (opts.audio_encoder, opts.tower, opts.device)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            models = self.loader(opts.audio_encoder, opts.tower, opts.device)
            self._models[key] = models
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return models


# ----------------------------------------------------------------------------- results
@dataclass
class Result:
    """What a request shows: ``image`` (frame | overlay, ``[H, W', 3]`` uint8), the heatmap video
    (videos only), the files offered for download, and a one-paragraph message."""
    image: np.ndarray
    video: Path | None = None
    files: list[Path] = field(default_factory=list)
    message: str = ""


def side_by_side(frame: np.ndarray, heatmap, alpha: float = 0.5, colormap: str = "jet",
                 min_height: int = MIN_HEIGHT) -> np.ndarray:
    """``[H, W, 3]`` frame and the same frame with ``heatmap`` (any size, in [0, 1]) overlaid, side
    by side with a white gap: ``[kH, 2kW + 6, 3]`` uint8, where a frame lower than ``min_height``
    is enlarged ``k = ceil(min_height / H)`` times (nearest neighbour) so that small clips can be
    seen; the map is resized bilinearly to the frame (``visualize.overlay``)."""
    import cv2

    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    k = -(-min_height // frame.shape[0]) if frame.shape[0] < min_height else 1
    if k > 1:
        frame = cv2.resize(frame, (frame.shape[1] * k, frame.shape[0] * k), interpolation=cv2.INTER_NEAREST)
    gap = np.full((frame.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([frame, gap, overlay(frame, heatmap, alpha, colormap)], axis=1)


def _save_npz(path: Path, **arrays) -> Path:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def _stem(path) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(path).stem)[:60]
    return stem or "input"


def _media_error(e: MediaError) -> UserError:
    return UserError(f"{Path(e.path).name}: {e.reason}" if getattr(e, "path", None) else str(e))


def _check_sound(wave: np.ndarray, name: str, sample_rate: int, max_seconds: float) -> None:
    from .data.media import SILENCE_PEAK

    seconds = len(wave) / sample_rate
    if seconds > max_seconds:
        raise UserError(f"{name}: the sound lasts {seconds:.1f} s, longer than this app's limit of {max_seconds:g} s; "
                        f"upload a shorter piece")
    if not np.isfinite(wave).all():
        raise UserError(f"{name}: the sound holds NaN or infinite samples")
    if wave.size == 0 or float(np.abs(wave).max()) < SILENCE_PEAK:
        raise UserError(f"{name}: the sound is silent, so there is nothing to localize")


def text_target(models: Models, prompt: str) -> torch.Tensor:
    """The CLIP text embedding ``[D]`` of a prompt, with the tower's own tokenizer."""
    from .models import encode_text

    prompt = (prompt or "").strip()
    if not prompt:
        raise UserError("type a text prompt (e.g. 'a red disc') to explain the picture with")
    if not hasattr(models.clip, "encode_text"):
        raise UserError(f"{models.description} has no text tower to embed a prompt with")
    return encode_text(models.clip, models.model_name, [prompt])[0]


def localize_picture(image_path, opts: Options, models: Models, out_dir, audio_path=None,
                     prompt: str | None = None) -> Result:
    """Explain one picture with the embedding of a sound file (``audio_path``, the whole sound
    through the audio encoder, as ``eval.py`` embeds a clip's sound) or of a text ``prompt``.

    The picture is squashed to the tower's input size without cropping (``models.image_tensor``,
    as the benchmarks do); the map comes back at that size and is overlaid on the picture at its
    own size. Writes ``<stem>_maps.npz`` (``map`` float32 ``[S, S]`` in [0, 1], ``method``,
    ``target``) and ``<stem>_overlay.png`` (frame | overlay) into ``out_dir``.
    Raises :class:`UserError` for an unreadable picture or sound, a silent or too long sound.
    """
    from .explain import create_explainer
    from .models import image_tensor

    if image_path is None:
        raise UserError("upload a picture first")
    if (audio_path is None) == (prompt is None):
        raise UserError("give the picture a sound file or a text prompt")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        frame = load_image(image_path)
    except MediaError as e:
        raise _media_error(e) from None
    device = next(models.clip.parameters()).device
    if audio_path is not None:
        if models.encoder is None:
            raise UserError(NO_ENCODER)
        from .data.media import load_audio

        name = Path(audio_path).name
        try:
            wave, _ = load_audio(audio_path, sample_rate=models.encoder.sample_rate, mono=True)
        except MediaError as e:
            raise _media_error(e) from None
        _check_sound(wave, name, models.encoder.sample_rate, opts.max_seconds)
        if len(wave) < models.encoder.min_samples:
            raise UserError(f"{name}: {len(wave) / models.encoder.sample_rate:.2f} s of sound is too short for "
                            f"{type(models.encoder).__name__} (at least {models.encoder.min_samples} samples)")
        with torch.no_grad():
            target = models.encoder(torch.from_numpy(wave)[None].to(models.encoder.device))[0].float()
        what = f"the sound of {name}"
    else:
        target = text_target(models, prompt)
        what = f"the prompt {prompt.strip()!r}"
    kwargs = {"layer_index": opts.layer_index} if opts.method == "legrad" else {}
    try:
        explainer = create_explainer(opts.method, models.clip, **kwargs)
        images = image_tensor(frame, models.preprocess_cfg)[None].to(device)
        heat = explainer(images, target[None].to(device))[0].cpu().numpy()
    except ValueError as e:  # e.g. a layer index the tower does not have
        raise UserError(f"{opts.method}: {e}") from None
    stem = _stem(image_path)
    picture = side_by_side(frame, heat, opts.alpha, opts.colormap)
    maps = _save_npz(out_dir / f"{stem}_maps.npz", map=heat.astype(np.float32), method=np.str_(opts.method),
                     target=np.str_(what))
    png = save_image(out_dir / f"{stem}_overlay.png", picture)
    return Result(picture, None, [maps, png], f"{opts.method} map of {what} ({models.description}).")


def _frame_at(path, index: int) -> np.ndarray | None:
    """Frame ``index`` of a video as the localizer saw it (display rotation applied)."""
    from .localize import FrameReader

    with FrameReader(path) as reader:
        for frame in reader:
            if frame.index == index:
                return frame.rgb
    return None


def localize_video(video_path, opts: Options, models: Models, out_dir) -> Result:
    """Explain every frame of a video with its sound: :class:`avlegrad.localize.Localizer` (the
    ``python -m avlegrad.localize`` code path) writes ``<stem>_legrad.mp4`` (the heatmap video with
    the original sound) and ``<stem>_legrad_maps.npz`` (float16 ``maps [T, S, S]``, ``times``,
    ``explained``, ``fps``) into ``out_dir``; the picture shown is the middle frame | its overlay
    (also saved as ``<stem>_overlay.png``). Progress goes through tqdm (the page tracks it).

    Raises :class:`UserError` for an unreadable file, a file without a video stream or without
    sound, or one longer than ``opts.max_seconds``.
    """
    if video_path is None:
        raise UserError("upload a video first")
    if models.encoder is None:
        raise UserError(NO_ENCODER)
    name = Path(video_path).name
    try:
        info = video_info(video_path)
    except MediaError as e:
        raise _media_error(e) from None
    if not info["has_video"]:
        raise UserError(f"{name}: the file has no video stream; for a sound alone use the picture + sound tab")
    if not info["has_audio"]:
        raise UserError(f"{name}: the video has no audio track, so there is no sound to localize "
                        f"(the picture + text tab explains a prompt instead)")
    if info["duration"] > opts.max_seconds:
        raise UserError(f"{name}: the video lasts {info['duration']:.1f} s, longer than this app's limit of "
                        f"{opts.max_seconds:g} s; trim it, or start the app with a larger --max-seconds")
    out_dir = Path(out_dir)
    try:
        localizer = Localizer(models.clip, models.preprocess_cfg, models.encoder, method=opts.method,
                              layer_index=opts.layer_index, stride=opts.stride, batch_size=8, alpha=opts.alpha,
                              colormap=opts.colormap, save_maps=True, progress=True)
        result = localizer.localize(video_path, out_dir, _stem(video_path))
    except MediaError as e:
        raise _media_error(e) from None
    except ValueError as e:
        raise UserError(f"{name}: {e}") from None
    with np.load(result.maps) as z:
        times, maps = z["times"], z["maps"]
        middle = int(np.abs(times - (times[0] + times[-1]) / 2).argmin())
        heat = maps[middle].astype(np.float32)
    frame = _frame_at(video_path, middle)
    picture = side_by_side(frame, heat, opts.alpha, opts.colormap)
    png = save_image(out_dir / f"{_stem(video_path)}_overlay.png", picture)
    notes = "".join(f" {n}." for n in result.notes)
    message = (f"{opts.method} maps of {result.frames} frames at {result.fps:.2f} fps in {result.seconds:.1f} s "
               f"({models.description}); the picture is frame {middle} at {times[middle] - times[0]:.2f} s.{notes}")
    return Result(picture, result.output, [result.maps, result.output, png], message)


# ----------------------------------------------------------------------------- examples
def ensure_examples(folder, count: int = 3) -> dict:
    """A few world clips as the page's examples, generated into ``folder`` when absent (seconds):
    ``{"videos": [mp4...], "pictures": [(png, wav, prompt)...]}``. The clips are the first of the
    held-out benchmark's seed (0, never trained on); their middle frame and sound are written
    beside them for the picture tabs, the prompt names the sounding object ("a red disc")."""
    import json

    from .data.media import load_audio, load_frame, write_audio
    from .data.synthetic import generate_synthetic

    folder = Path(folder)
    root = generate_synthetic(folder / "clips", num_clips=count, seed=0)
    entries = json.loads((root / "vggss.json").read_text())
    videos, pictures = [], []
    for entry in entries:
        video = root / "videos" / f"{entry['file']}.mp4"
        jpg, wav = folder / f"{entry['file']}.png", folder / f"{entry['file']}.wav"
        if not jpg.is_file():
            save_image(jpg, load_frame(video))
        if not wav.is_file():
            write_audio(wav, *load_audio(video))
        videos.append(video)
        pictures.append((jpg, wav, f"a {entry['class']}"))
    return {"videos": videos, "pictures": pictures}


def _results_folder(work: Path) -> Path:
    """A new folder for one request's files; the oldest beyond :data:`MAX_RESULTS` are deleted."""
    work.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in work.iterdir() if p.is_dir() and p.name.startswith("run-")),
                 key=lambda p: p.stat().st_mtime)
    for p in old[:max(0, len(old) - MAX_RESULTS + 1)]:
        shutil.rmtree(p, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=work))


# ----------------------------------------------------------------------------- the page
INTRO = """# avlegrad: where does the sound come from?
LeGrad explains a CLIP image tower's embedding of each frame with respect to the **audio
embedding** of the clip's sound (or a text prompt's embedding): the bright regions are what the
model links to the sound. Upload a video with sound, or a picture with a sound file or a text
prompt, or click an example. The default models are the offline world's, trained on generated
clips of coloured shapes with their own sounds (`docs/world.md`): on real videos they mean nothing
(and their text prompts do little better than a centred blob); pick `imagebind`, `wav2clip` or a
`train.py` checkpoint under *Models and method* for those."""


def _devices() -> list[str]:
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def build_app(cache: ModelCache | None = None, work_dir=None, examples_dir=None, max_seconds: float = MAX_SECONDS):
    """The Gradio Blocks of the demo (not launched). ``work_dir``: where each request's files go
    (default: a temporary folder); ``examples_dir``: where the example clips are generated
    (default: ``<avlegrad cache>/app_examples``; ``False`` for none)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .download import cache_root
    from .explain import list_explainers

    cache = cache or ModelCache()
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="avlegrad-app-"))
    examples = {"videos": [], "pictures": []}
    examples_dir = None if examples_dir is False else Path(examples_dir or cache_root() / "app_examples")
    if examples_dir is not None:
        try:
            examples = ensure_examples(examples_dir)
        except (OSError, ValueError, MediaError) as e:  # the page works without them
            log.warning("no examples: %s", e)

    def run(kind, progress, *args):
        *inputs, audio_encoder, tower, method, layers, device, stride, alpha = args
        started = time.perf_counter()
        try:
            opts = Options(audio_encoder, tower, method, layers, device, stride, alpha,
                           max_seconds=max_seconds).checked()
            progress(0, desc="loading the models")
            models = cache.get(opts)
            progress(0.05, desc="explaining")
            out = _results_folder(work)
            if kind == "video":
                r = localize_video(inputs[0], opts, models, out)
            elif kind == "sound":
                r = localize_picture(inputs[0], opts, models, out, audio_path=inputs[1])
            else:
                r = localize_picture(inputs[0], opts, models, out, prompt=inputs[1] or "")
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # never a traceback in the page; the app stays up
            log.exception("request failed")
            reason = " ".join(str(e).split())
            raise gr.Error(f"{type(e).__name__}: {reason}", print_exception=False) from None
        message = f"{r.message} Total {time.perf_counter() - started:.1f} s."
        return r.image, (str(r.video) if r.video else None), [str(f) for f in r.files], message

    def run_video(video, *opts, progress=gr.Progress(track_tqdm=True)):
        return run("video", progress, video, *opts)

    def run_sound(image, sound, *opts, progress=gr.Progress(track_tqdm=True)):
        if sound is None:
            raise gr.Error("upload a sound file with the picture", print_exception=False)
        return run("sound", progress, image, sound, *opts)

    def run_text(image, prompt, *opts, progress=gr.Progress(track_tqdm=True)):
        return run("text", progress, image, prompt, *opts)

    # delete_cache: Gradio's copies of results older than an hour go, checked hourly (disk stays bounded)
    with gr.Blocks(title="avlegrad: LeGrad sound-source localization", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                with gr.Tabs():
                    with gr.Tab("Video with sound", id="video"):
                        video_in = gr.Video(label="video with sound", sources=["upload"], height=320,
                                            elem_id="video-input")
                        video_button = gr.Button("Localize the sound", variant="primary", elem_id="run-video")
                        if examples["videos"]:
                            gr.Examples([[str(v)] for v in examples["videos"]], [video_in], label="world clips")
                    with gr.Tab("Picture + sound", id="sound"):
                        picture_in = gr.Image(label="picture", type="filepath", sources=["upload"],
                                              elem_id="picture-input")
                        sound_in = gr.Audio(label="sound", type="filepath", sources=["upload"], elem_id="sound-input")
                        sound_button = gr.Button("Localize the sound", variant="primary", elem_id="run-sound")
                        if examples["pictures"]:
                            gr.Examples([[str(p), str(w)] for p, w, _ in examples["pictures"]],
                                        [picture_in, sound_in], label="world pictures and their sounds")
                    with gr.Tab("Picture + text", id="text"):
                        picture_text_in = gr.Image(label="picture", type="filepath", sources=["upload"],
                                                   elem_id="picture-text-input")
                        prompt_in = gr.Textbox(label="text prompt", placeholder="a red disc", elem_id="prompt")
                        text_button = gr.Button("Localize the prompt", variant="primary", elem_id="run-text")
                        if examples["pictures"]:
                            gr.Examples([[str(p), t] for p, _, t in examples["pictures"]],
                                        [picture_text_in, prompt_in], label="world pictures")
                with gr.Accordion("Models and method", open=False):
                    audio_encoder = gr.Dropdown(
                        list(AUDIO_ENCODER_CHOICES), value=WORLD, allow_custom_value=True, label="audio encoder",
                        info="world: the shipped offline models; imagebind / wav2clip (weights downloaded on "
                             "first use); none: the image tower alone (text prompts); or type the path of a "
                             "train.py checkpoint")
                    tower = gr.Textbox(AUTO_TOWER, label="image tower",
                                       info="auto: the one the audio encoder was trained against (ViT-B-16:openai "
                                            "without one); or open_clip NAME:PRETRAINED, e.g. ViT-L-14:openai")
                    method = gr.Dropdown(list_explainers(), value="legrad", label="method")
                    layers = gr.Number(-2, precision=0, label="LeGrad layers",
                                       info="-n: the last n blocks (default -2), 0: all blocks")
                    device = gr.Dropdown(_devices(), value=default_device(), allow_custom_value=True,
                                         label="device")
                    stride = gr.Slider(1, 16, value=1, step=1, label="video stride",
                                       info="explain every k-th frame and interpolate between (long videos)")
                    alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="heatmap opacity")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                image_out = gr.Image(label="frame | heatmap", type="numpy", format="png", interactive=False,
                                     elem_id="result-image")
                video_out = gr.Video(label="heatmap video with its sound", interactive=False, height=360,
                                     elem_id="result-video")
                files_out = gr.File(label="downloads: maps (.npz), overlay", file_count="multiple", interactive=False,
                                    elem_id="result-files")
        options = [audio_encoder, tower, method, layers, device, stride, alpha]
        outputs = [image_out, video_out, files_out, status]
        video_button.click(run_video, [video_in, *options], outputs, concurrency_limit=1)
        sound_button.click(run_sound, [picture_in, sound_in, *options], outputs, concurrency_limit=1)
        text_button.click(run_text, [picture_text_in, prompt_in, *options], outputs, concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    # the folders the page may serve files from (launch(allowed_paths=...))
    demo.avlegrad_paths = [str(work)] + ([str(examples_dir)] if examples["videos"] else [])
    demo.avlegrad_work_dir = work
    return demo


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="avlegrad-app", description="The avlegrad web demo (Gradio), served on "
                                 "a loopback address: open the printed URL in a browser.")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=None,
                    help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                    help=f"longest video or sound accepted (default {MAX_SECONDS:g} s)")
    ap.add_argument("--no-examples", action="store_true", help="do not generate the example world clips")
    add_import_flag(ap)
    return ap


def main(argv=None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    problem = import_extensions(argv)  # before the parser and the model lists
    if problem:
        log.error("avlegrad-app: error: %s", problem)
        return 2
    args = build_parser().parse_args(argv)
    if args.host not in LOOPBACK:
        log.error("avlegrad-app: error: --host %s is not a loopback address (%s): the demo is not made to be "
                  "served to a network", args.host, ", ".join(LOOPBACK))
        return 2
    port = args.port
    if port is None:
        env = os.environ.get("GRADIO_SERVER_PORT")
        try:
            port = int(env) if env else 7860
        except ValueError:
            log.error("avlegrad-app: error: GRADIO_SERVER_PORT=%r is not a port number", env)
            return 2
    if not 0 < port < 65536:
        log.error("avlegrad-app: error: port %d is not in 1..65535", port)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        log.error("avlegrad-app: error: the web demo needs Gradio: pip install -e '.[app]' "
                  "(or pip install 'gradio>=6.31')")
        return 2
    cache = ModelCache()
    try:  # the default models before the first request, so that it answers in a second
        cache.get(Options(device=default_device()).checked())
    except UserError as e:  # the page still serves the others, and says so when the defaults are asked for
        log.warning("the default models could not be loaded: %s", e)
    demo = build_app(cache, examples_dir=False if args.no_examples else None, max_seconds=args.max_seconds)
    try:
        demo.launch(server_name=args.host, server_port=port, share=False, ssr_mode=False, show_error=True,
                    footer_links=[], allowed_paths=demo.avlegrad_paths, max_file_size=MAX_UPLOAD)
    except OSError as e:  # the port is taken
        log.error("avlegrad-app: error: %s", e)
        return 2
    finally:
        shutil.rmtree(demo.avlegrad_work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
