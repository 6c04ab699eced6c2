"""A small synthetic localization benchmark in the VGG-SS format, generated in seconds.

Each clip is a real mp4 (H.264 video + AAC audio) ``<root>/videos/<id>.mp4`` showing 1-3
coloured shapes of different classes on a cluttered background; the audio is the sound of ONE
of them (each class has its own sound) plus light background noise, and ``<root>/vggss.json``
holds the normalised box of that sounding object, exactly in vggss.json's format, with the ids
in ``<root>/vggss_test.csv``. So ``create_dataset("synthetic", root)`` reads it with the
VGG-SS reader, and a localization method can be checked end to end without any download.

Generation is deterministic in ``seed`` and idempotent: ``<root>/synthetic.json`` records the
parameters, and a complete set made with the same parameters is left untouched.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .media import write_video

MANIFEST = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the scenes or sounds change, so old sets are regenerated
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
NOISE_LEVEL = 0.01  # std of the background noise added to every clip's audio
SOUND_PEAK = 0.5


@dataclass(frozen=True)
class SceneClass:
    shape: str  # disc, square, triangle, star, diamond
    color: tuple[int, int, int]  # RGB
    sound: str  # tone, noise_bursts, chirp, tremolo, buzz
    pitch: float  # Hz: the sound's fundamental or start frequency


CLASSES = {
    "red disc": SceneClass("disc", (220, 40, 40), "tone", 440.0),
    "blue square": SceneClass("square", (40, 80, 225), "noise_bursts", 0.0),
    "green triangle": SceneClass("triangle", (40, 190, 60), "chirp", 400.0),
    "yellow star": SceneClass("star", (235, 215, 40), "tremolo", 1320.0),
    "magenta diamond": SceneClass("diamond", (210, 50, 210), "buzz", 110.0),
}


# --------------------------------------------------------------------------------------------
# Sounds
# --------------------------------------------------------------------------------------------

def class_sound(name: str, duration: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The sound of class ``name`` (``duration`` s, float32, peak ``SOUND_PEAK``); the pitch
    jitters by a few percent from clip to clip so that no two clips are identical."""
    spec = CLASSES[name]
    t = np.arange(int(round(duration * sample_rate))) / sample_rate
    pitch = spec.pitch * rng.uniform(0.97, 1.03)
    if spec.sound == "tone":  # a steady harmonic tone
        wave = sum(a * np.sin(2 * np.pi * k * pitch * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
    elif spec.sound == "noise_bursts":  # a rattle: white noise gated at 6 bursts per second
        gate = (np.sin(2 * np.pi * 6 * t) > 0).astype(np.float64)
        wave = rng.standard_normal(t.size) * gate
    elif spec.sound == "chirp":  # rising sweeps pitch -> 4*pitch, two per second
        period = 0.5
        tp = t % period
        wave = np.sin(2 * np.pi * (pitch * tp + 3 * pitch / (2 * period) * tp ** 2))
    elif spec.sound == "tremolo":  # a high tone, amplitude-modulated at 7 Hz
        wave = np.sin(2 * np.pi * pitch * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 7 * t))
    elif spec.sound == "buzz":  # a low square-like wave, band-limited (harsh edges upset AAC)
        wave = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 16, 2))
    else:
        raise ValueError(f"class {name!r}: unknown sound kind {spec.sound!r}")
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)  # 50 ms fades: no clicks
    wave = wave * fade
    return (SOUND_PEAK * wave / max(np.abs(wave).max(), 1e-9)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------

def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Muted, smoothly varying colours, grey clutter blobs and lines, and pixel noise."""
    import cv2

    coarse = rng.uniform(70, 170, size=(4, 4, 1)) + rng.uniform(-15, 15, size=(4, 4, 3))
    image = cv2.resize(coarse.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(8, 15)):  # desaturated clutter, so the coloured objects stand out
        grey = float(rng.uniform(40, 210))
        color = tuple(float(np.clip(grey + rng.uniform(-12, 12), 0, 255)) for _ in range(3))
        x, y = (int(v) for v in rng.integers(0, size, size=2))
        if rng.random() < 0.5:
            axes = (int(rng.integers(4, size // 6)), int(rng.integers(4, size // 6)))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            x2, y2 = (int(v) for v in rng.integers(0, size, size=2))
            cv2.line(image, (x, y), (x2, y2), color, int(rng.integers(1, 4)))
    return image


def _shape_mask(shape: str, centre: tuple[int, int], radius: int, size: int) -> np.ndarray:
    import cv2

    mask = np.zeros((size, size), dtype=np.uint8)
    cx, cy = centre
    if shape == "disc":
        cv2.circle(mask, (cx, cy), radius, 1, -1)
    elif shape == "square":
        cv2.rectangle(mask, (cx - radius, cy - radius), (cx + radius, cy + radius), 1, -1)
    else:
        if shape == "triangle":
            points = [(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)]
        elif shape == "diamond":
            points = [(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)]
        elif shape == "star":
            angles = -np.pi / 2 + np.arange(10) * np.pi / 5
            radii = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
            points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]
        else:
            raise ValueError(f"unknown shape {shape!r}")
        cv2.fillPoly(mask, [np.round(np.array(points)).astype(np.int32)], 1)
    return mask.astype(bool)


def _place_objects(count: int, size: int, rng: np.random.Generator) -> list[tuple[tuple[int, int], int]]:
    """Non-overlapping (centre, radius) pairs; fewer than ``count`` if the frame is full."""
    placed = []
    for _ in range(200):
        if len(placed) == count:
            break
        radius = int(rng.integers(int(size * 0.10), int(size * 0.17) + 1))
        centre = tuple(int(v) for v in rng.integers(radius + 2, size - radius - 2, size=2))
        if all(np.hypot(centre[0] - c[0], centre[1] - c[1]) > radius + r + 4 for c, r in placed):
            placed.append((centre, radius))
    return placed


def _normalised_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return [xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------

def _clip_id(rng: np.random.Generator) -> str:
    youtube_like = "".join(ID_ALPHABET[i] for i in rng.integers(0, len(ID_ALPHABET), size=11))
    return f"{youtube_like}_{int(rng.integers(0, 300)) * 10:06d}"


def make_clip(index: int, params: dict) -> dict:
    """One clip's content: id, class, box, the frame and the waveform (nothing written)."""
    rng = np.random.default_rng([params["seed"], index])
    size, classes = params["size"], params["classes"]
    clip_id = _clip_id(rng)
    count = int(rng.integers(1, min(3, len(classes)) + 1))
    names = [classes[i] for i in rng.permutation(len(classes))[:count]]
    frame = _background(size, rng)
    sounding = None
    for name, (centre, radius) in zip(names, _place_objects(count, size, rng)):
        mask = _shape_mask(CLASSES[name].shape, centre, radius, size)
        frame[mask] = CLASSES[name].color
        if sounding is None:  # the first object placed is the one heard
            sounding = (name, _normalised_box(mask))
    frame = frame + rng.normal(0, 4, size=frame.shape)  # sensor-like texture everywhere
    frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    name, box = sounding
    audio = class_sound(name, params["duration"], params["sample_rate"], rng)
    audio = audio + rng.normal(0, NOISE_LEVEL, size=audio.shape).astype(np.float32)
    return {"file": clip_id, "class": name, "bbox": [box], "frame": frame,
            "audio": np.clip(audio, -1, 1).astype(np.float32)}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, manifest: dict | None, params: dict) -> bool:
    if not manifest or manifest.get("params") != params:
        return False
    files = [root / "vggss.json", root / "vggss_test.csv"]
    files += [root / "videos" / f"{clip_id}.mp4" for clip_id in manifest.get("clips", [])]
    return len(manifest.get("clips", [])) == params["num_clips"] and all(f.is_file() for f in files)


