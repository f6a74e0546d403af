"""Frames of any size → the engine's uint8 [B, H, W, 3] input. Only a resize happens on the CPU:
scaling and normalisation are inside the graph (the engine contract)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.types import Frame

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})  # what the line, calibration and
# training read from a folder: one list, so a file the line would judge is never skipped elsewhere
JPEG_START = b"\xff\xd8"  # start-of-image marker: every JPEG file begins with it


def jpeg_cut_short(data: bytes) -> bool:
    """Whether a JPEG file ends before its image does: a camera still writing it into a folder, a
    copy broken off. OpenCV decodes such a file all the same, its missing rows grey, which a model
    may well pass as a good part. The end-of-image marker must follow the last start-of-scan (it
    cannot occur inside scan data; an EXIF thumbnail's own comes before; trailing bytes after it
    are allowed)."""
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> tuple[np.ndarray | None, str | None]:
    """An image file as the line reads it (and export-engine trains on it): by default 3-channel
    8-bit BGR for grayscale, palette and 16-bit files alike; or None and why not. Read as bytes,
    then decoded: a file that cannot be opened and one that is no image say so apart, and
    non-ASCII paths work on every platform."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, e.strerror or str(e)
    return decode_image(data, flags)


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR) -> tuple[np.ndarray | None, str | None]:
    """An encoded image (a file's bytes, an MJPEG frame) decoded, or None and why not."""
    # By its bytes, not its name: a whole PNG named .jpg is fine, a JPEG named .png is checked.
    if data[:2] == JPEG_START and jpeg_cut_short(data):
        return None, "the JPEG is cut short (no end of image)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    return image, None if image is not None else "not a decodable image (empty or corrupt file?)"


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
    """``image`` at the model's size, any size and aspect to any other, written into ``dst`` when
    given. export-engine trains on images resized by this same function: a model must learn from
    the pixels the line feeds it."""
    h, w = image.shape[:2]
    if (h - height) * (w - width) < 0:
        # One axis shrinks, the other grows (a long part into a squarer model): OpenCV's INTER_AREA
        # then samples the shrinking axis instead of averaging it (OpenCV 5.1: 1-px stripes shrunk
        # 4x across and doubled along came out at a quarter of full scale, not half), so shrink first.
        image = cv2.resize(image, (min(w, width), min(h, height)), interpolation=cv2.INTER_AREA)
    # INTER_AREA when shrinking avoids aliasing that would look like texture defects.
    shrink = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), dst=dst, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_input(frames: list[Frame], height: int, width: int) -> np.ndarray:
    """Stack already-checked frames into one contiguous batch at the model's size."""
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        img = f.pixels
        if img.shape[:2] == (height, width):
            out[i] = img
        else:
            resize(img, height, width, dst=out[i])
    return out
