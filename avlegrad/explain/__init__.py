"""Explainers: ``(images, targets) -> maps in [0, 1]`` for a ViT's image embedding."""
from .base import Explainer, min_max_normalize  # noqa: F401
from .baselines import AttentionRollout, CheferCAM, DenseSimilarity, GradCAM, RawAttention
from .legrad import LeGrad
from .vit import SUPPORTED_MODELS, UnsupportedModelError  # noqa: F401

EXPLAINERS = {
    "legrad": LeGrad,
    "similarity": DenseSimilarity,
    "attention": RawAttention,
    "rollout": AttentionRollout,
    "gradcam": GradCAM,
    "chefercam": CheferCAM,
}


def list_explainers() -> list[str]:
    return list(EXPLAINERS)


def create_explainer(name: str, model, **kwargs) -> Explainer:
    """An explainer by name (``legrad``, ``similarity``, ...) for ``model``; kwargs go to its
    constructor (``layer_index`` for LeGrad)."""
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}; choose from {', '.join(list_explainers())}")
    return EXPLAINERS[name](model, **kwargs)
