"""How a benchmark's clips are scored inside ``evaluate``'s run: the :class:`Scoring` protocol and
the registry of scoring kinds.

A dataset names its kind (``@register_dataset(..., scoring="boxes")``, or one kind per split);
``avlegrad.eval.run.scoring_for`` builds the registered class of that kind. Adding a kind is one
module (see docs/extending.md, "Adding a scoring kind")::

    @register_scoring("points")
    class PointScoring(Scoring):
        baselines = ("center",)
        def is_done(self, row, out): ...
        def score(self, record, maps, i, out): ...
        def save_overlay(self, path, record, heatmap, image_size): ...
        def summarise(self, out, scored, methods): ...
        def format_table(self, summary): ...

imported by the module of the dataset that uses it (so it is registered first). The built-in
kinds (``boxes``, ``masks``, ``sound-following``) are imported on first use. This module imports
nothing of the package, so any module may register into it without an import cycle.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

# the built-in kinds and the modules registering them (imported when a kind is first asked for)
BUILTIN_SCORINGS = {"boxes": "avlegrad.eval.boxes", "masks": "avlegrad.eval.masks",
                    "sound-following": "avlegrad.eval.sound_following"}

_SCORINGS: dict[str, type] = {}


class Scoring(ABC):
    """The protocol ``avlegrad.eval.run`` runs a benchmark through.

    One instance per run, built from the run's ``EvalOptions`` (``__init__`` raises ValueError,
    naming the option, for an option that does not apply to this kind). Per run: :meth:`start`
    once, then per batch :meth:`observe_batch` and per clip :meth:`score` (its row is appended to
    ``clips.jsonl``), :meth:`save_overlay` for the first ``save_overlays`` clips; at the end
    :meth:`summarise` over the rows :meth:`is_done` accepts, printed by :meth:`format_table`.

    ``maps[method]`` is a float32 CPU tensor ``(B, H, W)`` of maps in [0, 1] for the batch, ``i``
    the clip's index in it; ``record`` a :class:`avlegrad.data.record.ClipRecord`; ``out`` the run
    folder. Rows are JSON objects holding at least ``clip_id``; a clip that cannot be scored (no
    annotation) gets ``"scored": False``.
    """

    kind: str = ""  # set by @register_scoring
    baselines: tuple[str, ...] = ()
    """Method names computed without a model (the centre prior, ...): ``--method`` accepts them."""

    def __init__(self, opts):
        self.opts = opts

    def start(self, out: Path, opts, is_main: bool) -> None:
        """Once per run, before any clip is scored (e.g. clear stored maps on ``overwrite``)."""

    def observe_batch(self, model, images, targets, maps: dict, explainers: dict) -> None:
        """Once per batch, before its clips are scored (under the run's autocast): ``images``
        ``(B, 3, S, S)`` on the device, ``targets`` ``(B, D)`` embeddings, ``explainers`` by method
        name. For what a kind needs beyond the maps (e.g. a confidence per clip); default: nothing."""

    @abstractmethod
    def is_done(self, row: dict, out: Path) -> bool:
        """Whether ``row`` (from ``clips.jsonl``) is a finished score: a resumed run skips its clip."""

    @abstractmethod
    def score(self, record, maps: dict, i: int, out: Path) -> dict:
        """The ``clips.jsonl`` row of clip ``record`` (index ``i`` of the batch's ``maps``)."""

    @abstractmethod
    def save_overlay(self, path: Path, record, heatmap, image_size: int) -> None:
        """A picture of ``heatmap`` ``(H, W)`` over the clip's frame (with its annotation) at ``path``."""

    @abstractmethod
    def summarise(self, out: Path, scored: list[dict], methods: list[str]) -> dict:
        """The summary's figures over the done rows: ``{"methods": {method: {"n": N, ...}}, ...}``
        (merged into ``summary.json``), for every method and baseline in ``methods``."""

    @abstractmethod
    def format_table(self, summary: dict) -> str:
        """The summary's figures as a table (x100 as papers print them), baselines beside the methods."""


def register_scoring(kind: str):
    """Class decorator registering a :class:`Scoring` subclass as scoring ``kind``. Raises
    ValueError for an empty name, a class that is not a Scoring, or a kind registered by another
    class."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a scoring kind needs a non-empty name, got {kind!r}")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Scoring)):
            raise ValueError(f"scoring {kind!r}: {cls!r} is not a subclass of avlegrad.scoring.Scoring")
        old = _SCORINGS.get(kind)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"scoring {kind!r} is already registered by {old.__module__}.{old.__qualname__}")
        cls.kind = kind
        _SCORINGS[kind] = cls
        return cls

    return decorate


def is_scoring_kind(kind) -> bool:
    """Whether ``kind`` names a registered or built-in scoring kind (imports nothing)."""
    return isinstance(kind, str) and (kind in _SCORINGS or kind in BUILTIN_SCORINGS)


def list_scorings() -> list[str]:
    """The scoring kinds: the built-in ones first, then those registered since."""
    return list(dict.fromkeys([*BUILTIN_SCORINGS, *_SCORINGS]))


def scoring_class(kind: str) -> type:
    """The Scoring class of ``kind`` (a built-in kind's module is imported on first use);
    ValueError naming the valid kinds if there is none."""
    if kind not in _SCORINGS and kind in BUILTIN_SCORINGS:
        importlib.import_module(BUILTIN_SCORINGS[kind])
    cls = _SCORINGS.get(kind)
    if cls is None:
        raise ValueError(f"unknown scoring kind {kind!r}; valid: {', '.join(list_scorings())}")
    return cls
