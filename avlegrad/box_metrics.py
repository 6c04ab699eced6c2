"""The registry of metric variants of the box benchmarks, beside the protocol's own figures.

The box benchmarks are scored by EZ-VSL's protocol (cIoU with the median threshold, AP50 =
cIoU@0.5, AUC; ``avlegrad.metrics``), always. A *metric variant* adds figures of its own, asked
for by name (``EvalOptions(box_metrics=[...])``, ``eval.py --box-metrics``). Adding one is one
module with a :class:`BoxMetricVariant` subclass decorated by ``@register_box_metric`` and the
name in ``BUILTIN_MODULES`` (or any import of the module); see docs/extending.md.

Protocol: ``clip(heatmap, gt)`` gets one clip's map (``[h, w]`` float, any size, as the explainer
returned it) and its ground-truth map (``[224, 224]`` float64, ``metrics.gt_map``) and returns
JSON numbers (a number, or lists of numbers), stored in ``clips.jsonl`` under the variant's name
(an interrupted run resumes: a clip is rescored only where it lacks a requested variant).
``summarise(values)`` gets every scored clip's value (dataset order) and returns the figures,
stored in ``summary.json`` under ``methods[<method>][<name>]``; ``table(figures)`` is one line of
the printed table.
"""
from __future__ import annotations

import numpy as np


class BoxMetricVariant:
    """A metric variant of the box benchmarks (see the module docstring for the protocol)."""

    name: str = ""
    description: str = ""  # one line: the definition and its source (paper, reference code)

    def clip(self, heatmap: np.ndarray, gt: np.ndarray):
        raise NotImplementedError

    def summarise(self, values: list) -> dict:
        raise NotImplementedError

    def table(self, figures: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if isinstance(v, (int, float)))


_VARIANTS: dict[str, type] = {}
# the modules of the shipped variants, imported on first use of the registry (they import this
# module: a top-level import here would be a cycle)
BUILTIN_MODULES = ("avlegrad.metrics_acl_fixed",)


_loading = False


def _load_builtins() -> None:
    """Import the shipped variants' modules (also on the first registration, so that a variant
    registered from elsewhere comes after them)."""
    global _loading
    if _loading:  # a shipped module registering while being imported here
        return
    import importlib

    _loading = True
    try:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
    finally:
        _loading = False


def register_box_metric(cls: type) -> type:
    """Class decorator registering a :class:`BoxMetricVariant` subclass under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, BoxMetricVariant)) or not cls.name:
        raise ValueError(f"register_box_metric: {cls!r} is not a BoxMetricVariant subclass with a name")
    _load_builtins()  # the shipped variants first, whatever registers first
    old = _VARIANTS.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"box metric {cls.name!r} is already registered by {old.__module__}.{old.__qualname__}")
    _VARIANTS[cls.name] = cls
    return cls


def list_box_metrics() -> list[str]:
    """Registered box metric variant names, in registration order."""
    _load_builtins()
    return list(_VARIANTS)


def box_metric(name: str) -> BoxMetricVariant:
    """A new instance of the variant ``name``; ValueError naming the valid ones if unknown."""
    _load_builtins()
    if name not in _VARIANTS:
        raise ValueError(f"unknown box metric {name!r}; registered: {', '.join(_VARIANTS) or 'none'}")
    return _VARIANTS[name]()


def box_metrics_help() -> str:
    """One line per registered variant (eval.py's ``--box-metrics`` help)."""
    _load_builtins()
    return "; ".join(f"{n}: {c.description}" for n, c in _VARIANTS.items()) or "none registered"
