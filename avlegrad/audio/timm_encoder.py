"""Our trainable encoder: log-mel -> any timm backbone (1 input channel) -> projection -> L2 norm."""
from __future__ import annotations

import torch
from torch import nn

from .base import AudioEncoder
from .factory import TrainingContract, register_audio_encoder
from .frontend import LogMel


class TimmAudioEncoder(AudioEncoder):
    """``LogMel`` -> ``timm.create_model(backbone, in_chans=1, num_classes=0)`` -> head -> unit vector.

    ``head``: ``"linear"`` (one Linear to ``embed_dim``) or ``"mlp"`` (Linear, GELU, Linear, with
    ``head_hidden`` units, default the backbone width). ``frontend``: LogMel arguments (its
    ``sample_rate`` is this encoder's). ``pretrained_backbone`` asks timm for ImageNet weights
    (downloads; off by default); the weights then live in the state dict, so ``config`` records
    False and a rebuild from a checkpoint never downloads. ``backbone_kwargs`` go to timm (e.g.
    ``img_size`` for a ViT backbone, ``drop_path_rate``).
    """

    def __init__(self, backbone: str = "resnet18", embed_dim: int = 512, head: str = "linear",
                 head_hidden: int | None = None, dropout: float = 0.0, sample_rate: int = 16000,
                 frontend: dict | None = None, pretrained_backbone: bool = False,
                 backbone_kwargs: dict | None = None, clip_model: str | None = "ViT-B-16",
                 clip_pretrained: str | None = "openai", clip_model_cfg: dict | None = None,
                 clip_init_seed: int = 0):
        super().__init__(sample_rate, embed_dim, clip_model, clip_pretrained, clip_model_cfg, clip_init_seed)
        import timm

        frontend = dict(frontend or {})
        frontend_rate = frontend.pop("sample_rate", sample_rate)
        if frontend_rate != sample_rate:
            raise ValueError(f"frontend sample_rate {frontend_rate} differs from the encoder's "
                             f"sample_rate {sample_rate}")
        self.frontend = LogMel(sample_rate=sample_rate, **frontend)
        self.backbone = timm.create_model(backbone, pretrained=pretrained_backbone, in_chans=1, num_classes=0,
                                          **(backbone_kwargs or {}))
        width = self.backbone.num_features
        if head == "linear":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, embed_dim))
        elif head == "mlp":
            hidden = int(head_hidden or width)
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, embed_dim))
        else:
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        self._min_frames: int | None = None  # found on first use (see min_samples)
        self.config = dict(backbone=backbone, embed_dim=int(embed_dim), head=head, head_hidden=head_hidden,
                           dropout=float(dropout), sample_rate=int(sample_rate), frontend=frontend,
                           pretrained_backbone=False, backbone_kwargs=dict(backbone_kwargs or {}),
                           clip_model=clip_model, clip_pretrained=clip_pretrained, clip_model_cfg=clip_model_cfg,
                           clip_init_seed=int(clip_init_seed))

    @property
    def min_samples(self) -> int:
        """The front-end's minimum, or more where the backbone needs more spectrogram frames (a
        ConvNeXt's strided stem and downsampling layers need 32 frames, 0.31 s at hop 160)."""
        if self._min_frames is None:
            self._min_frames = smallest_width(self.backbone, self.frontend.n_mels)
        return max(self.frontend.min_samples, (self._min_frames - 1) * self.frontend.hop_length)

    def encode(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.frontend(waveforms)))


def smallest_width(backbone: nn.Module, height: int, limit: int = 4096) -> int:
    """The fewest columns (time frames) a ``[1, 1, height, w]`` input may have for ``backbone`` to
    run, found by trying (doubling, then bisecting; one no-grad forward each, in eval mode, the
    module's mode restored); 1 when no width up to ``limit`` runs (e.g. a fixed-size ViT)."""
    param = next(backbone.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else ("cpu", torch.float32)

    def runs(width: int) -> bool:
        try:
            with torch.no_grad():
                backbone(torch.zeros(1, 1, height, width, device=device, dtype=dtype))
            return True
        except (RuntimeError, ValueError, AssertionError, IndexError):
            return False

    was_training = backbone.training
    backbone.eval()
    try:
        high = 1
        while not runs(high):
            if high >= limit:
                return 1
            high *= 2
        low = high // 2  # does not run (or 0)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if runs(mid) else (mid, high)
        return high
    finally:
        backbone.train(was_training)


@register_audio_encoder("timm", training=TrainingContract(),
                        test_config={"backbone": "test_convnext", "embed_dim": 32,
                                     "frontend": {"n_fft": 512, "n_mels": 32}})
def timm_audio_encoder(**kwargs) -> TimmAudioEncoder:
    """Any timm backbone on log-mel; see :class:`TimmAudioEncoder` for the arguments."""
    return TimmAudioEncoder(**kwargs)
