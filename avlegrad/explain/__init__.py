"""Explainers: ``(images, targets) -> maps in [0, 1]`` for a ViT's image embedding."""
from .legrad import LeGrad  # noqa: F401
