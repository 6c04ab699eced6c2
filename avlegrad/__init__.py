"""avlegrad: sound-source localization by explaining CLIP image ViTs with LeGrad."""
__version__ = "0.1.0"

from .explain import LeGrad  # noqa: E402,F401
