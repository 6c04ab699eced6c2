"""The registry of benchmark datasets: ``create_dataset``, ``list_datasets`` and eval.py's
``--dataset`` help are generated from it.

Adding a benchmark is one module holding a decorated builder (see docs/extending.md)::

    @register_dataset("my-boxes", splits=("test",), default_root="my_boxes",
                      hint="put frames/ and audio/ under root", scoring="boxes")
    def my_boxes(root, *, split, sample_rate, annotations, limit, media) -> ClipDataset: ...

and the import that registers it (``avlegrad/data/__init__.py``). The builder gets a split among
``splits`` (checked before it is called) and returns a :class:`~avlegrad.data.base.ClipDataset`
whose records carry ``boxes`` + ``box_format`` (scoring ``"boxes"``: cIoU, AP50, AUC by the
EZ-VSL protocol) or a ``mask`` (scoring ``"masks"``); ``scoring`` names a kind registered in
:mod:`avlegrad.scoring` (or maps each split to one). This module imports nothing of the package
but :mod:`avlegrad.scoring` (which imports nothing), so any module may register into it without
an import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..scoring import is_scoring_kind, list_scorings


@dataclass(frozen=True)
class DatasetSpec:
    """A registered benchmark: its builder, splits (the first is the default), the folder name it
    is looked for under ``$AVLEGRAD_DATA`` (default ``./datasets``), a one-line hint saying where to
    get the data, and how its clips are scored: a kind of :func:`avlegrad.scoring.list_scorings`,
    or a dict ``{split: kind}`` (see :meth:`scoring_kind`); ``metrics``: the metric variants its
    scoring uses by default (segmentation: names of :func:`avlegrad.mask_metrics.list_mask_metrics`),
    a tuple or a dict ``{split: tuple}`` (see :meth:`default_metrics`)."""

    name: str
    builder: Callable
    splits: tuple
    default_root: str
    hint: str
    scoring: str | dict
    metrics: tuple | dict = ()

    def scoring_kind(self, split: str | None = None) -> str:
        """The scoring kind of ``split`` (default: the first split)."""
        if isinstance(self.scoring, str):
            return self.scoring
        return self.scoring[split if split in self.scoring else self.splits[0]]

    def default_metrics(self, split: str | None = None) -> tuple:
        """The metric variants scored on ``split`` when the run names none (default: the first
        split's); empty where the dataset declares none."""
        if isinstance(self.metrics, dict):
            return tuple(self.metrics.get(split if split in self.metrics else self.splits[0], ()))
        return tuple(self.metrics)


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, splits=("test",), default_root: str | None = None, hint: str = "",
                     scoring: str = "boxes", metrics=()):
    """Decorator registering a dataset builder under ``name``.

    ``builder(root, *, split, sample_rate, annotations, limit, media)`` (``root``: a ``Path``,
    user-expanded) returns a ClipDataset. ``default_root``: the folder under ``$AVLEGRAD_DATA``
    (default: ``name``). ``scoring``: a registered scoring kind (:mod:`avlegrad.scoring`), or a
    dict giving each split its kind. ``metrics``: the metric variants scored when a run names none
    (for ``"masks"``: names of :func:`avlegrad.mask_metrics.list_mask_metrics`, checked when a run
    is scored), a list or a dict giving each split its list. Raises ValueError for an empty split
    list, an unknown scoring kind, a metrics dict naming a split not in ``splits``, or a name
    registered by another builder."""
    splits = tuple(splits)
    if not splits or not all(isinstance(s, str) and s for s in splits):
        raise ValueError(f"dataset {name!r}: splits must be a non-empty list of names, got {splits!r}")
    kinds = dict(scoring) if isinstance(scoring, dict) else {s: scoring for s in splits}
    if isinstance(scoring, dict) and set(kinds) != set(splits):
        raise ValueError(f"dataset {name!r}: scoring must give a kind for each split {splits!r}, got {scoring!r}")
    for kind in kinds.values():
        if not is_scoring_kind(kind):
            raise ValueError(f"dataset {name!r}: unknown scoring {kind!r}; valid: {', '.join(list_scorings())}")
    if isinstance(metrics, dict):
        if not set(metrics) <= set(splits):
            raise ValueError(f"dataset {name!r}: metrics names splits {sorted(set(metrics) - set(splits))} not in "
                             f"{splits!r}")
        metrics = {s: (v,) if isinstance(v, str) else tuple(v) for s, v in metrics.items()}
    else:
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics or ())

    def decorate(fn):
        old = _DATASETS.get(name)
        if old is not None and (old.builder.__module__, old.builder.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"dataset {name!r} is already registered by "
                             f"{old.builder.__module__}.{old.builder.__qualname__}")
        _DATASETS[name] = DatasetSpec(name, fn, splits, default_root or name, hint, scoring, metrics)
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Registered dataset names, in registration order (the built-in benchmarks first)."""
    return list(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ValueError naming the valid ones if it is not registered."""
    spec = _DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(_DATASETS)}")
    return spec


def dataset_help() -> str:
    """One line per registered dataset and its splits (eval.py's ``--dataset`` / ``--split`` help)."""
    return "; ".join(f"{s.name} ({' | '.join(s.splits)})" for s in _DATASETS.values())
