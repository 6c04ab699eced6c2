"""Heatmaps a person can look at: colour overlays on the frame, boxes, PNG files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .fileio import write_bytes_atomic

COLORMAPS = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "turbo": cv2.COLORMAP_TURBO}


def colorize(heatmap, colormap: str = "jet") -> np.ndarray:
    """A map in [0, 1] (numpy or torch, ``[h, w]``) -> ``[h, w, 3]`` uint8 RGB."""
    heat = np.asarray(heatmap.detach().cpu() if hasattr(heatmap, "detach") else heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D [h, w], got shape {heat.shape}")
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose from {', '.join(COLORMAPS)}")
    heat8 = np.uint8(np.clip(heat, 0, 1) * 255)
    return cv2.cvtColor(cv2.applyColorMap(heat8, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap (resized bilinearly to the image) over an ``[H, W, 3]`` uint8 RGB image."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = colorize(heatmap, colormap)
    H, W = image.shape[:2]
    if colour.shape[:2] != (H, W):
        colour = cv2.resize(colour, (W, H), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(np.ascontiguousarray(image, dtype=np.uint8), 1 - alpha, colour, alpha, 0)  # fast: videos


def draw_boxes(image: np.ndarray, boxes, color=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """Draw pixel boxes ``[x0, y0, x1, y1]`` on a copy of the image."""
    out = np.ascontiguousarray(image).copy()
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), color, thickness)
    return out


def save_image(path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image (PNG/JPEG by suffix) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if path.suffix.lower() in ("", ".png") else []
    ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode an image as {path.suffix!r} for {path}")
    return write_bytes_atomic(path, data.tobytes())
