"""A small synthetic localization benchmark in the VGG-SS format, generated in seconds.

Each clip is a real mp4 (H.264 video + AAC audio) ``<root>/videos/<id>.mp4`` showing a scene of
:mod:`avlegrad.data.world`: 1-3 large objects (mostly 2-3) of distinct classes (shape, colour, texture;
random size, aspect, tilt and position, overlapping and cut by the border) on a cluttered
background; the audio is the sound of ONE visible object (each class has its own sound) with
coloured background noise and, in some clips, a quieter off-screen distractor. ``<root>/vggss.json``
holds the normalised box of the sounding object's visible pixels, exactly in vggss.json's format
(``file``, ``class``, ``bbox``), with the ids in ``<root>/vggss_test.csv``. So
``create_dataset("synthetic", root)`` reads it with the VGG-SS reader, and a localization method
can be checked end to end without any download.

``<root>/synthetic.json`` (the manifest) records the parameters and, per clip, the scene: a
caption naming every visible object ("a red disc and a blue square") and one that also says where
("a red disc at the top left and a blue square on the right", what the world CLIP is trained on),
every object's class, box and visible share, which one sounds, and the distractor.

Generation is deterministic in ``seed`` and idempotent: a complete set made with the same
parameters is left untouched. Two seeds give disjoint sets of clips (train on one, test on another).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..fileio import write_text_atomic
from . import world
from .media import write_video

log = logging.getLogger(__name__)

MANIFEST = "synthetic.json"
GENERATING = ".synthetic-generating"  # marks a folder this generator is (or was, if killed) writing into
GENERATOR_VERSION = 3  # bump when the scenes or sounds change, so old sets are regenerated
# Busy scenes, framed as a camera frames what it films: most pictures hold 2-3 objects, and the
# sounding one lies near the middle (so the centre prior scores about what it does on VGG-SS)
OBJECT_COUNTS = (0.1, 0.3, 0.6)  # relative frequencies of 1, 2, 3 objects
CENTER_SPREAD = 0.2  # std of the sounding object's centre about the picture's, share of the side
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
SOUND_PEAK = world.SOUND_PEAK
CLASSES = world.CLASSES  # class name -> ObjectClass(shape, color, sound, pitch, texture)
SceneClass = world.ObjectClass  # the name version 1 used
class_sound = world.class_sound


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------

def _clip_id(rng: np.random.Generator) -> str:
    youtube_like = "".join(ID_ALPHABET[i] for i in rng.integers(0, len(ID_ALPHABET), size=11))
    return f"{youtube_like}_{int(rng.integers(0, 300)) * 10:06d}"


def make_clip(index: int, params: dict) -> dict:
    """One clip's content: id, class, box, caption, every object, the frame and the waveform
    (nothing written). The scene and the sound come from :mod:`avlegrad.data.world`."""
    rng = np.random.default_rng([params["seed"], index])
    clip_id = _clip_id(rng)
    scene = world.make_scene(rng, params["size"], params["classes"], object_counts=params["object_counts"],
                             center_spread=params["center_spread"])
    parts = world.scene_audio_parts(scene, params["duration"], params["sample_rate"], rng, params["classes"],
                                    distractor_prob=params["distractor_prob"])
    if params.get("audio_mixture"):  # a set of mixtures (training data): the split's sound, its own draws
        parts = world.mixture_audio_parts(parts, scene.names, params["duration"], params["sample_rate"],
                                          np.random.default_rng([params["seed"], index, MIXTURE_STREAM]),
                                          params["classes"])
    audio, distractor = world.mix_parts(parts), parts["distractor_name"]
    sounding = scene.sounding_object
    order = rng.permutation(len(scene.objects))  # the caption's order of the objects
    names, boxes = [scene.names[i] for i in order], [scene.objects[i].box for i in order]
    return {"file": clip_id, "class": sounding.name, "bbox": [sounding.box], "frame": scene.frame,
            "audio": audio, "caption": world.caption(names), "caption_places": world.caption(names, boxes=boxes),
            "distractor": distractor,
            "objects": [{"class": o.name, "bbox": o.box, "visible": round(o.visible, 4)} for o in scene.objects],
            "sounding": scene.sounding, "audio_parts": parts}


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


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
                       classes=tuple(CLASSES), object_counts=OBJECT_COUNTS,
                       center_spread: float | None = CENTER_SPREAD, distractor_prob: float = 0.3,
                       audio_mixture: bool = False) -> Path:
    """Write the synthetic benchmark under ``root`` (see the module docstring); returns root.

    ``classes``: names from :data:`CLASSES` the scenes draw from; ``object_counts``: relative
    frequencies of pictures with 1, 2, ... objects; ``center_spread``: standard deviation of the
    sounding object's centre about the picture's (share of the side; None: anywhere);
    ``distractor_prob``: share of clips with a quieter off-screen sound; ``audio_mixture``: every
    clip's sound is that of the audio-mixture split (:func:`ensure_audio_mixture`) instead, in the
    mp4 itself: training data for an encoder that must ignore off-screen sounds.
    Does nothing when root already holds a complete set made with the same parameters.
    """
    root = Path(root).expanduser()
    classes = list(classes)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(f"unknown synthetic classes {unknown}; valid: {', '.join(CLASSES)}")
    if size % 2 or size < 32:
        raise ValueError(f"size must be even and >= 32 (H.264 needs even sides), got {size}")
    counts, center_spread = world.scene_options(object_counts, center_spread)
    params = {"version": GENERATOR_VERSION, "num_clips": int(num_clips), "seed": int(seed),
              "size": int(size), "duration": float(duration), "fps": int(fps),
              "sample_rate": int(sample_rate), "classes": classes, "object_counts": counts,
              "center_spread": center_spread,
              "distractor_prob": float(distractor_prob)}
    if audio_mixture:  # only then: the parameters (and so the manifests) of every other set are unchanged
        params["audio_mixture"] = True
    old = _read_manifest(root)
    if _is_complete(root, old, params):
        return root
    _check_generation_target(root, old)
    log.info("generating the synthetic benchmark (%d clips, seed %d) into %s", num_clips, seed, root)
    root.mkdir(parents=True, exist_ok=True)
    (root / GENERATING).touch()
    # incomplete until these are rewritten: an interrupted run must not leave old boxes beside new
    # videos (clip ids do not depend on the generator version)
    for stale in (MANIFEST, "vggss.json", "vggss_test.csv"):
        (root / stale).unlink(missing_ok=True)
    entries, ids, scenes = [], [], []
    n_frames = max(1, int(round(duration * fps)))
    for index in range(num_clips):
        clip = make_clip(index, params)
        while clip["file"] in ids:  # ids must be unique; a collision is astronomically rare
            clip["file"] = _clip_id(np.random.default_rng([seed, index, len(ids)]))
        write_video(root / "videos" / f"{clip['file']}.mp4", [clip["frame"]] * n_frames, fps,
                    audio=clip["audio"], sample_rate=sample_rate, threads=1)  # same seed, same bytes
        ids.append(clip["file"])
        entries.append({"file": clip["file"], "class": clip["class"], "bbox": clip["bbox"]})
        scenes.append({"file": clip["file"], "caption": clip["caption"], "caption_places": clip["caption_places"],
                       "objects": clip["objects"], "sounding": clip["sounding"], "distractor": clip["distractor"]})
    for stale in set((old or {}).get("clips", [])) - set(ids):  # clips of an older set
        (root / "videos" / f"{stale}.mp4").unlink(missing_ok=True)
    _write_text(root / "vggss.json", json.dumps(entries))
    _write_text(root / "vggss_test.csv", "".join(f"{clip_id}\n" for clip_id in ids))
    _write_text(root / MANIFEST, json.dumps({"generator": "avlegrad.data.synthetic", "params": params,
                                             "clips": ids, "scenes": scenes}, indent=1))
    (root / GENERATING).unlink(missing_ok=True)
    return root


def _check_generation_target(root: Path, manifest: dict | None) -> None:
    """Generate only into a new or empty folder, or one that holds a synthetic set (or an
    interrupted generation): a typo'd path or a folder of the user's own videos is refused."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"synthetic dataset root {root} is a file, not a folder")
    if manifest is not None or (root / GENERATING).exists() or not root.exists() or not any(root.iterdir()):
        return
    raise ValueError(f"{root} holds files but no synthetic benchmark ({MANIFEST}): the synthetic set is generated "
                     f"only into a new or empty folder; give another `root` (or delete the folder's contents)")


