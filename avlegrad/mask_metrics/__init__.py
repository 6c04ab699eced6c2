"""The registry of metric variants of the segmentation benchmarks (scoring kind ``masks``).

A segmentation run stores every clip's maps and scores them at the end, per method, under each
*metric variant* asked for (``EvalOptions(seg_metrics=[...])``, ``eval.py --seg-metrics``; by
default the dataset's own, declared by its registration: ``register_dataset(..., metrics=...)``).
A variant is one function registered with its figures and a one-line description::

    @register_mask_metric("my-miou", figures=("mIoU",), description="... (source)")
    def my_miou(inputs: MaskMetricInputs) -> dict:
        return {"mIoU": ...}

in a module of this package (every module here is imported on the registry's first use, so a new
variant needs no line elsewhere) or anywhere else that is imported before the run (the decorator
registers it). The shipped variants: :mod:`avlegrad.mask_metrics.builtin` (DenseAV, TACO, AVSBench;
their rules in :mod:`avlegrad.segmentation_metrics` and docs/segmentation.md).

Protocol: the function gets one method's :class:`MaskMetricInputs` (all scored clips, dataset
order) and returns a JSON-able dict holding at least every name of ``figures`` (fractions in
[0, 1], NaN where undefined). It is stored in ``summary.json`` under
``methods[<method>][<variant>]``; the printed table shows ``<variant>:<figure>`` x100.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence


@dataclass
class MaskMetricInputs:
    """One method's maps over a run's scored clips, as every variant gets them.

    ``maps[i]``: clip ``i``'s map, a 2-D numpy array at the explainer's own resolution, float16 as
    the run stores it (float32 for the baselines; ``segmentation_metrics.as_float32`` converts it;
    each variant resizes it to the mask as its reference does); ``gts[i]``: its bool mask ``[H, W]``;
    ``class_ids[i]``: the prompt's class (``"all"`` where the dataset has none). The sequences may
    load lazily (only ``len`` and indexing are used). ``batch_frames``: the frames per batch of
    AVSBench's official batched figures (``EvalOptions.avsbench_batch_frames``).
    """

    maps: Sequence
    gts: Sequence
    class_ids: Sequence[Hashable]
    batch_frames: int = 20
    _shared: dict = field(default_factory=dict, init=False, repr=False)

    def shared(self, key: str, build: Callable):
        """``build()``, computed once per method and shared by the variants that ask for the same
        ``key`` (e.g. one pass over the frames feeding both AVSBench variants)."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]


@dataclass(frozen=True)
class MaskMetric:
    """A registered variant: ``fn(inputs) -> dict``, the ``figures`` its dict holds (the table's
    columns, in order) and a one-line ``description`` (definition and source)."""

    name: str
    fn: Callable
    figures: tuple
    description: str

    def __call__(self, inputs: MaskMetricInputs) -> dict:
        result = self.fn(inputs)
        missing = [f for f in self.figures if not isinstance(result, dict) or f not in result]
        if missing:
            raise ValueError(f"mask metric {self.name!r} returned no {', '.join(missing)} "
                             f"(its declared figures: {', '.join(self.figures)})")
        return result


_VARIANTS: dict[str, MaskMetric] = {}
_loaded = False
_loading = False


def _load_builtins() -> None:
    """Import every module of this package once (each registers its variants): ``builtin`` first,
    then the others in name order. Also called by the first registration, so that a variant
    registered from elsewhere comes after the shipped ones."""
    global _loaded, _loading
    if not (_loaded or _loading):
        _loading = True  # the package's modules register while being imported here
        try:
            for name in ["builtin", *sorted(i.name for i in pkgutil.iter_modules(__path__) if i.name != "builtin")]:
                importlib.import_module(f"{__name__}.{name}")
            _loaded = True
        finally:
            _loading = False


def register_mask_metric(name: str, *, figures, description: str):
    """Decorator registering ``fn(inputs: MaskMetricInputs) -> dict`` as metric variant ``name``.

    ``figures``: the names (non-empty) of the dict's figures the table prints; ``description``: one
    line, the definition and its source. Raises ValueError for an empty name, no figures, or a name
    registered by another function."""
    figures = (figures,) if isinstance(figures, str) else tuple(figures)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a mask metric needs a non-empty name, got {name!r}")
    if not figures or not all(isinstance(f, str) and f for f in figures):
        raise ValueError(f"mask metric {name!r}: figures must be a non-empty list of names, got {figures!r}")

    def decorate(fn):
        _load_builtins()  # the shipped variants first, whatever registers first
        old = _VARIANTS.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"mask metric {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}")
        _VARIANTS[name] = MaskMetric(name, fn, figures, description)
        return fn

    return decorate


def list_mask_metrics() -> list[str]:
    """Registered variant names, in registration order (the shipped ones first)."""
    _load_builtins()
    return list(_VARIANTS)


def mask_metric(name: str) -> MaskMetric:
    """The registered variant ``name``; ValueError naming the valid ones if unknown."""
    _load_builtins()
    if name not in _VARIANTS:
        raise ValueError(f"unknown segmentation metric {name!r}; choose from {', '.join(_VARIANTS)}")
    return _VARIANTS[name]


def mask_metrics_help() -> str:
    """One entry per registered variant (eval.py's ``--seg-metrics`` help)."""
    _load_builtins()
    return "; ".join(f"{n}: {v.description}" for n, v in _VARIANTS.items())


def score_mask_metrics(inputs: MaskMetricInputs, variants: list[str]) -> dict:
    """``{"n": clips, <variant>: figures, ...}``: one method's figures under each of ``variants``."""
    out: dict = {"n": len(inputs.gts)}
    for name in variants:
        out[name] = mask_metric(name)(inputs)
    return out