def generate_synthetic(root, num_clips: int = 32, seed: int = 0, size: int = 160,
                       duration: float = 3.0, fps: int = 10, sample_rate: int = 16000,
                       classes=tuple(CLASSES)) -> Path:
    """Write the synthetic benchmark under ``root`` (see the module docstring); returns root.

    ``classes``: names from :data:`CLASSES` the scenes draw from. Does nothing when root already
    holds a complete set made with the same parameters.
    """
    root = Path(root).expanduser()
    classes = list(classes)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(f"unknown synthetic classes {unknown}; valid: {', '.join(CLASSES)}")
    if size % 2 or size < 32:
        raise ValueError(f"size must be even and >= 32 (H.264 needs even sides), got {size}")
    params = {"version": GENERATOR_VERSION, "num_clips": int(num_clips), "seed": int(seed),
              "size": int(size), "duration": float(duration), "fps": int(fps),
              "sample_rate": int(sample_rate), "classes": classes}
    old = _read_manifest(root)
    if _is_complete(root, old, params):
        return root

    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # incomplete until the manifest is rewritten
    entries, ids = [], []
    n_frames = max(1, int(round(duration * fps)))
    for index in range(num_clips):
        clip = make_clip(index, params)
        while clip["file"] in ids:  # ids must be unique; a collision is astronomically rare
            clip["file"] = _clip_id(np.random.default_rng([seed, index, len(ids)]))
        write_video(root / "videos" / f"{clip['file']}.mp4", [clip["frame"]] * n_frames, fps,
                    audio=clip["audio"], sample_rate=sample_rate, threads=1)  # same seed, same bytes
        ids.append(clip["file"])
        entries.append({"file": clip["file"], "class": clip["class"], "bbox": clip["bbox"]})
    for stale in set((old or {}).get("clips", [])) - set(ids):  # clips of an older set
        (root / "videos" / f"{stale}.mp4").unlink(missing_ok=True)
    _write_text(root / "vggss.json", json.dumps(entries))
    _write_text(root / "vggss_test.csv", "".join(f"{clip_id}\n" for clip_id in ids))
    _write_text(root / MANIFEST, json.dumps({"generator": "avlegrad.data.synthetic",
                                             "params": params, "clips": ids}, indent=1))
    return root
