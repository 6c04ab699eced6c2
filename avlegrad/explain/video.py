"""LeGrad over several frames pooled into one video embedding (frames x patches).

A model whose video branch embeds ``T`` frames together (PE-AV: each frame through the frame
tower, then a temporal transformer over the frames, :mod:`avlegrad.explain.adapters.pe_av`) is
explained from that ONE video embedding: for each explained block ``l`` of the frame tower the
score is ``s_l = <t, normalize(video(pool_l(frame 1), ..., pool_l(frame T)))>``, where
``pool_l`` is the frame tower's attention pooler over block ``l``'s tokens of that frame (the
gradient site of every attention-pooled tower, as for a single image) and ``video`` the temporal
part of the model; each frame's map is the mean over heads of ``ReLU(d s_l / d A_l)`` at its
patch keys, summed over blocks. A frame that matters more for the video embedding gets more
relevance, so the maps of a video are normalised together (one min-max over its ``T x H x W``).
With ``T = 1`` this is LeGrad of the one-frame video, the single-image call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .adapters import UnsupportedModelError, cosines
from .base import min_max_normalize, per_target_gradients
from .legrad import LeGrad


def legrad_video(model, videos: torch.Tensor, targets: torch.Tensor, layer_index: int = -2) -> torch.Tensor:
    """LeGrad maps of each frame of each video w.r.t. the video's embedding.

    Args:
        model: a model whose adapter embeds frames jointly (``frames_embedding``): transformers
            ``PeAudioVideoModel`` / ``PeVideoModel`` (PE-AV). Only read.
        videos: ``[B, T, 3, H, W]`` frames, normalised for the model (the frame tower's size, or any
            size its patches tile).
        targets: ``[B, D]`` or ``[B, K, D]`` embeddings in the video embedding's space (e.g. PE-AV
            audio embeddings); need not be unit vectors.
        layer_index: the explained blocks of the frame tower, as :class:`~.legrad.LeGrad`.

    Returns:
        float32 maps, detached, ``[B, T, H, W]`` (``[B, D]`` targets) or ``[B, K, T, H, W]``; each
        video's (and target's) ``T`` maps min-max normalised together to [0, 1] (zeros where constant).

    Raises:
        UnsupportedModelError: the model has no video branch pooling frames.
        ValueError: videos or targets of the wrong shape, width or with NaN/inf values (one line).
    """
    explainer = LeGrad(model, layer_index=layer_index)
    vit = explainer.vit
    if not hasattr(vit, "frames_embedding") or vit.attention_pool is None:
        raise UnsupportedModelError(f"legrad_video needs a model whose video branch pools frames (PE-AV: "
                                    f"transformers PeAudioVideoModel / PeVideoModel), not a "
                                    f"{type(vit).__name__} model")
    if not torch.is_tensor(videos) or videos.ndim != 5 or videos.shape[2] != vit.channels:
        shape = tuple(videos.shape) if torch.is_tensor(videos) else type(videos).__name__
        raise ValueError(f"videos must be a tensor [B, T, {vit.channels}, H, W], got {shape}")
    B, T = videos.shape[:2]
    if T == 0:
        raise ValueError(f"videos {tuple(videos.shape)} hold no frame")
    frames = videos.flatten(0, 1)
    if not torch.is_tensor(targets) or not targets.is_floating_point() or targets.ndim not in (2, 3):
        shape = tuple(targets.shape) if torch.is_tensor(targets) else type(targets).__name__
        raise ValueError(f"targets must be a float tensor [B, D] or [B, K, D], got {shape}")
    if targets.shape[0] != B:
        raise ValueError(f"got {B} videos but targets for {targets.shape[0]} (targets {tuple(targets.shape)}: "
                         f"one row, or K rows, per video)")
    # each frame with its video's targets: the checks of a call (size, width, NaN/inf frames or targets)
    one_target = explainer._check(frames, targets.repeat_interleave(T, dim=0))
    with torch.inference_mode(False):
        targets = F.normalize(targets.to(frames.device, torch.float32), dim=-1)
        targets = targets.unsqueeze(1) if one_target else targets
        if B == 0:
            empty = frames.new_zeros(0, targets.shape[1], T, *frames.shape[-2:], dtype=torch.float32)
            return empty[:, 0] if one_target else empty
        grid_maps = _frame_relevance(explainer, frames, targets, T)  # [B*T, K, patches]
        gh, gw = vit.grid(*frames.shape[-2:])
        K = targets.shape[1]
        maps = vit.layout.to_input(grid_maps.float().reshape(B * T * K, 1, gh, gw), frames.shape[-2:])
        maps = maps.reshape(B, T, K, *frames.shape[-2:]).transpose(1, 2)  # [B, K, T, H, W]
        # one min-max per video and target over all its frames
        flat = min_max_normalize(maps.reshape(B, K, T * frames.shape[-2], frames.shape[-1]))
        maps = flat.reshape(maps.shape).detach()
    return maps[:, 0] if one_target else maps


def _frame_relevance(explainer: LeGrad, frames: torch.Tensor, targets: torch.Tensor, T: int) -> torch.Tensor:
    """``frames`` ``[B*T, 3, H, W]`` (video-major), unit ``targets`` ``[B, K, D]`` -> the summed
    relevance of each frame's patches ``[B*T, K, patches]``: one forward of all frames, one
    backward per target column (the explained blocks' scores summed, as LeGrad's)."""
    vit = explainer.vit
    x = vit.tokens_before(frames, explainer.first_layer)
    explained = set(explainer.layer_ids)
    grid = vit.grid(*frames.shape[-2:])
    outputs, values, scores = [], [], []
    with torch.enable_grad():
        for index in range(explainer.first_layer, vit.num_layers):
            with torch.no_grad():
                x = vit.block_forward(vit.blocks[index], x, grid)
                if index not in explained:
                    continue
                q, k, v = vit.pool_qkv(vit.pool_keys(x))
                o = vit.attend(q, k, v)
            o.requires_grad_(True)
            pooled = vit.trunk.fc_norm(vit.finish_pool(o, project=False))  # [B*T, F]
            video = vit.frames_embedding(pooled.reshape(-1, T, pooled.shape[-1]))  # [B, D]
            scores.append(cosines(video, targets))
            outputs.append(o)
            values.append(v)
        total = torch.stack(scores).sum(dim=0)  # [B, K]: videos are independent, their scores are summed
        return per_target_gradients(total, outputs,
                                    lambda grads: sum(explainer._pool_relevance(g, v) for g, v in zip(grads, values)))
