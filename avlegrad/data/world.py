"""A small procedural audio-visual world in which sound-source localization can be learned offline.

A scene is a picture of 1-3 objects of distinct classes on a cluttered background. Every class
has its own shape, colour and surface texture, and its own synthesised sound (a harmonic tone,
noise bursts, chirps, a tremolo, a buzz, a knocking rhythm, a warble). Objects have random sizes,
aspect ratios, tilts and positions; they overlap (later objects hide parts of earlier ones) and
may be cut by the frame border. A clip's sound is that of ONE visible object, at a random
loudness, mixed with coloured background noise and, sometimes, a quieter off-screen distractor
(a class that is not in the picture). The ground truth is the box of the sounding object's
visible pixels; a caption names every visible object ("a red disc and a blue square"), for
training a CLIP on the world's pictures.

Everything is a deterministic function of the ``numpy.random.Generator`` passed in.
:mod:`avlegrad.data.synthetic` writes such clips as a VGG-SS-format benchmark;
:mod:`avlegrad.world_clip` trains a tiny CLIP on the pictures and captions.

Guarantees of every scene, relied on by the benchmark's tests: the sounding object's box is the
bounding box of its visible pixels, its centre lies on the object, the object covers at least
``MIN_BOX_FILL`` of its box and at least ``MIN_SOUNDING_VISIBLE`` of its in-frame area is
visible; colours are within ``COLOR_JITTER + TEXTURE_AMPLITUDE`` (per channel, before pixel
noise) of the class colour; the background is desaturated enough never to match a class colour.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SOUND_PEAK = 0.5  # peak of a class sound before its clip's gain
COLOR_JITTER = 8  # per-object colour offset, per channel
TEXTURE_AMPLITUDE = 14  # texture patterns add up to +-this to every channel
PIXEL_NOISE = 4.0  # std of the sensor-like noise over the whole picture
MIN_BOX_FILL = 0.4  # the sounding object's visible pixels / its box
MIN_SOUNDING_VISIBLE = 0.6  # visible share of the sounding object's in-frame area
MIN_OTHER_VISIBLE = 0.4  # visible share of every other object
MIN_SOUNDING_BOX_AREA = 0.28  # the sounding box covers at least this share of the picture
MAX_OBJECTS = 3


@dataclass(frozen=True)
class ObjectClass:
    shape: str  # disc, square, triangle, star, diamond, cross, hexagon
    color: tuple[int, int, int]  # RGB
    sound: str  # tone, noise_bursts, chirp, tremolo, buzz, knock, warble
    pitch: float  # Hz: the sound's fundamental, start or carrier frequency (0: unpitched)
    texture: str = "plain"  # plain, stripes, checks, dots, waves


# Colours differ by > 60 in some channel between any two classes, and each spans >= 150 between
# its channels, so neither another class nor the grey-ish background is mistaken for it.
CLASSES = {
    "red disc": ObjectClass("disc", (220, 40, 40), "tone", 440.0, "plain"),
    "blue square": ObjectClass("square", (40, 80, 225), "noise_bursts", 0.0, "checks"),
    "green triangle": ObjectClass("triangle", (40, 190, 60), "chirp", 400.0, "stripes"),
    "yellow star": ObjectClass("star", (235, 215, 40), "tremolo", 1320.0, "plain"),
    "magenta diamond": ObjectClass("diamond", (210, 50, 210), "buzz", 110.0, "dots"),
    "orange cross": ObjectClass("cross", (245, 140, 30), "knock", 150.0, "stripes"),
    "cyan hexagon": ObjectClass("hexagon", (40, 200, 210), "warble", 800.0, "waves"),
}


# --------------------------------------------------------------------------------------------
# Sounds
# --------------------------------------------------------------------------------------------

def class_sound(name: str, duration: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The sound of class ``name`` (``duration`` s, float32, peak ``SOUND_PEAK``); the pitch
    jitters by a few percent and rhythms start at a random phase, so no two clips are alike."""
    spec = CLASSES[name]
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    pitch = spec.pitch * rng.uniform(0.97, 1.03)
    shift = rng.uniform(0, 1)  # phase of the rhythm, in seconds
    if spec.sound == "tone":  # a steady harmonic tone
        wave = sum(a * np.sin(2 * np.pi * k * pitch * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
    elif spec.sound == "noise_bursts":  # a rattle: white noise gated at 6 bursts per second
        gate = (np.sin(2 * np.pi * 6 * (t + shift)) > 0).astype(np.float64)
        wave = rng.standard_normal(n) * gate
    elif spec.sound == "chirp":  # rising sweeps pitch -> 4*pitch, two per second
        period = 0.5
        tp = (t + shift) % period
        wave = np.sin(2 * np.pi * (pitch * tp + 3 * pitch / (2 * period) * tp ** 2))
    elif spec.sound == "tremolo":  # a high tone, amplitude-modulated at 7 Hz
        wave = np.sin(2 * np.pi * pitch * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 7 * (t + shift)))
    elif spec.sound == "buzz":  # a low square-like wave, band-limited (harsh edges upset AAC)
        wave = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 16, 2))
    elif spec.sound == "knock":  # a rhythm: knock-knock ... knock, one bar per second
        wave = np.zeros(n)
        for bar in range(-1, int(np.ceil(duration)) + 1):
            for beat in (0.0, 0.25, 0.625):
                onset = int(round((bar + beat + shift) * sample_rate))
                length = int(0.18 * sample_rate)
                lo, hi = max(onset, 0), min(onset + length, n)
                if lo >= hi:
                    continue
                tt = (np.arange(lo, hi) - onset) / sample_rate
                hit = np.exp(-tt / 0.04) * np.sin(2 * np.pi * pitch * tt)
                hit += 0.4 * np.exp(-tt / 0.006) * rng.standard_normal(hi - lo)  # the click
                wave[lo:hi] += hit
    elif spec.sound == "warble":  # a frequency-modulated tone: pitch +- 15% at 5 Hz
        wave = np.sin(2 * np.pi * pitch * t + 0.15 * pitch / 5 * np.sin(2 * np.pi * 5 * (t + shift)))
    else:
        raise ValueError(f"class {name!r}: unknown sound kind {spec.sound!r}")
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)  # 50 ms fades: no clicks
    wave = wave * fade
    return (SOUND_PEAK * wave / max(np.abs(wave).max(), 1e-9)).astype(np.float32)