def ensure_synthetic(root) -> Path:
    """The synthetic benchmark under ``root``, ready to read: generated with the defaults when
    ``root`` holds none, regenerated with its own settings when an older version of this generator
    made it (its scenes would differ from today's), otherwise left as it is."""
    root = Path(root).expanduser()
    manifest = _read_manifest(root)
    if manifest is None:
        if not (root / "vggss.json").is_file():
            generate_synthetic(root)
        return root  # a VGG-SS-format set from elsewhere: read as it is
    params = manifest.get("params", {})
    if manifest.get("generator") == "avlegrad.data.synthetic" and params.get("version") != GENERATOR_VERSION:
        log.warning("%s was made by version %s of the synthetic generator; "
                    "regenerating it with version %d", root, params.get("version"), GENERATOR_VERSION)
        kept = ("num_clips", "seed", "size", "duration", "fps", "sample_rate", "classes", "distractor_prob",
                "audio_mixture")
        settings = {k: params[k] for k in kept if k in params}
        if params.get("max_objects", world.MAX_OBJECTS) != world.MAX_OBJECTS:  # versions 1-2: 1..max_objects
            settings["object_counts"] = [1.0] * int(params["max_objects"])
        generate_synthetic(root, **settings)
    return root



def audio_truth(root, clip_ids, frontend, split: str = "test", distractor: bool = False) -> dict:
    """The sounding object's time-frequency mask and per-frame activity of clips of a synthetic set.

    The clips are regenerated from the set's manifest (seed, index: the same draws that wrote
    them) and their parts (object, noise, distractor) scored by :func:`world.object_tf_mask` on
    ``frontend``'s grid (a ``LogMel``: the encoder's own). ``split``: ``test`` (the clips' own
    sound) or ``audio-mixture`` (the sound of :func:`ensure_audio_mixture`). Returns ``{clip_id:
    (mask [n_mels, frames] bool, active [frames] bool)}``; with ``distractor=True``, ``{clip_id:
    (mask, active, distractor_active [frames] bool)}``, the last the frames where the off-screen
    distractor is heard (:func:`world.distractor_activity`). An id not in the set raises
    ``ValueError`` naming it.
    """
    if split not in ("test", MIXTURE_SPLIT):
        raise ValueError(f"unknown audio split {split!r}; choose test or {MIXTURE_SPLIT}")
    root = Path(root).expanduser()
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("generator") != "avlegrad.data.synthetic":
        raise ValueError(f"{root} holds no synthetic manifest ({MANIFEST}): the audio ground truth is "
                         f"regenerated from the generator's settings")
    params = manifest["params"]
    if params.get("version") != GENERATOR_VERSION:
        raise ValueError(f"{root} was made by version {params.get('version')} of the generator, not "
                         f"{GENERATOR_VERSION}; read it once with ensure_synthetic to regenerate it")
    if int(frontend.sample_rate) != int(params["sample_rate"]):
        raise ValueError(f"the front-end's sample rate {frontend.sample_rate} differs from the set's "
                         f"{params['sample_rate']} Hz")
    index = {clip_id: i for i, clip_id in enumerate(manifest["clips"])}
    out = {}
    for clip_id in clip_ids:
        if clip_id not in index:
            raise ValueError(f"clip {clip_id!r} is not in the synthetic set at {root}")
        if split == MIXTURE_SPLIT:
            parts = mixture_parts(index[clip_id], params)
        else:
            parts = make_clip(index[clip_id], params)["audio_parts"]
        mask, active = world.object_tf_mask(parts, frontend)
        out[clip_id] = (mask, active, world.distractor_activity(parts, frontend)) if distractor else (mask, active)
    return out


