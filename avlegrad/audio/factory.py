"""Registry of audio encoders and ``create_audio_encoder``, in the open_clip / timm style.

Adding an encoder is one decorated builder::

    @register_audio_encoder("wav2clip")
    def wav2clip(checkpoint=None, **kwargs) -> AudioEncoder: ...

A builder returns an :class:`AudioEncoder`. If it takes a ``checkpoint`` argument it loads that
file itself (pretrained weights in their published format); otherwise ``create_audio_encoder``
loads an avlegrad checkpoint (written by ``train.py``) or a plain state dict into what it built.

Checkpoint files are read with ``torch.load(weights_only=True)``: tensors and plain Python only.
"""
from __future__ import annotations

import inspect
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..fileio import atomic_path
from .base import AudioEncoder

CHECKPOINT_FORMAT = "avlegrad.audio_encoder"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

_REGISTRY: dict[str, Callable[..., AudioEncoder]] = {}
_TRAINING: dict[str, "TrainingContract"] = {}
_TEST_CONFIGS: dict[str, dict | None] = {}  # small random-weight versions, for the tests
_DIRECTORIES: dict[str, Callable] = {}  # name -> predicate: a folder this builder loads as checkpoint=

TOWER_KWARGS = ("clip_model", "clip_pretrained", "clip_model_cfg", "clip_init_seed")


@dataclass(frozen=True)
class TrainingContract:
    """What ``train.py`` may do with a registered encoder, declared with its registration.

    ``trainable``: False when the encoder cannot be fine-tuned; ``reason`` (one line) then says
    why, and ``train.py`` refuses with it. ``embed_dim``: the encoder's fixed embedding width
    (Wav2CLIP: 512), None when the builder takes ``embed_dim=`` (train.py passes the tower's);
    a tower of another width is refused. ``tower_kwargs``: the tower-recipe arguments the builder
    accepts (train.py passes these of its ``clip`` section: name, weights, config, init seed).
    """

    trainable: bool = True
    reason: str = ""
    embed_dim: int | None = None
    tower_kwargs: tuple = TOWER_KWARGS

    def __post_init__(self):
        if not self.trainable and not self.reason:
            raise ValueError("a TrainingContract with trainable=False needs a reason")


NOT_DECLARED = TrainingContract(False, "its registration declares no training contract "
                                       "(register_audio_encoder(..., training=TrainingContract(...)))")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or not what was expected."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def register_audio_encoder(name: str | Callable | None = None, *, training: TrainingContract | None = None,
                           test_config: dict | None = None, directory: Callable | None = None):
    """Decorator registering a builder under ``name`` (default: the function's name).

    ``training``: its :class:`TrainingContract` (None: train.py refuses the encoder, saying so).
    ``test_config``: the builder's keyword arguments for a small random-weight version (no
    download, a second on a CPU), with which the tests run every registered encoder
    (:func:`test_config`). ``directory``: a predicate on a folder path; ``create_audio_encoder(FOLDER)``
    builds this encoder with ``checkpoint=FOLDER`` where it is true (checkpoints published as a
    folder, e.g. a Hugging Face model's)."""

    def decorate(fn):
        key = name if isinstance(name, str) else fn.__name__
        old = _REGISTRY.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"audio encoder {key!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[key] = fn
        _TRAINING[key] = training if training is not None else NOT_DECLARED
        _TEST_CONFIGS[key] = dict(test_config) if test_config is not None else None
        if directory is not None:
            _DIRECTORIES[key] = directory
        return fn

    return decorate(name) if callable(name) else decorate


def training_contract(name: str) -> TrainingContract:
    """The :class:`TrainingContract` encoder ``name`` was registered with; ValueError if unknown."""
    if name not in _REGISTRY:
        raise _unknown(name)
    return _TRAINING[name]


def test_config(name: str) -> dict:
    """The keyword arguments of a small random-weight version of encoder ``name``, declared with its
    registration (``create_audio_encoder(name, **test_config(name))``). ValueError if the encoder
    is unknown or declares none."""
    if name not in _REGISTRY:
        raise _unknown(name)
    if _TEST_CONFIGS[name] is None:
        raise ValueError(f"audio encoder {name!r} declares no test_config (register_audio_encoder(..., "
                         "test_config={...}): a small random-weight version for the tests)")
    return dict(_TEST_CONFIGS[name])


test_config.__test__ = False  # a library function, not a test pytest should collect


def list_audio_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(_REGISTRY)


def _is_checkpoint_path(name: str) -> bool:
    return os.path.isfile(name) or name.endswith(CHECKPOINT_SUFFIXES) or os.sep in name


