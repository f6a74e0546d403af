"""The model's working resolution: ``--size PX`` (square), ``--size HxW`` (height × width,
e.g. ``640x256``) or ``--size auto`` (the training images' median aspect ratio at a pixel
budget). Every method's config keeps the value as given (``int`` or ``str``); the export
resolves ``auto`` from the training images before it trains, and everything downstream reads
``(height, width)`` through ``size_hw``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np

from edge.preprocess import read_image

from .data import DataError

log = logging.getLogger(__name__)

AUTO: Literal["auto"] = "auto"
DEFAULT_PIXEL_BUDGET = 256 * 256
AUTO_SAMPLE = 64  # images whose shape the median aspect ratio is taken over (spread over the set)
_HXW = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")

Size = tuple[int, int]  # (height, width), pixels
SizeSpec = int | str  # what a config holds: 256, "640x256", "512" or "auto"


def parse_size(value: SizeSpec) -> Size | Literal["auto"]:
    """``256`` / ``"256"`` → (256, 256); ``"640x256"`` → (640, 256); ``"auto"`` stays."""
    if isinstance(value, bool):
        raise ValueError(f"size {value!r}: expected PX, HxW (e.g. 640x256) or auto")
    if isinstance(value, int):
        return value, value
    text = str(value).strip()
    if text.lower() == AUTO:
        return AUTO
    if text.isdigit():
        return int(text), int(text)
    match = _HXW.match(text)
    if not match:
        raise ValueError(f"size {value!r}: expected PX, HxW (height x width, e.g. 640x256) or auto")
    return int(match[1]), int(match[2])


def size_hw(value: SizeSpec) -> Size:
    """(height, width) of a resolved size; ``auto`` must have been resolved by the export."""
    parsed = parse_size(value)
    if isinstance(parsed, str):
        raise ValueError("size auto: resolve it from the training images first (export.sizes.resolve_size)")
    return parsed


def format_size(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def check_size_spec(value: SizeSpec, multiple: int, why: str, minimum: int = 1) -> None:
    """Refuse a size whose sides are not multiples of ``multiple`` (``why``: what needs it) or
    below ``minimum``, in the config, before any training; ``auto`` is checked once resolved
    (it is rounded to ``multiple``)."""
    parsed = parse_size(value)
    if isinstance(parsed, str):
        return
    for side in parsed:
        if side < minimum:
            raise ValueError(f"size {value}: each side must be ≥ {minimum} px")
        if side % multiple:
            raise ValueError(f"size {value}: height and width must each be a multiple of {multiple} ({why})")


def image_shapes(files: Sequence[Path], sample: int = AUTO_SAMPLE) -> np.ndarray:
    """``int [n, 2]`` (height, width) of up to ``sample`` of ``files``, evenly spread."""
    picked = [files[int(i)] for i in np.unique(np.linspace(0, len(files) - 1, min(sample, len(files))).round())]
    shapes = []
    for path in picked:
        image, why = read_image(Path(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"{path}: {why}")
        shapes.append(image.shape[:2])
    return np.asarray(shapes, dtype=np.int64)


def auto_size(median_hw: tuple[float, float], budget: int, multiple: int) -> Size:
    """The size of aspect ratio ``median_hw`` whose area is closest to ``budget`` pixels, each
    side rounded to a multiple of ``multiple`` (at least one multiple)."""
    if budget < multiple * multiple:
        raise ValueError(f"pixel_budget {budget}: must be ≥ {multiple * multiple} ({multiple}² px)")
    aspect = median_hw[1] / median_hw[0]  # width / height
    height = math.sqrt(budget / aspect)
    return (
        max(multiple, round(height / multiple) * multiple),
        max(multiple, round(height * aspect / multiple) * multiple),
    )


ConfigT = TypeVar("ConfigT")


def resolve_size(config: ConfigT, files: Sequence[Path], multiple: int) -> ConfigT:
    """``config`` with ``size: auto`` replaced by ``"HxW"`` from ``files`` (the training
    images) and its ``pixel_budget``, said in the log; any other size unchanged."""
    cfg: Any = config
    if parse_size(cfg.size) != AUTO:
        return config
    median = np.median(image_shapes(files), axis=0)
    size = auto_size((float(median[0]), float(median[1])), cfg.pixel_budget, multiple)
    log.info(
        "--size auto: %dx%d images (median, HxW) → %s (budget %d px, sides multiples of %d)",
        round(median[0]),
        round(median[1]),
        format_size(size),
        cfg.pixel_budget,
        multiple,
    )
    return dataclasses.replace(cfg, size=format_size(size))


def size_argument(text: str) -> int | str:
    """argparse type of ``--size``: ``512`` → 512, ``640x256`` → ``"640x256"``, ``auto``."""
    import argparse

    try:
        parsed = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if isinstance(parsed, str):
        return AUTO
    return parsed[0] if text.strip().isdigit() else format_size(parsed)
