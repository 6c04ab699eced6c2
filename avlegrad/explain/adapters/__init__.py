"""Model adapters: one module per ViT family, each registered with ``@register_adapter``.

Importing this package registers the built-in families; a new family is one more module here
(and its import below), see ``docs/extending.md``.
"""
from .base import (  # noqa: F401
    ModelAdapter, PatchLayout, UnsupportedModelError, ViTAdapter, adapter_for, cosines, image_embedding, refuse,
    register_adapter, registered_adapters, supported_models, supported_models_markdown)
from .open_clip import OpenCLIPViT  # noqa: F401
from .timm import TimmViT  # noqa: F401
from .torchvision import TorchvisionViT  # noqa: F401
from .eva import EvaViT  # noqa: F401,E402
from .coca import OpenCLIPCoCa  # noqa: F401,E402
from .hf import HFCLIPViT, HFSiglipViT  # noqa: F401,E402
from .pe_av import PeAVFrameTower  # noqa: F401,E402
from .audio import ImageBindAudioTower, TimmAudioViT  # noqa: F401  (audio ViTs on log-mel: issue 16)