# --------------------------------------------------------------------------------------------
# The audio-mixture split: which part of the sound does the picture show?
# --------------------------------------------------------------------------------------------
MIXTURE_SPLIT = "audio-mixture"
MIXTURE_VERSION = 1
MIXTURE_DIR = "audio_mixture"  # <root>/audio_mixture/<clip>.wav, and <root>/audio_mixture.json
MIXTURE_STREAM = 7727  # the split's draws: numpy.random.default_rng([seed, clip index, MIXTURE_STREAM])


def mixture_parts(index: int, params: dict) -> dict:
    """The parts of clip ``index``'s sound in the audio-mixture split (see :func:`ensure_audio_mixture`)."""
    return make_clip(index, {**params, "audio_mixture": True})["audio_parts"]


def _scenes_manifest(root, split: str) -> tuple[Path, dict]:
    """``(root, manifest)`` of a generated set (generated first when missing) whose manifest holds
    the scenes that the derived ``split`` is made from; ValueError otherwise."""
    root = ensure_synthetic(root)
    manifest = _read_manifest(root)
    if manifest is None or "scenes" not in manifest:
        raise ValueError(f"{root} holds no synthetic manifest ({MANIFEST}) with scenes: the {split} split is "
                         f"made from the generator's scenes (generate_synthetic)")
    return root, manifest


