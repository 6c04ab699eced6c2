"""Explainers: ``(images, targets) -> maps in [0, 1]`` for a ViT's image embedding."""
from .base import Explainer, min_max_normalize  # noqa: F401
from .legrad import LeGrad
from .vit import SUPPORTED_MODELS, UnsupportedModelError  # noqa: F401

EXPLAINERS = {"legrad": LeGrad}


def list_explainers() -> list[str]:
    return sorted(EXPLAINERS)


def create_explainer(name: str, model, **kwargs) -> Explainer:
    """An explainer by name (``legrad``, ...) for ``model``; kwargs go to its constructor."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}; choose from {', '.join(list_explainers())}")
    return EXPLAINERS[name](model, **kwargs)