def load_checkpoint_file(path) -> dict:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        with warnings.catch_warnings():  # garbage bytes also trigger a pickle-protocol warning
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle, EOF and unpickler errors all mean: not a readable checkpoint
        message = str(e)
        global_ = re.search(r"Unsupported global: ([^\n]+)", message)
        if global_:  # a readable pickle of Python objects, e.g. a whole model saved with torch.save
            name = global_.group(1).split(" was not")[0].strip()
            reason = (f"holds objects other than tensors and plain Python types ({name}); "
                      "avlegrad reads checkpoints with torch.load(weights_only=True) only")
        else:
            detail = re.search(r"WeightsUnpickler error: \s*([^\n]+)", message)
            detail = detail.group(1) if detail else (message.strip().splitlines() or [""])[0]
            reason = (f"cannot read checkpoint ({path.stat().st_size} bytes): the file is corrupt or "
                      f"truncated ({type(e).__name__}: {detail.strip()[:200]})")
        raise CheckpointError(path, reason) from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict (a state dict or a checkpoint), found {type(obj).__name__}")
    return obj


def save_checkpoint_file(obj: dict, path) -> None:
    """``torch.save`` atomically: write a temporary file next to ``path``, then rename it."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def encoder_spec(encoder: AudioEncoder) -> dict:
    """``{"name", "kwargs"}``: what ``create_audio_encoder`` needs to rebuild this encoder."""
    name = getattr(encoder, "registry_name", None)
    if name is None:
        raise ValueError(f"{type(encoder).__name__} was not made by create_audio_encoder; "
                         "its rebuild recipe is unknown")
    return {"name": name, "kwargs": dict(getattr(encoder, "config", {}))}


def encoder_checkpoint(encoder: AudioEncoder, **extra) -> dict:
    """A checkpoint dict that ``create_audio_encoder(path)`` reads back (plain tensors only)."""
    state = {k: v.detach().to("cpu").clone() for k, v in encoder.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "version": 1, "encoder": encoder_spec(encoder),
            "state_dict": state, **extra}


def _takes_checkpoint(builder) -> bool:
    return "checkpoint" in inspect.signature(builder).parameters


def _build(name: str, builder, kwargs: dict):
    """``builder(**kwargs)``; an option the encoder does not take (a config's ``encoder:`` section,
    a stale checkpoint) is a one-line ValueError naming it, not a TypeError from inside."""
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            accepted = sorted(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
            raise ValueError(f"audio encoder {name!r} takes no option {', '.join(map(repr, unknown))}; "
                             f"its options: {', '.join(accepted)}")
        return builder(**kwargs)
    try:  # a builder passing **kwargs on: its class says which keyword it does not know
        return builder(**kwargs)
    except TypeError as e:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if match is None:
            raise
        raise ValueError(f"audio encoder {name!r} takes no option {match.group(1)!r} ({e})") from e


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown audio encoder {name!r}: registered encoders are {list_audio_encoders()}; "
                      "or give the path of a checkpoint written by train.py")


def create_audio_encoder(name: str, checkpoint=None, device=None, **kwargs) -> AudioEncoder:
    """Build a registered audio encoder, optionally with weights; returned in eval mode on ``device``.

    ``name``: a registered name (see ``list_audio_encoders()``) or the path of a checkpoint
    written by ``train.py`` (the encoder is rebuilt from the recipe stored inside).
    ``checkpoint``: weights for ``name``: an avlegrad checkpoint (its stored builder arguments
    are used, updated by ``kwargs``) or a plain state dict. ``kwargs`` go to the builder.
    """
    name = str(name)
    ckpt = None
    if name not in _REGISTRY and os.path.isdir(os.path.expanduser(name)):
        claimed = [key for key, claims in _DIRECTORIES.items() if claims(name)]
        if not claimed:
            raise CheckpointError(name, "is a folder no registered audio encoder reads (a checkpoint is a file "
                                  "written by train.py, or a folder of an encoder published as one, e.g. PE-AV's)")
        if checkpoint is not None:
            raise ValueError(f"create_audio_encoder({name!r}, checkpoint={str(checkpoint)!r}): give the folder "
                             "either as the name or as checkpoint=, not both")
        name, checkpoint = claimed[0], os.path.expanduser(name)
    if name not in _REGISTRY:
        if not _is_checkpoint_path(name):
            raise _unknown(name)
        if checkpoint is not None:
            raise ValueError(f"create_audio_encoder({name!r}, checkpoint={str(checkpoint)!r}): give a checkpoint "
                             "either as the name or as checkpoint=, not both")
        checkpoint, ckpt = name, load_checkpoint_file(name)
        if "encoder" not in ckpt:
            raise CheckpointError(name, "is not an avlegrad audio-encoder checkpoint (no 'encoder' entry); "
                                  "name the encoder: create_audio_encoder(NAME, checkpoint=PATH)")
        name = ckpt["encoder"]["name"]
        if name not in _REGISTRY:
            raise CheckpointError(checkpoint, f"was written for audio encoder {name!r}, which is not registered "
                                  f"(registered: {list_audio_encoders()}); import the module that registers it "
                                  f"before loading the checkpoint")
    builder = _REGISTRY[name]

    if checkpoint is not None and _takes_checkpoint(builder):
        encoder = _build(name, builder, dict(kwargs, checkpoint=checkpoint))
        build_kwargs = dict(kwargs)
    else:
        state = None
        build_kwargs = dict(kwargs)
        if checkpoint is not None:
            ckpt = ckpt if ckpt is not None else load_checkpoint_file(checkpoint)
            if "encoder" in ckpt:
                stored = ckpt["encoder"]
                if stored["name"] != name:
                    raise CheckpointError(checkpoint, f"holds audio encoder {stored['name']!r}, not {name!r}")
                build_kwargs = {**stored.get("kwargs", {}), **kwargs}
            state = ckpt.get("state_dict", ckpt)
        encoder = _build(name, builder, build_kwargs)
        if state is not None:
            try:
                encoder.load_state_dict(state)
            except RuntimeError as e:
                raise CheckpointError(checkpoint, f"weights do not fit audio encoder {name!r} built with "
                                      f"{build_kwargs}: {e}") from None
    if not isinstance(encoder, AudioEncoder):
        raise TypeError(f"builder of audio encoder {name!r} returned {type(encoder).__name__}, not an AudioEncoder")
    encoder.registry_name = name
    if checkpoint is not None:
        _resolve_tower_file(encoder, checkpoint)
        trained_on = ((ckpt or {}).get("config") or {}).get("data", {}).get("audio_seconds")
        if trained_on:  # a train.py checkpoint: the window it learned on (localize's default window)
            encoder.clip_seconds = float(trained_on)
    if not hasattr(encoder, "config"):
        encoder.config = build_kwargs
    if device is not None:
        encoder.to(device)
    return encoder.eval()


WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _resolve_tower_file(encoder: AudioEncoder, checkpoint) -> None:
    """A checkpoint may name its CLIP weights file relative to its own folder (as the shipped
    ``checkpoints/world/audio.pt`` names ``clip.pt``), so the pair works wherever it is cloned:
    such a path is made absolute. Other values (tags, absolute paths) are left as they are."""
    pretrained = getattr(encoder, "clip_pretrained", None)
    if not pretrained or Path(str(pretrained)).is_absolute():
        return
    beside = Path(str(checkpoint)).expanduser().resolve().parent / str(pretrained)
    if beside.is_file():
        encoder.clip_pretrained = str(beside)
    elif Path(str(pretrained)).suffix in WEIGHT_SUFFIXES and not Path(str(pretrained)).is_file():
        # a checkpoint copied without its tower file: say so when the tower is needed, not before
        encoder.clip_pretrained = str(beside)
        encoder.missing_tower_file = (
            f"audio encoder {checkpoint} pairs with the image tower weights {pretrained!r}, kept beside it, but "
            f"{beside} does not exist: copy {pretrained} next to the checkpoint (it was written with it), or "
            f"name the tower with `model` and `pretrained`")


def load_weights_mmap(path) -> dict:
    """``torch.load(path, weights_only=True, mmap=True)`` (tensors stay on disk until used); a
    legacy-format file is read whole; unreadable files raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) format cannot be memory-mapped; corrupt files: clear error
        obj = load_checkpoint_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict (a state dict or a checkpoint), found {type(obj).__name__}")
    return obj


