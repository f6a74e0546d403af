"""Synthetic anomalies made from good images, for methods that train a discriminator (GLASS's
LAS, SimpleNet's and GLASS's validation) or any other that wants DRAEM-style defects.

LAS (Chen et al., ECCV 2024): a Perlin-noise mask, cut to the part's foreground where a mask
is available, filled with an augmented texture blended into the image:
``img·(1−m) + (1−β)·tex·m + β·img·m``, β ~ N(0.5, 0.1) clipped to [0.2, 0.8].

Textures come from a folder (DTD's ``images/<category>/*.jpg`` layout works, any folder tree
of images does) or, without one, from a procedural generator, so training runs offline.

Everything draws from an explicit ``numpy.random.Generator``: a seeded generator gives the
same anomalies on every machine and on ``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from .data import IMAGE_SUFFIXES, DataError, load_image

PERLIN_SCALES = (0, 6)  # lattice cells per axis = 2^k, k drawn from [0, 6)
PERLIN_THRESHOLD = 0.5
PERLIN_ROTATION = 90.0  # degrees, either way
BETA_RANGE = (0.2, 0.8)
TEXTURE_AUGMENTATIONS = 3  # drawn without replacement from AUGMENTATIONS


# --- Perlin masks ----------------------------------------------------------------------------


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(size: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise ``float [H, W]`` in about [−1, 1], with ``cells`` = (rows, columns) of
    lattice cells across the image. Any H, W: lattice coordinates are computed per pixel,
    not tiled, so the size need not be a multiple of the cell count."""
    height, width = size
    angles = (2 * math.pi) * rng.random((cells[0] + 1, cells[1] + 1))
    grad_y, grad_x = np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)
    y = np.arange(height, dtype=np.float32) * np.float32(cells[0] / height)
    x = np.arange(width, dtype=np.float32) * np.float32(cells[1] / width)
    iy, ix = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        rows, cols = np.ix_(iy + dy, ix + dx)
        return grad_y[rows, cols] * (fy - dy) + grad_x[rows, cols] * (fx - dx)

    n00, n01, n10, n11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    ty, tx = _fade(fy), _fade(fx)
    top = n00 + tx * (n01 - n00)
    bottom = n10 + tx * (n11 - n10)
    # √2: the extreme of 2-D gradient noise is 1/√2, so this spans about [−1, 1].
    return np.float32(math.sqrt(2)) * (top + ty * (bottom - top))


