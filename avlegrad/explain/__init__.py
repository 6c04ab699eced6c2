"""Explainers: ``(images, targets) -> maps in [0, 1]`` for a ViT's image embedding.

Each explainer module registers itself with ``@register_explainer(name)``; importing it here is
all a new one needs (``docs/extending.md``).
"""
from . import adapters  # noqa: F401  (registers the model families)
from .adapters import UnsupportedModelError, register_adapter  # noqa: F401
from .base import EXPLAINERS, Explainer, min_max_normalize, per_target_gradients, register_explainer  # noqa: F401
from .legrad import LeGrad  # noqa: F401
from .baselines import AttentionRollout, CheferCAM, DenseSimilarity, GradCAM, RawAttention  # noqa: F401
from .input_gradient import InputGradient  # noqa: F401
from .video import legrad_video  # noqa: F401  (frames x patches: PE-AV's video branch)


def __getattr__(name):
    if name == "SUPPORTED_MODELS":  # generated from the adapter registry
        return adapters.supported_models()
    raise AttributeError(name)


def list_explainers() -> list[str]:
    return list(EXPLAINERS)


def create_explainer(name: str, model, **kwargs) -> Explainer:
    """An explainer by name (``legrad``, ``similarity``, ...) for ``model``; kwargs go to its
    constructor (``layer_index`` for LeGrad)."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}; choose from {', '.join(list_explainers())}")
    return EXPLAINERS[name](model, **kwargs)