def ensure_audio_mixture(root) -> Path:
    """Write the audio-mixture split beside the synthetic clips of ``root`` (generated first when
    missing), once; returns root.

    Each clip keeps its picture, its sounding object's sound and its background noise, but the
    object now sounds in spans (:func:`world.intermittent_gate`) and an off-screen class sounds
    in spans of its own at a comparable loudness (object-to-distractor ratio uniform in
    ``world.MIXTURE_SNR_DB``; :func:`world.mixture_audio_parts`), replacing the clip's quieter
    distractor: the object is no longer simply the loudest sound, so the spectrogram's loudness
    does not tell where and when it sounds. The draws come from ``default_rng([seed, index,
    MIXTURE_STREAM])``, apart from the clip's own: the standard clips are untouched.
    Files: ``audio_mixture/<clip>.wav`` (16-bit) and ``audio_mixture.json`` (the settings and,
    per clip, the distractor's class and the ratio in dB). The ground truth comes from the
    parts, as for the standard clips: ``audio_truth(root, ids, frontend, split="audio-mixture")``.
    """
    from .media import write_audio

    root, manifest = _scenes_manifest(root, MIXTURE_SPLIT)
    params = manifest["params"]
    stamp_file = root / f"{MIXTURE_DIR}.json"
    settings = {"version": MIXTURE_VERSION, "stream": MIXTURE_STREAM, "snr_db": list(world.MIXTURE_SNR_DB),
                "on_s": list(world.MIXTURE_ON_S), "off_s": list(world.MIXTURE_OFF_S), "params": params}
    try:
        old = json.loads(stamp_file.read_text())
        if old.get("settings") == settings and old.get("clips", {}).keys() == set(manifest["clips"]) and all(
                (root / MIXTURE_DIR / f"{c}.wav").is_file() for c in manifest["clips"]):
            return root
    except (OSError, ValueError, AttributeError):
        pass
    stamp_file.unlink(missing_ok=True)
    clips = {}
    for index, clip_id in enumerate(manifest["clips"]):
        parts = mixture_parts(index, params)
        write_audio(root / MIXTURE_DIR / f"{clip_id}.wav", world.mix_parts(parts), params["sample_rate"])
        clips[clip_id] = {"distractor": parts["distractor_name"], "snr_db": parts["snr_db"]}
    _write_text(stamp_file, json.dumps({"split": MIXTURE_SPLIT, "settings": settings, "clips": clips}, indent=1))
    return root


# --------------------------------------------------------------------------------------------
# "Does the map follow the sound?": the same held-out pictures with other sounds
# --------------------------------------------------------------------------------------------
SOUND_FOLLOWING_VERSION = 2
INTERACTIVE_FILE = "interactive_bbox.json"  # IS3's format (avlegrad.data.sslalignment)
EXTENDED_FILE = "vggss_test_plus_silent.csv"  # SLAVC's format: the non-sounding pairs
EVAL_FRAME = 224  # IS3's boxes are pixels of the 224 x 224 frame


def interactive_object_ok(obj: dict) -> bool:
    """Whether a scene object (the manifest's ``{"class", "bbox", "visible"}``) enters the interactive
    split: localizable by a perfect map, i.e. the guarantees of the sounding object."""
    x0, y0, x1, y1 = obj["bbox"]
    return (x1 - x0) * (y1 - y0) >= world.MIN_SOUNDING_BOX_AREA and obj["visible"] >= world.MIN_SOUNDING_VISIBLE


