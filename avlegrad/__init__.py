"""avlegrad: sound-source localization by explaining CLIP image ViTs with LeGrad.

The public API (each name is loaded from its module on first use, so ``import avlegrad`` stays
light): explainers (``LeGrad``, ``create_explainer``, ``list_explainers``), audio encoders
(``create_audio_encoder``, ``list_audio_encoders``, ``register_audio_encoder``,
``TrainingContract``), datasets (``create_dataset``, ``list_datasets``, ``register_dataset``),
metric variants of the box benchmarks (``list_box_metrics``, ``register_box_metric``,
``BoxMetricVariant``) and the benchmark run (``evaluate``, ``EvalOptions``). Adding one of these:
docs/extending.md.
"""
__version__ = "0.1.0"

from .explain import LeGrad  # noqa: E402,F401

_LAZY = {
    "create_explainer": "avlegrad.explain", "list_explainers": "avlegrad.explain",
    "create_audio_encoder": "avlegrad.audio", "list_audio_encoders": "avlegrad.audio",
    "register_audio_encoder": "avlegrad.audio", "TrainingContract": "avlegrad.audio",
    "create_dataset": "avlegrad.data", "list_datasets": "avlegrad.data", "register_dataset": "avlegrad.data",
    "list_box_metrics": "avlegrad.box_metrics", "register_box_metric": "avlegrad.box_metrics",
    "BoxMetricVariant": "avlegrad.box_metrics",
    "evaluate": "avlegrad.eval", "EvalOptions": "avlegrad.eval",
}

__all__ = ["LeGrad", *_LAZY, "__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'avlegrad' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