def _rotate(image: np.ndarray, degrees: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(
        image, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _thresholded_noise(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    cells = tuple(2 ** int(rng.integers(*PERLIN_SCALES)) for _ in range(2))
    return _rotate(perlin_noise(size, cells, rng), rng.uniform(-PERLIN_ROTATION, PERLIN_ROTATION)) > PERLIN_THRESHOLD


def perlin_mask(size: tuple[int, int], rng: np.random.Generator, foreground: np.ndarray | None = None) -> np.ndarray:
    """``bool [H, W]`` anomaly region: one thresholded, rotated Perlin noise, or the union or
    the intersection of two (a third each), inside ``foreground`` when given. Never empty:
    drawn again until it covers at least one pixel (of the foreground)."""
    if foreground is not None and not foreground.any():
        raise ValueError("foreground mask is empty: no place for an anomaly")
    while True:
        first, second = _thresholded_noise(size, rng), _thresholded_noise(size, rng)
        pick = rng.random()
        mask = first | second if pick > 2 / 3 else first & second if pick > 1 / 3 else first
        if foreground is not None:
            mask &= foreground
        if mask.any():
            return mask


def patch_labels(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``bool [h, w]``: a feature cell is anomalous when any pixel it covers is (max pooling,
    as GLASS labels its features)."""
    height, width = mask.shape
    ry, rx = height // grid[0], width // grid[1]
    return np.asarray(mask[: grid[0] * ry, : grid[1] * rx].reshape(grid[0], ry, grid[1], rx).any(axis=(1, 3)))


# --- textures --------------------------------------------------------------------------------


def _palette(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``t`` in [0, 1] → RGB through 2–4 random colours, interpolated."""
    colours = rng.uniform(0, 255, size=(int(rng.integers(2, 5)), 3))
    stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / max(float(np.ptp(x)), 1e-6)


def _fractal(size: tuple[int, int], rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    base = 2 ** int(rng.integers(0, 3))
    octave_noise = (0.5**o * perlin_noise(size, (base * 2**o, base * 2**o), rng) for o in range(octaves))
    return sum(octave_noise, np.zeros(size, np.float32))  # float32, as perlin_noise


def _clouds(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return _normalise(_fractal(size, rng))


def _waves(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    # Stripes bent by noise: wood grain, brushed metal, fabric weave at other frequencies.
    y, x = np.mgrid[: size[0], : size[1]] / max(size)
    theta = rng.uniform(0, math.pi)
    phase = rng.uniform(2, 40) * (x * math.cos(theta) + y * math.sin(theta))
    return 0.5 + 0.5 * np.sin(2 * math.pi * (phase + rng.uniform(0, 3) * _fractal(size, rng, octaves=3)))


def _cells(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    # Checks and grids, rotated: the regular structure of tiles, meshes and knits.
    y, x = np.mgrid[: size[0], : size[1]].astype(np.float64)
    theta = rng.uniform(0, math.pi)
    u, v = x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)
    period = rng.uniform(4, max(size) / 3)
    checks = (np.floor(u / period) + np.floor(v / period)) % 2
    return _normalise(checks + 0.3 * _fractal(size, rng, octaves=3))


PATTERNS: tuple[Callable[[tuple[int, int], np.random.Generator], np.ndarray], ...] = (_clouds, _waves, _cells)


def procedural_texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random ``uint8 [H, W, 3]`` texture (clouds, bent stripes or rotated checks in random
    colours, with grain): the offline stand-in for a texture data set such as DTD."""
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))](size, rng)
    rgb = _palette(pattern, rng) + rng.normal(0.0, rng.uniform(0, 12), size=(*size, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


class TextureSource:
    """Texture images for synthetic anomalies: every image under ``folder`` (searched
    recursively, sorted), or procedural textures when ``folder`` is None."""

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.files: list[Path] = []
        if self.folder is not None:
            if not self.folder.is_dir():
                raise DataError(f"--textures {self.folder}: not a directory")
            self.files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise DataError(f"--textures {self.folder}: no images in it or its sub-folders")

    def describe(self) -> str:
        return f"{len(self.files)} images under {self.folder}" if self.files else "procedural"

    def sample(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """One ``uint8 [H, W, 3]`` RGB texture at ``size``, not yet augmented."""
        if not self.files:
            return procedural_texture(size, rng)
        return load_image(self.files[int(rng.integers(len(self.files)))], size)


# --- texture augmentation (GLASS draws 3 of these 9 per texture) -------------------------------


def _contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean()
    return np.clip(mean + rng.uniform(0.8, 1.2) * (img.astype(np.float32) - mean), 0, 255).astype(np.uint8)


def _brightness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)


def _saturation_hue(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + 180 * rng.uniform(-0.2, 0.2)) % 180  # OpenCV's hue circle is 0–180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.8, 1.2), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _hflip(img: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(img[:, ::-1])


def _vflip(img: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(img[::-1])


def _grayscale(img: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    return np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)


def _autocontrast(img: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    low, high = img.min(axis=(0, 1), keepdims=True), img.max(axis=(0, 1), keepdims=True)
    span = np.maximum(high.astype(np.float32) - low, 1.0)
    return np.clip((img - low.astype(np.float32)) * (255.0 / span), 0, 255).astype(np.uint8)


def _equalize(img: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)], axis=-1)


def _rotate45(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _rotate(img, rng.uniform(-45, 45))


AUGMENTATIONS: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (
    _contrast,
    _brightness,
    _saturation_hue,
    _hflip,
    _vflip,
    _grayscale,
    _autocontrast,
    _equalize,
    _rotate45,
)


def augment_texture(texture: np.ndarray, rng: np.random.Generator, n: int = TEXTURE_AUGMENTATIONS) -> np.ndarray:
    for i in rng.choice(len(AUGMENTATIONS), size=n, replace=False):
        texture = AUGMENTATIONS[i](texture, rng)
    return texture


# --- LAS -------------------------------------------------------------------------------------


def sample_beta(rng: np.random.Generator, mean: float = 0.5, std: float = 0.1) -> float:
    """How much of the original image stays visible under the texture."""
    return float(np.clip(rng.normal(mean, std), *BETA_RANGE))


def blend(image: np.ndarray, texture: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """``img·(1−m) + (1−β)·tex·m + β·img·m`` on ``uint8 [H, W, 3]`` images, ``mask`` bool or
    float in [0, 1] of shape [H, W]; rounded back to uint8 (the model's input type)."""
    img = image.astype(np.float32)
    m = np.asarray(mask, np.float32)[..., None]
    out = img * (1 - m) + (1 - beta) * texture.astype(np.float32) * m + beta * img * m
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def local_anomaly(
    image: np.ndarray,
    rng: np.random.Generator,
    textures: TextureSource,
    foreground: np.ndarray | None = None,
    beta_mean: float = 0.5,
    beta_std: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """GLASS's LAS on one ``uint8 [H, W, 3]`` image: (the image with a textured anomaly,
    its ``bool [H, W]`` mask)."""
    size = image.shape[:2]
    mask = perlin_mask(size, rng, foreground)
    texture = augment_texture(textures.sample(size, rng), rng)
    return blend(image, texture, mask, sample_beta(rng, beta_mean, beta_std)), mask