def stored_encoder_kwargs(checkpoint: dict, name: str, kwargs: dict) -> dict:
    """Builder arguments for a checkpoint: those stored in an avlegrad checkpoint of encoder ``name``
    (written by ``encoder_checkpoint`` / ``train.py``), updated by ``kwargs``; else ``kwargs``."""
    spec = checkpoint.get("encoder") if checkpoint.get("format") == CHECKPOINT_FORMAT else None
    if isinstance(spec, dict) and spec.get("name") == name:
        return {**spec.get("kwargs", {}), **kwargs}
    return dict(kwargs)


def build_pretrained_encoder(cls, name: str, *, what: str, url: str, filename: str, sha256: str | None, load_file,
                             checkpoint=None, pretrained: bool = True, progress: bool = True, **kwargs):
    """A published encoder ``cls`` (registered as ``name``, called ``what`` in messages) with its
    official weights.

    ``checkpoint``: a weights file read by ``load_file`` (official, a state dict, or ours: an
    avlegrad checkpoint's stored builder arguments are used, updated by ``kwargs``). None: the
    cached copy of ``url`` under the weights cache, downloaded when absent; ``pretrained=False``
    (and no checkpoint): random weights. A corrupt cached copy is reported as such.
    """
    from ..download import pretrained_weights_file

    cached = checkpoint is None and pretrained
    if cached:
        checkpoint = pretrained_weights_file(what, url, filename, sha256=sha256, progress=progress)
    if checkpoint is None:
        return cls(**kwargs).eval()
    try:
        state = load_file(checkpoint)
        encoder = cls(**stored_encoder_kwargs(state, name, kwargs))
        encoder.load_official_state_dict(state, source=checkpoint)
    except CheckpointError as e:
        if cached:
            raise CheckpointError(e.path, f"{e.reason}. This is the cached download: delete it to fetch "
                                  f"{url} again") from None
        raise
    return encoder.eval()
