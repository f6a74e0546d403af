"""Synthetic anomalies drawn on good images, for methods that learn from good parts only.

Every augmentation takes ``uint8 [H, W, 3]`` RGB and a ``np.random.Generator`` and returns
``(image, mask)``: a new image (the input is never modified) and ``bool [H, W]``, the
pixels it replaced. All randomness comes from the generator, so a seed reproduces a draw.

- CutPaste (Li et al., CVPR 2021): a rectangle of the image, colour-jittered, pasted
  elsewhere in it.
- scar-CutPaste: the same with a long thin patch, rotated.
- Stain (Collin & De Vleeschouwer, ICPR 2020): an irregular closed blob of one colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

Augmented = tuple[np.ndarray, np.ndarray]
Augmentation = Callable[[np.ndarray, np.random.Generator], Augmented]

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as torchvision's grayscale
# Scar sizes of the CutPaste paper at 256 px (width 2-16, length 10-25), as fractions of
# the smaller side so that a scar covers the same share of the part at any input size.
SCAR_WIDTH = (2 / 256, 16 / 256)
SCAR_LENGTH = (10 / 256, 25 / 256)
STAIN_AXES = (0.01, 0.12)  # semi-axes, fractions of the smaller side (Collin's "size 1-12")
STAIN_COLOUR = (10, 220)  # fill levels (Collin's "color 10-220")
SUBPIXEL_BITS = 4  # cv2.fillPoly's fixed-point vertices: 1/16 px


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")


def colour_jitter(patch: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """torchvision's ColorJitter(b=c=s=h=strength) in numpy, in a fixed order: brightness,
    contrast (towards the mean grey), saturation (towards the pixel's grey), hue (a shift by
    up to ``strength`` of the colour circle)."""
    if strength <= 0:
        return patch.copy()
    x = patch.astype(np.float32) * rng.uniform(1 - strength, 1 + strength)
    mean_grey = float((x @ LUMA).mean())
    x = (x - mean_grey) * rng.uniform(1 - strength, 1 + strength) + mean_grey
    grey = (x @ LUMA)[..., None]
    x = grey + (x - grey) * rng.uniform(1 - strength, 1 + strength)
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
    # OpenCV's 8-bit hue runs 0..179 for the whole circle.
    shift = round(rng.uniform(-strength, strength) * 180)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _rotated(patch: np.ndarray, degrees: float, limit: tuple[int, int]) -> Augmented:
    """``patch`` rotated about its centre on a canvas that holds all of it (cropped to
    ``limit`` = (H, W) if larger), and the mask of the canvas pixels it covers."""
    h, w = patch.shape[:2]
    if degrees == 0.0:
        return patch, np.ones((h, w), bool)
    rad = math.radians(degrees)
    cw = min(limit[1], math.ceil(abs(w * math.cos(rad)) + abs(h * math.sin(rad))))
    ch = min(limit[0], math.ceil(abs(w * math.sin(rad)) + abs(h * math.cos(rad))))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    matrix[:, 2] += (cw - w) / 2, (ch - h) / 2
    # Nearest neighbour for the mask and the pixels alike: every pasted pixel is a real
    # pixel of the patch, and the mask says exactly which canvas pixels received one.
    canvas = cv2.warpAffine(patch, matrix, (cw, ch), flags=cv2.INTER_NEAREST)
    covered = cv2.warpAffine(np.ones((h, w), np.uint8), matrix, (cw, ch), flags=cv2.INTER_NEAREST)
    return canvas, covered.astype(bool)


def _cut_and_paste(
    image: np.ndarray, rng: np.random.Generator, patch_hw: tuple[int, int], jitter: float, rotation: tuple[float, float]
) -> Augmented:
    height, width = image.shape[:2]
    ph, pw = min(patch_hw[0], height), min(patch_hw[1], width)
    y, x = rng.integers(0, height - ph + 1), rng.integers(0, width - pw + 1)
    patch = colour_jitter(image[y : y + ph, x : x + pw], rng, jitter)
    patch, covered = _rotated(patch, float(rng.uniform(*rotation)), (height, width))
    ph, pw = covered.shape
    y, x = rng.integers(0, height - ph + 1), rng.integers(0, width - pw + 1)
    out, mask = image.copy(), np.zeros((height, width), bool)
    out[y : y + ph, x : x + pw][covered] = patch[covered]
    mask[y : y + ph, x : x + pw] = covered
    return out, mask


def cutpaste(
    image: np.ndarray,
    rng: np.random.Generator,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    jitter: float = 0.1,
    rotation: tuple[float, float] = (0.0, 0.0),
) -> Augmented:
    """CutPaste: a rectangle of ``area`` × the image's area and width/height ratio in
    ``aspect``, colour-jittered, rotated by an angle in ``rotation`` (degrees; none in the
    paper), pasted at a random place of the same image."""
    _check_image(image)
    height, width = image.shape[:2]
    patch_area = rng.uniform(*area) * height * width
    # Log-uniform: a patch is as likely to be 3× wider than tall as 3× taller than wide.
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    pw = max(1, round(math.sqrt(patch_area * ratio)))
    ph = max(1, round(math.sqrt(patch_area / ratio)))
    return _cut_and_paste(image, rng, (ph, pw), jitter, rotation)


def scar_cutpaste(
    image: np.ndarray,
    rng: np.random.Generator,
    width: tuple[float, float] = SCAR_WIDTH,
    length: tuple[float, float] = SCAR_LENGTH,
    jitter: float = 0.1,
    rotation: tuple[float, float] = (-45.0, 45.0),
) -> Augmented:
    """scar-CutPaste: a thin rectangle (``width`` × ``length``, fractions of the smaller
    side), colour-jittered, rotated by an angle in ``rotation`` (degrees), pasted elsewhere."""
    _check_image(image)
    side = min(image.shape[:2])
    pw = max(1, round(rng.uniform(*width) * side))
    ph = max(1, round(rng.uniform(*length) * side))
    return _cut_and_paste(image, rng, (ph, pw), jitter, rotation)


def stain_outline(
    rng: np.random.Generator,
    centre: tuple[float, float],
    axes: tuple[float, float],
    n_points: int = 20,
    irregularity: float = 0.1,
) -> np.ndarray:
    """``float [M, 2]`` (x, y) closed outline of a stain: ``n_points`` spread around the
    ellipse of semi-axes ``axes``, rotated at random, each moved by up to ``irregularity`` ×
    the mean semi-axis, sorted by polar angle about the centre and joined by a periodic
    cubic spline."""
    a, b = axes
    # One point per equal sector, at a random place in it: spread all round, never bunched.
    t = (np.arange(n_points) + rng.uniform(0, 1, n_points)) * (2 * math.pi / n_points)
    tilt = rng.uniform(0, math.pi)
    ex, ey = a * np.cos(t), b * np.sin(t)
    x = ex * math.cos(tilt) - ey * math.sin(tilt)
    y = ex * math.sin(tilt) + ey * math.cos(tilt)
    reach = irregularity * (a + b) / 2
    x, y = x + rng.uniform(-reach, reach, n_points), y + rng.uniform(-reach, reach, n_points)
    order = np.argsort(np.arctan2(y, x))
    points = np.stack([x[order], y[order]], axis=1)
    closed = np.concatenate([points, points[:1]])
    spline = CubicSpline(np.arange(n_points + 1), closed, bc_type="periodic")
    # About one sample per pixel of perimeter (Ramanujan's estimate), at least 8 per span.
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    samples = max(8 * n_points, math.ceil(perimeter))
    return spline(np.linspace(0, n_points, samples, endpoint=False)) + np.asarray(centre)


def stain(
    image: np.ndarray,
    rng: np.random.Generator,
    axes: tuple[float, float] = STAIN_AXES,
    n_points: int = 20,
    irregularity: float = 0.1,
    colour: tuple[int, int] = STAIN_COLOUR,
    grey: bool = False,
) -> Augmented:
    """Stain noise: a blob whose outline is ``stain_outline`` around an ellipse with each
    semi-axis drawn in ``axes`` × the smaller image side (independently: random eccentricity),
    filled with one random colour (one random grey level if ``grey``) from ``colour``. The
    whole blob lies inside the image."""
    _check_image(image)
    height, width = image.shape[:2]
    side = min(height, width)
    a, b = rng.uniform(*axes, size=2) * side
    margin = max(a, b) * (1 + irregularity) + 1
    centre = tuple(
        rng.uniform(margin, extent - margin) if extent > 2 * margin else extent / 2 for extent in (width, height)
    )
    outline = stain_outline(rng, centre, (a, b), n_points, irregularity)
    vertices = np.round(outline * (1 << SUBPIXEL_BITS)).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [vertices], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    levels = rng.integers(colour[0], colour[1] + 1, size=1 if grey else 3)
    out, covered = image.copy(), mask.astype(bool)
    out[covered] = levels.astype(np.uint8)
    return out, covered
