"""Frames of any size → the engine's uint8 [B, H, W, 3] input. Only a resize happens on the CPU:
scaling and normalisation are inside the graph (the engine contract)."""
from __future__ import annotations

import cv2
import numpy as np

from edge.types import Frame


def frame_problem(frame: Frame) -> str | None:
    """Why this frame cannot be judged, or None if it can."""
    img = frame.image
    if img is None:
        return frame.error or "no image"
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        return f"bad frame: expected HxWx3 uint8, got shape {shape} dtype {dtype}"
    if img.shape[0] < 8 or img.shape[1] < 8:
        return f"bad frame: {img.shape[1]}x{img.shape[0]} is too small to judge"
    return None


def resize(image: np.ndarray, height: int, width: int, dst: np.ndarray | None = None) -> np.ndarray:
    """``image`` at the model's size, written into ``dst`` when given. export-engine trains on
    images resized by this same function: a model must learn from the pixels the line feeds it."""
    # INTER_AREA when shrinking avoids aliasing that would look like texture defects.
    shrink = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), dst=dst, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_input(frames: list[Frame], height: int, width: int) -> np.ndarray:
    """Stack already-checked frames into one contiguous batch at the model's size."""
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        img = f.image
        if img.shape[:2] == (height, width):
            out[i] = img
        else:
            resize(img, height, width, dst=out[i])
    return out
