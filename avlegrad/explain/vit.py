"""The adapters' former home, kept so existing imports work: see :mod:`avlegrad.explain.adapters`."""
from .adapters import (  # noqa: F401
    ModelAdapter, OpenCLIPViT, TimmViT, UnsupportedModelError, ViTAdapter, adapter_for, supported_models)
from .adapters.base import SCORE_TOKENS, cosines, refuse, score_token, token_mean  # noqa: F401


def __getattr__(name):
    if name == "SUPPORTED_MODELS":  # generated from the registry, so adapters registered later count
        return supported_models()
    raise AttributeError(name)