def background_noise(num_samples: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise of standard deviation ``level``: white noise through a random one-pole
    low-pass (from nearly white to a dull rumble)."""
    from scipy.signal import lfilter

    pole = rng.uniform(0.0, 0.97)
    noise = lfilter([1.0], [1.0, -pole], rng.standard_normal(num_samples))
    return (level * noise / max(noise.std(), 1e-9)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------

def _unit_polygon(shape: str) -> np.ndarray:
    """The shape's outline in [-1, 1]^2 (x right, y down), ``[P, 2]``."""
    if shape == "disc":
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "square":
        return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64)
    if shape == "triangle":
        return np.array([(0, -1), (1, 1), (-1, 1)], dtype=np.float64)
    if shape == "diamond":
        return np.array([(0, -1), (1, 0), (0, 1), (-1, 0)], dtype=np.float64)
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    if shape == "hexagon":
        angles = np.arange(6) * np.pi / 3
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "cross":
        w = 0.38
        return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                         (-w, w), (-1, w), (-1, -w), (-w, -w)], dtype=np.float64)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(kind: str, xx: np.ndarray, yy: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A pattern in [-1, 1] on pixel coordinates ``xx, yy`` (relative to the object's centre);
    ``scale``: the object's size in pixels, so a pattern looks the same on a big or small object."""
    period = max(scale / 3.0, 3.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "plain":
        return np.zeros_like(xx)
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        return np.sign(np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase))
    if kind == "checks":
        return np.sign(np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period + phase))
    if kind == "dots":
        gx = (xx / period + phase) % 1.0 - 0.5
        gy = (yy / period + phase) % 1.0 - 0.5
        return np.where(gx ** 2 + gy ** 2 < 0.06, 1.0, -0.4)
    if kind == "waves":
        return np.sin(2 * np.pi * (yy + 0.25 * period * np.sin(2 * np.pi * xx / period)) / period + phase)
    raise ValueError(f"unknown texture {kind!r}")


def render_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered backdrop ``[size, size, 3]`` float: muted, smoothly varying colours, greyish
    blobs, boxes, polygons, lines and patches of stripes. Channels of any pixel stay within 60 of
    each other, so the background never takes a class's colour."""
    import cv2

    coarse = rng.uniform(70, 170, size=(4, 4, 1)) + rng.uniform(-15, 15, size=(4, 4, 3))
    image = cv2.resize(coarse.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)

    def muted():
        grey = float(rng.uniform(40, 215))
        spread = 25 if rng.random() < 0.7 else 45
        return tuple(float(np.clip(grey + rng.uniform(-spread, spread) / 2, 0, 255)) for _ in range(3))

    for _ in range(int(rng.integers(10, 22))):
        kind = rng.random()
        x, y = (int(v) for v in rng.integers(0, size, size=2))
        extent = int(rng.integers(max(size // 30, 2), max(size // 5, 3)))
        if kind < 0.3:
            axes = (extent, int(rng.integers(max(size // 30, 2), max(size // 5, 3))))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, muted(), -1)
        elif kind < 0.5:
            poly = rng.uniform(-1, 1, size=(int(rng.integers(3, 7)), 2)) * extent + (x, y)
            cv2.fillPoly(image, [np.round(poly).astype(np.int32)], muted())
        elif kind < 0.65:
            w, h = (int(v) for v in rng.integers(max(size // 30, 2), max(size // 4, 3), size=2))
            cv2.rectangle(image, (x, y), (x + w, y + h), muted(), -1)
        elif kind < 0.75:  # a patch of grey stripes
            w, h = (int(v) for v in rng.integers(max(size // 10, 2), max(size // 3, 3), size=2))
            patch = image[y:y + h, x:x + w]
            if patch.size:
                period = float(rng.uniform(3, 8))
                stripes = np.sin(2 * np.pi * np.arange(patch.shape[1]) / period) > 0
                patch[:, stripes] = patch[:, stripes] * 0.8 + 0.2 * float(rng.uniform(40, 215))
        else:
            x2, y2 = (int(v) for v in rng.integers(0, size, size=2))
            cv2.line(image, (x, y), (x2, y2), muted(), int(rng.integers(1, max(size // 60, 2) + 2)))
    return image


@dataclass
class SceneObject:
    name: str  # class name, a key of CLASSES
    box: list[float]  # normalised [x0, y0, x1, y1] of its VISIBLE pixels
    visible: float  # share of its in-frame area that is not hidden by objects in front
    mask: np.ndarray = field(repr=False)  # [size, size] bool, visible pixels


@dataclass
class Scene:
    frame: np.ndarray  # [size, size, 3] uint8 RGB
    objects: list[SceneObject]  # in drawing order (later ones in front)
    sounding: int  # index into objects

    @property
    def sounding_object(self) -> SceneObject:
        return self.objects[self.sounding]

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]


def _object_mask(shape: str, size: int, rng: np.random.Generator, center_spread: float | None = None) -> np.ndarray:
    """A random placement of ``shape``: size, aspect ratio, tilt and position (it may be cut by
    the frame border by up to about a third of its width). The centre is uniform over the
    allowed range, or, with ``center_spread``, normal about the picture's centre with that
    standard deviation (a share of the side), clipped to the range."""
    import cv2

    half = rng.uniform(0.25, 0.42) * size
    aspect = float(np.exp(rng.uniform(-0.45, 0.45)))
    hw, hh = half * np.sqrt(aspect), half / np.sqrt(aspect)
    tilt = 0.0 if shape == "disc" and abs(aspect - 1) < 0.05 else np.deg2rad(rng.uniform(-20, 20))
    if center_spread is None:
        cx = rng.uniform(0.35 * hw, size - 0.35 * hw)
        cy = rng.uniform(0.35 * hh, size - 0.35 * hh)
    else:
        cx, cy = size / 2 + rng.normal(0.0, center_spread * size, size=2)
        cx, cy = np.clip(cx, 0.35 * hw, size - 0.35 * hw), np.clip(cy, 0.35 * hh, size - 0.35 * hh)
    points = _unit_polygon(shape) * (hw, hh)
    rotation = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    points = points @ rotation.T + (cx, cy)
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _sounding_ok(mask: np.ndarray, full: np.ndarray, size: int) -> bool:
    """The guarantees of the module docstring for the sounding object's visible ``mask``."""
    if mask.sum() < MIN_SOUNDING_VISIBLE * full.sum():
        return False
    x0, y0, x1, y1 = _box(mask)
    area = (x1 - x0) * (y1 - y0)
    if area < MIN_SOUNDING_BOX_AREA * size * size or mask.sum() < MIN_BOX_FILL * area:
        return False
    r = max(1, size // 48)  # the box centre (a small patch around it) lies on the object
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return bool(mask[max(cy - r - 1, 0):cy + r + 1, max(cx - r - 1, 0):cx + r + 1].all())


def _layout(names: list[str], sounding: int, size: int, rng: np.random.Generator,
            center_spread: float | None = None):
    """``(visible mask, visible share)`` of ``names`` drawn in order, or None if a guarantee fails."""
    full = []
    for i, name in enumerate(names):
        mask = _object_mask(CLASSES[name].shape, size, rng, center_spread if i == sounding else None)
        if not mask.any():
            return None
        full.append(mask)
    visible = []
    for i, mask in enumerate(full):
        hidden = np.zeros_like(mask)
        for later in full[i + 1:]:
            hidden |= later
        visible.append(mask & ~hidden)
    for i, (mask, whole) in enumerate(zip(visible, full)):
        if i == sounding:
            if not _sounding_ok(mask, whole, size):
                return None
        elif mask.sum() < MIN_OTHER_VISIBLE * whole.sum():
            return None
    return [(mask, float(mask.sum() / whole.sum())) for mask, whole in zip(visible, full)]


def scene_options(object_counts=None, center_spread=None) -> tuple[list[float] | None, float | None]:
    """:func:`make_scene`'s ``object_counts`` (as floats) and ``center_spread``, checked."""
    if object_counts is not None:
        counts = [float(c) for c in object_counts]
        if not counts or not all(0 <= c < float("inf") for c in counts) or not sum(counts) > 0:
            raise ValueError(f"object_counts must be non-negative frequencies of 1, 2, ... objects, got {object_counts}")
        object_counts = counts
    if center_spread is not None:
        if not 0 < center_spread <= 1:
            raise ValueError(f"center_spread must be in (0, 1] (a share of the picture's side) or None, "
                             f"got {center_spread}")
        center_spread = float(center_spread)
    return object_counts, center_spread


def make_scene(rng: np.random.Generator, size: int, classes=tuple(CLASSES), object_counts=None,
               num_objects: int | None = None, center_spread: float | None = None) -> Scene:
    """A random scene: objects of distinct ``classes``, one of them sounding.

    How many: exactly ``num_objects``; else drawn with relative frequencies ``object_counts``
    (of 1, 2, ... objects); else uniform over 1..``MAX_OBJECTS``. Fewer only where they cannot
    be laid out. ``center_spread``: the sounding object's centre is drawn about the picture's
    centre with this standard deviation (share of the side), as a camera frames what it films;
    None: anywhere, like every other object.
    """
    classes = list(classes)
    object_counts, center_spread = scene_options(object_counts, center_spread)
    if num_objects is not None:
        count = int(num_objects)
    elif object_counts is not None:
        weights = np.asarray(object_counts)
        count = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    else:
        count = int(rng.integers(1, min(MAX_OBJECTS, len(classes)) + 1))
    count = max(1, min(count, len(classes)))
    names = [classes[i] for i in rng.permutation(len(classes))[:count]]
    sounding = int(rng.integers(0, count))
    background = render_background(size, rng)
    visible = None
    while visible is None:
        for _ in range(60):
            visible = _layout(names, sounding, size, rng, center_spread)
            if visible is not None:
                break
        if visible is None:  # too crowded: drop an object that is not the sounding one
            if len(names) == 1:
                raise RuntimeError(f"cannot lay out a {names[0]} at size {size}")
            drop = next(i for i in range(len(names) - 1, -1, -1) if i != sounding)
            names.pop(drop)
            sounding -= int(drop < sounding)

    frame = background
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    objects = []
    for name, (mask, share) in zip(names, visible):
        spec = CLASSES[name]
        x0, y0, x1, y1 = _box(mask)
        color = np.array(spec.color, dtype=np.float32) + rng.uniform(-COLOR_JITTER, COLOR_JITTER, 3)
        pattern = _texture(spec.texture, xx - (x0 + x1) / 2, yy - (y0 + y1) / 2, max(x1 - x0, y1 - y0), rng)
        frame[mask] = color + TEXTURE_AMPLITUDE * pattern[mask][:, None]
        objects.append(SceneObject(name, [x0 / size, y0 / size, x1 / size, y1 / size], share, mask))
    frame = frame + rng.normal(0, PIXEL_NOISE, size=frame.shape)
    frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    return Scene(frame, objects, sounding)


def position_phrase(box) -> str:
    """Where a box lies, in words: "at the top left", "on the right", "in the middle", ..."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    h = "left" if cx < 0.4 else "right" if cx > 0.6 else None
    v = "top" if cy < 0.4 else "bottom" if cy > 0.6 else None
    if v and h:
        return f"at the {v} {h}"
    if v:
        return f"at the {v}"
    return f"on the {h}" if h else "in the middle"


def caption(names: list[str], rng: np.random.Generator | None = None, boxes=None) -> str:
    """``"a red disc, a blue square and an orange cross"``; objects in a random order if ``rng``;
    with ``boxes``, each object's place too (``"a red disc at the top left and ..."``)."""
    items = [f"{'an' if n[0] in 'aeiou' else 'a'} {n}" + (f" {position_phrase(boxes[i])}" if boxes else "")
             for i, n in enumerate(names)]
    if rng is not None:
        items = [items[i] for i in rng.permutation(len(items))]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def scene_audio_parts(scene: Scene, duration: float, sample_rate: int, rng: np.random.Generator,
                      classes=tuple(CLASSES), distractor_prob: float = 0.3) -> dict:
    """The clip's sound in its three parts, before they are mixed (same draws from ``rng``, in
    the same order, as :func:`scene_audio`, which sums them): ``{"object": the sounding object's
    class sound at its loudness, "noise": the coloured background noise, "distractor": the
    off-screen class's sound or zeros, "distractor_name": its class or None}`` (float32 ``[T]``)."""
    main = class_sound(scene.sounding_object.name, duration, sample_rate, rng) * rng.uniform(0.6, 1.0)
    noise = background_noise(len(main), float(rng.uniform(0.004, 0.02)), rng)
    distractor, other = None, np.zeros_like(main)
    off_screen = [c for c in classes if c not in scene.names]
    if off_screen and rng.random() < distractor_prob:
        distractor = off_screen[int(rng.integers(0, len(off_screen)))]
        other = class_sound(distractor, duration, sample_rate, rng) * rng.uniform(0.12, 0.3)
    return {"object": main.astype(np.float32), "noise": noise, "distractor": other.astype(np.float32),
            "distractor_name": distractor}


def mix_parts(parts: dict) -> np.ndarray:
    """The clip's waveform from :func:`scene_audio_parts`: their sum, clipped to [-1, 1]."""
    audio = parts["object"] + parts["noise"]
    if parts["distractor_name"] is not None:
        audio = audio + parts["distractor"]
    return np.clip(audio, -1, 1).astype(np.float32)


def scene_audio(scene: Scene, duration: float, sample_rate: int, rng: np.random.Generator,
                classes=tuple(CLASSES), distractor_prob: float = 0.3) -> tuple[np.ndarray, str | None]:
    """The clip's sound: the sounding object's class sound at a random loudness, coloured
    background noise, and with probability ``distractor_prob`` a quieter off-screen class.
    Returns ``(waveform float32 in [-1, 1], distractor class or None)``."""
    parts = scene_audio_parts(scene, duration, sample_rate, rng, classes, distractor_prob)
    return mix_parts(parts), parts["distractor_name"]


# --------------------------------------------------------------------------------------------
# The audio-mixture split: a second sound at comparable loudness, both intermittent
# --------------------------------------------------------------------------------------------
MIXTURE_SNR_DB = (-5.0, 5.0)  # object-to-distractor ratio of the class sounds' mean powers, dB
MIXTURE_ON_S = (0.25, 0.6)  # each source (object, distractor) sounds for this long ...
MIXTURE_OFF_S = (0.2, 0.5)  # ... then pauses for this long (seconds, uniform), independently
MIXTURE_RAMP_S = 0.02  # linear fades at each on/off switch: no clicks
MIXTURE_PEAK = 0.95  # the mix is scaled (every part alike) to peak at most here: nothing is clipped


def intermittent_gate(num_samples: int, sample_rate: int, rng: np.random.Generator,
                      on_s=MIXTURE_ON_S, off_s=MIXTURE_OFF_S) -> np.ndarray:
    """A gain in [0, 1] that switches a source on and off: spans of ``on_s`` seconds on, ``off_s``
    off (each uniform in its range), starting in either state part-way into a span, with linear
    ``MIXTURE_RAMP_S`` fades (float64 ``[num_samples]``)."""
    gate = np.zeros(num_samples)
    on = bool(rng.random() < 0.5)
    pos = -int(rng.uniform(0, on_s[1] if on else off_s[1]) * sample_rate)  # enter mid-span
    ramp = max(1, int(MIXTURE_RAMP_S * sample_rate))
    while pos < num_samples:
        length = max(1, int(rng.uniform(*(on_s if on else off_s)) * sample_rate))  # a 0-sample span never ends the loop
        lo, hi = max(pos, 0), min(pos + length, num_samples)
        if on and lo < hi:
            k = np.arange(lo, hi) - pos
            gate[lo:hi] = np.minimum(1.0, np.minimum(k + 1, length - k) / ramp)
        pos += length
        on = not on
    return gate


def mixture_audio_parts(parts: dict, scene_names, duration: float, sample_rate: int, rng: np.random.Generator,
                        classes=tuple(CLASSES), snr_db=MIXTURE_SNR_DB) -> dict:
    """A clip's parts for the audio-mixture split: the clip's own object sound and background
    noise (``parts`` from :func:`scene_audio_parts`; its distractor is dropped) with the object
    switched on and off by :func:`intermittent_gate`, plus an off-screen class (not among
    ``scene_names``) switched by its own gate (same statistics, independent draws), at an
    object-to-distractor ratio drawn uniformly in ``snr_db`` (the two class sounds' mean powers,
    before gating). The object is then not simply the loudest sound: loudness alone cannot tell
    its spans and bands from the distractor's. Every part is scaled alike so that the mix peaks
    at most ``MIXTURE_PEAK``. Returns the same keys as :func:`scene_audio_parts` plus ``"snr_db"``;
    all draws from ``rng``.
    """
    off_screen = [c for c in classes if c not in scene_names]
    if not off_screen:
        raise ValueError(f"the scene holds every class of {list(classes)}: no off-screen class for the distractor")
    n = len(parts["object"])
    obj = parts["object"].astype(np.float64) * intermittent_gate(n, sample_rate, rng)
    name = off_screen[int(rng.integers(0, len(off_screen)))]
    other = class_sound(name, duration, sample_rate, rng).astype(np.float64)
    snr = float(rng.uniform(*snr_db))
    # the two class sounds' mean powers before gating (a rhythm's own pauses count, as in its class)
    gain = np.sqrt(np.mean(parts["object"].astype(np.float64) ** 2) / max(np.mean(other ** 2), 1e-20)
                   / 10 ** (snr / 10))
    other = other * gain * intermittent_gate(n, sample_rate, rng)
    noise = parts["noise"].astype(np.float64)
    peak = np.abs(obj + noise + other).max()
    scale = min(1.0, MIXTURE_PEAK / peak) if peak > 0 else 1.0
    return {"object": (obj * scale).astype(np.float32), "noise": (noise * scale).astype(np.float32),
            "distractor": (other * scale).astype(np.float32), "distractor_name": name,
            "snr_db": round(snr, 3)}


# --------------------------------------------------------------------------------------------
# The sound's ground truth: when and at which frequencies the sounding object is heard
# --------------------------------------------------------------------------------------------
TF_FLOOR_DB = 40.0  # T-F bins more than this below the object's loudest bin are not the object's
MIN_FRAMES_EACH = 3  # time_auc needs this many active and this many silent frames


def object_tf_mask(parts: dict, frontend, floor_db: float = TF_FLOOR_DB) -> tuple[np.ndarray, np.ndarray]:
    """The sounding object's time-frequency mask on a front-end's mel grid, and its per-frame activity.

    ``frontend``: a :class:`avlegrad.audio.frontend.LogMel` (its mel filter bank, hop and
    centring define the grid: exactly the encoder's log-mel ``[n_mels, 1 + T // hop]``).
    A bin belongs to the object where the object's mel power exceeds that of everything else in
    the clip (background noise + distractor; the ideal binary mask at 0 dB local SNR) and lies
    within ``floor_db`` of the object's loudest bin. A frame is active where any of its bins
    belongs to the object. Returns ``(mask [n_mels, frames] bool, active [frames] bool)``.
    """
    import torch

    with torch.no_grad():
        obj = torch.from_numpy(np.ascontiguousarray(parts["object"], dtype=np.float32))[None]
        rest = parts["noise"] + (parts["distractor"] if parts["distractor_name"] is not None else 0.0)
        rest = torch.from_numpy(np.ascontiguousarray(rest, dtype=np.float32))[None]
        p_obj = frontend.mel(obj)[0].double().numpy()
        p_rest = frontend.mel(rest)[0].double().numpy()
    floor = p_obj.max() * 10 ** (-floor_db / 10)
    mask = (p_obj > p_rest) & (p_obj >= floor) & (p_obj > 0)
    return mask, mask.any(axis=0)


def distractor_activity(parts: dict, frontend, floor_db: float = TF_FLOOR_DB) -> np.ndarray:
    """The frames where the off-screen distractor is heard, ``[frames]`` bool on the same grid as
    :func:`object_tf_mask`, by the same rule with the roles swapped: a frame where some bin's
    distractor power exceeds that of the object plus the background noise, within ``floor_db`` of
    the distractor's loudest bin. All False for a clip without a distractor. With the object's
    activity it splits the object's silent frames into *the other sound* and *neither*.
    """
    if parts["distractor_name"] is None:  # the grid's frame count, without computing a mask
        return np.zeros(frontend.num_frames(len(parts["object"])), dtype=bool)
    swapped = dict(parts, object=parts["distractor"], distractor=parts["object"])
    return object_tf_mask(swapped, frontend, floor_db)[1]