def _object_sound(name: str, params: dict, rng: np.random.Generator) -> np.ndarray:
    """One class's sound as a clip carries it (random loudness, background noise), no distractor."""
    sound = class_sound(name, params["duration"], params["sample_rate"], rng) * rng.uniform(0.6, 1.0)
    sound = sound + world.background_noise(len(sound), float(rng.uniform(0.004, 0.02)), rng)
    return np.clip(sound, -1, 1).astype(np.float32)


def ensure_sound_following(root, split: str) -> Path:
    """Write the world's versions of the sound-following benchmarks beside the synthetic clips of
    ``root`` (generated first when missing), once; returns root.

    ``interactive`` (IS3's form): each picture once per visible object, each time with that
    object's sound alone (its class sound at a random loudness plus background noise):
    ``interactive/<clip>_<k>.wav`` and ``interactive_bbox.json`` (``gt_box`` = that object's box in
    pixels of the 224 x 224 frame; the picture of entry ``<clip>_<k>`` is ``<clip>``). As in IS3,
    whose pictures hold two clearly visible sounding objects, an object is listed when a perfect
    map can localize it under the protocol (the guarantees the benchmark gives its sounding object:
    box >= 28% of the frame, >= 60% visible; a box under 25% can never reach cIoU 0.5 with a
    median threshold), and a picture when it holds at least two such objects.
    ``extended`` (SLAVC's form): the clips as positives, and per picture one negative, the frame with
    silence (even clip index) or with the sound of a class that is not in the picture (odd):
    ``audio/<clip>-silence.wav`` / ``audio/<clip>-absent.wav`` and ``vggss_test_plus_silent.csv``.
    Frames are the clips' own (the middle frame of ``videos/<clip>.mp4``).
    """
    from .media import write_audio

    root, manifest = _scenes_manifest(root, split)
    params = manifest["params"]
    stamp_file = root / f"sound_following_{split}.json"
    stamp = {"version": SOUND_FOLLOWING_VERSION, "split": split, "params": params, "clips": manifest["clips"]}
    out_file = root / (INTERACTIVE_FILE if split == "interactive" else EXTENDED_FILE)
    try:
        if json.loads(stamp_file.read_text()) == stamp and out_file.is_file():
            return root
    except (OSError, ValueError):
        pass
    stamp_file.unlink(missing_ok=True)
    sr = params["sample_rate"]
    if split == "interactive":
        entries = []
        for index, scene in enumerate(manifest["scenes"]):
            clip_id = scene["file"]
            objects = [(k, obj) for k, obj in enumerate(scene["objects"]) if interactive_object_ok(obj)]
            if len(objects) < 2:
                continue
            for k, obj in objects:
                rng = np.random.default_rng([params["seed"], index, 7919, k])
                name = f"{clip_id}_{k}"
                write_audio(root / "interactive" / f"{name}.wav", _object_sound(obj["class"], params, rng), sr)
                entries.append({"image": f"videos/{clip_id}.mp4", "audio": f"interactive/{name}.wav",
                                "gt_box": [float(v) * EVAL_FRAME for v in obj["bbox"]], "class": obj["class"]})
        _write_text(out_file, json.dumps(entries))
    elif split == "extended":
        rows = ["video,audio,label"]
        for index, scene in enumerate(manifest["scenes"]):
            clip_id = scene["file"]
            rng = np.random.default_rng([params["seed"], index, 104729])
            present = {o["class"] for o in scene["objects"]}
            absent = [c for c in params["classes"] if c not in present]
            if index % 2 == 0 or not absent:
                audio_id = f"{clip_id}-silence"
                sound = np.zeros(int(round(params["duration"] * sr)), np.float32)
            else:
                audio_id = f"{clip_id}-absent"
                sound = _object_sound(absent[int(rng.integers(0, len(absent)))], params, rng)
            write_audio(root / "audio" / f"{audio_id}.wav", sound, sr)
            rows.append(f"{clip_id},{audio_id},non-sounding")
        _write_text(out_file, "\n".join(rows) + "\n")
    else:
        raise ValueError(f"unknown sound-following split {split!r}; choose interactive or extended")
    _write_text(stamp_file, json.dumps(stamp))
    return root
