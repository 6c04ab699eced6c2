"""The adapter for Perception Encoder Audio-Visual's frame tower (``transformers``
``PeAudioVideoModel`` / ``PeVideoModel``, ``facebook/pe-av-*``): LeGrad explains the image ViT
that embeds each video frame, with respect to a target in PE-AV's audio-visual space (an audio
embedding from :mod:`avlegrad.audio.pe_av`, ``create_audio_encoder("pe-av")``).

What is reproduced (transformers 5.x ``models/pe_video/modeling_pe_video.py``:
``PeVideoEncoderEmbedder``, ``PeVideoEncoderPatchEmbedder``, ``PeVideoEncoder.forward``,
``PeVideoContrastiveHead``; ``models/pe_audio_video/modeling_pe_audio_video.py``
``PeAudioVideoModel.forward``, where ``video_embeds = video_model.video_head(video pooled)`` is
scored against ``audio_embeds``):

* each frame ``[3, H, W]`` goes through the frame tower, a timm Perception Encoder ``Eva``
  (``vit_pe_core_*``: RoPE, attention pooling, a classifier ``head`` into 1024-d), replayed by
  :class:`~.eva.EvaViT`;
* the frames' head outputs ``[B, T, 1024]`` are L2-normalised, projected (``proj``,
  ``data_proj``), given a class token and a 1-D ResNet block (``patch_embedder``), run through
  the video encoder's rotary transformer layers over the ``T + 1`` tokens, ``norm``, ``output``;
  the class token through ``video_head`` (LayerNorm, linear) is the video embedding ``[B, D]``.
  That temporal part is called as the model's own modules (read only), see :func:`video_embedding`.

A single frame is a video of one frame (``T = 1``): the frame's embedding is what the model gives
that one-frame video, and LeGrad is taken, as for every attention-pooled tower, at the frame
tower's attention pooler over each explained block's tokens (``Explainer(images [B, 3, H, W])``).
Several frames pooled by the video branch: :func:`avlegrad.explain.video.legrad_video` gives a map
per frame from the video embedding, ``[B, K, T, H, W]``.

transformers 5.24 has no working single-modality video method (``PeAudioVideoModel.get_video_embeds``
calls ``PeVideoModel.get_video_embeds``, which does not exist, and ``PeVideoModel``'s
``get_video_features`` is defined inside its ``__init__``): :meth:`PeAVFrameTower.model_forward`
composes ``video_head(video_encoder(pixel_values_videos).pooler_output)`` itself, which the tests
check against ``PeAudioVideoModel.forward``'s ``video_embeds``.

Refused: a video encoder with attention dropout (it would be applied in train mode).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import randomised_example, refuse, register_adapter
from .eva import EvaViT

PE_AV_CLASSES = ("PeAudioVideoModel", "PeVideoModel")


def is_pe_av(model) -> bool:
    """A ``transformers`` PE-AV model (or its video branch) whose frame tower is a timm Eva."""
    return type(model).__module__.startswith("transformers.") and type(model).__name__ in PE_AV_CLASSES


def video_branch(model):
    """The ``PeVideoModel`` of a ``PeAudioVideoModel`` (or the ``PeVideoModel`` itself)."""
    return model.video_model if type(model).__name__ == "PeAudioVideoModel" else model


def video_embedding(video, logits: torch.Tensor) -> torch.Tensor:
    """The video embedding ``[B, D]`` (unnormalised, where ``video_embeds`` lives) from the frame
    tower's head outputs ``logits`` ``[B, T, C]`` of the ``T`` frames of each video: the temporal
    part of ``PeVideoEncoder.forward`` (no padding: every frame counts) and ``video_head``."""
    enc = video.video_encoder
    emb = enc.embedder
    x = emb.data_proj(emb.proj(F.normalize(logits, dim=-1)))
    x, _ = enc.patch_embedder(x)  # class token first, then the 1-D ResNet block over the T + 1 tokens
    positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    rope = enc.rotary_emb(x, positions)
    for layer in enc.layers[:enc.config.num_hidden_layers]:
        x = layer(x, attention_mask=None, position_embeddings=rope)
    return video.video_head(enc.output(enc.norm(x))[:, 0])


def own_video_embeds(video, videos: torch.Tensor) -> torch.Tensor:
    """transformers' own video embedding of ``videos`` ``[B, T, 3, H, W]``: ``video_head`` of the
    video encoder's pooled output (what ``PeAudioVideoModel.forward`` returns as ``video_embeds``)."""
    return video.video_head(video.video_encoder(pixel_values_videos=videos).pooler_output)


@register_adapter("transformers_pe_av", matches=is_pe_av, priority=10)
class PeAVFrameTower(EvaViT):
    """Forward-pass pieces of PE-AV's frame tower; the embedding is the one-frame video embedding."""

    supported = ("transformers PeAudioVideoModel and PeVideoModel (Perception Encoder Audio-Visual, "
                 "facebook/pe-av-*): the frame tower, one frame or frames x patches (pip install -e \".[hf]\")")

    @staticmethod
    def find_trunk(model):
        video = video_branch(model)
        trunk = video.video_encoder.embedder.vision_model.timm_model
        return trunk, lambda logits: video_embedding(video, logits.unsqueeze(1))

    def __init__(self, model):
        from timm.models.eva import Eva

        video = video_branch(model)
        tower = getattr(getattr(video.video_encoder.embedder, "vision_model", None), "timm_model", None)
        if not isinstance(tower, Eva) or tower.attn_pool is None:
            refuse(f"this PE-AV frame tower is a {type(tower).__name__} without attention pooling, not a "
                   f"Perception Encoder Eva")
        if video.video_encoder.config.attention_dropout:
            refuse("this PE-AV video encoder has attention dropout")
        self.model = model
        self.video = video
        super().__init__(model)

    def frames_embedding(self, features: torch.Tensor) -> torch.Tensor:
        """The video embedding ``[B, D]`` from each frame's pooled features ``[B, T, F]`` (the
        frame tower's output before its classifier ``head``)."""
        return video_embedding(self.video, self.trunk.head(features))

    def model_forward(self, images: torch.Tensor) -> torch.Tensor:
        """transformers' own embedding of each image as a one-frame video, ``[B, D]``."""
        return own_video_embeds(self.video, images.unsqueeze(1))

    @classmethod
    def example_model(cls):
        """A tiny random-weight ``PeAudioVideoModel`` (the tests' configuration) on 32 px frames."""
        from ...audio.pe_av import build_random_model, tiny_config

        return randomised_example(lambda: build_random_model(tiny_config())), (3, 32, 32)
