"""The defect-size sheet: which defect sizes, in the camera's own pixels, a deployed bundle catches.

Synthetic defects of given sizes are planted on good parts the model never trained on (the
images export-engine held out, or a folder of good images), before the line's resize, and each
planted image is scored through the bundle on the line's backend. The share caught at the
calibrated threshold (score > threshold), per size and type, tells an integrator how many camera
pixels a defect must cover at this model's working resolution: the figure a camera and lens are
chosen by. Never planted on the test set: the sheet must not be tuned on what edge-eval measures.

Types (each one defect per image, hard-edged, so its mask is exactly the pixels it may change):
scratch, a line of that length (1 px wide up to 23 px, then length/16); spot, a disc of that
diameter; dent, a disc of that diameter shaded like a dimple lit from one side (one half
brighter, the other darker). Contrast: the defect moves the surface by `contrast` of full scale
(default 0.25, 64 grey levels), darker on a bright surface and brighter on a dark one (the local
mean decides), the surface texture kept underneath. That is a defect plainly visible at native
resolution; fainter ones need more pixels, so the sheet states the contrast it was made with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from tqdm import tqdm

from calibration.calibrate import CalibrationError, infer_rgb, read_rgb
from edge.backends import Backend
from edge.bundle import Bundle

Kind = Literal["scratch", "spot", "dent"]
KINDS: tuple[Kind, ...] = get_args(Kind)
DEFAULT_SIZES = (2, 4, 8, 16, 32, 64)
DEFAULT_CONTRAST = 0.25
# Defects land in the central part of the frame, where a fixtured part sits; never on the border,
# where a shrinking resize would cut them.
CENTRAL = 0.6


@dataclass(frozen=True, slots=True)
class Planted:
    image: np.ndarray  # uint8 [H, W, 3] RGB, the good image with the defect
    mask: np.ndarray  # bool [H, W]: the pixels the defect may change
    kind: Kind
    size: int


def _patch_coords(size: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets (u, v) from the defect's centre on a square patch of side size + 2·pad:
    half-integers for an even size, integers for an odd one, so a disc of diameter `size` spans
    exactly `size` pixels."""
    n = size + 2 * pad
    c = np.arange(n, dtype=np.float64) - (n - 1) / 2
    return np.meshgrid(c, c)


def scratch_width(size: int) -> int:
    return max(1, round(size / 16))


def defect_shape(kind: Kind, size: int, rng: np.random.Generator) -> np.ndarray:
    """float [n, n] in [-1, 1]: how far each pixel moves, as a fraction of the contrast (0 outside)."""
    if size < 1:
        raise ValueError(f"defect size {size}: must be >= 1 pixel")
    pad = scratch_width(size) + 1
    u, v = _patch_coords(size, pad)
    angle = rng.uniform(0, 2 * math.pi)
    along, across = u * math.cos(angle) + v * math.sin(angle), -u * math.sin(angle) + v * math.cos(angle)
    if kind == "scratch":
        return ((np.abs(along) <= size / 2) & (np.abs(across) <= scratch_width(size) / 2)).astype(np.float64)
    r = size / 2
    disc = u * u + v * v <= r * r
    if kind == "spot":
        return disc.astype(np.float64)
    # A dimple lit along `angle`: the slope facing the lamp brightens, the far one darkens.
    shade = np.where(disc, along / r * np.sqrt(np.clip(1 - (u * u + v * v) / (r * r), 0, 1)), 0.0)
    # A one-pixel dent has no slope to shade: it is a spot.
    peak = np.abs(shade).max()
    return shade / peak if peak > 0 else disc.astype(np.float64)


def plant(rgb: np.ndarray, kind: Kind, size: int, contrast: float, rng: np.random.Generator) -> Planted:
    """One defect of `size` native pixels on a copy of `rgb`, at a random place in its central part."""
    shape = defect_shape(kind, size, rng)
    n = shape.shape[0]
    h, w = rgb.shape[:2]
    if n > h or n > w:
        raise CalibrationError(f"a {size}-px defect does not fit on a {w}x{h} image; give smaller --defect-sizes")
    lo_y, lo_x = int((h - n) * (1 - CENTRAL) / 2), int((w - n) * (1 - CENTRAL) / 2)
    y = int(rng.integers(lo_y, h - n - lo_y + 1))
    x = int(rng.integers(lo_x, w - n - lo_x + 1))
    window = rgb[y : y + n, x : x + n].astype(np.float64)
    inside = shape != 0
    # Towards the side with more room, so clipping at 0 or 255 rarely eats the contrast.
    sign = -1.0 if window[inside].mean() >= 128 else 1.0
    moved = window + (sign * contrast * 255 * shape)[..., None]
    image = rgb.copy()
    image[y : y + n, x : x + n] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[y : y + n, x : x + n] = inside
    return Planted(image, mask, kind, size)


def plant_seed(seed: int, image_index: int, repeat: int, kind: Kind, size: int) -> np.random.Generator:
    """Each planted image's own stream: the sheet is the same whatever sizes or types it covers."""
    return np.random.default_rng([seed, image_index, repeat, KINDS.index(kind), size])


@dataclass(slots=True)
class DefectSizeSheet:
    sizes: list[int]
    kinds: list[Kind]
    contrast: float
    threshold: float
    source: str  # where the good images came from
    n_images: int
    repeats: int
    model_px_per_native_px: tuple[float, float]  # (y, x), averaged over the images
    clean_scores: np.ndarray  # [n_images] the good images as they are
    scores: dict[tuple[Kind, int], np.ndarray] = field(default_factory=dict)  # [n_images · repeats]

    def caught(self, kind: Kind, size: int) -> tuple[int, int]:
        s = self.scores[kind, size]
        return int((s > self.threshold).sum()), int(s.size)

    @property
    def clean_rejected(self) -> int:
        return int((self.clean_scores > self.threshold).sum())

    def smallest_caught(self, kind: Kind, share: float = 0.9) -> int | None:
        """The smallest size caught in at least `share` of the plants, or None."""
        for size in self.sizes:
            k, n = self.caught(kind, size)
            if n and k >= share * n:
                return size
        return None

    def to_json(self) -> dict:
        sy, sx = self.model_px_per_native_px
        return {
            "contrast": self.contrast,
            "threshold": self.threshold,
            "source": self.source,
            "n_images": self.n_images,
            "repeats": self.repeats,
            "central_fraction": CENTRAL,
            "model_px_per_native_px": [sy, sx],
            "clean_over_threshold": self.clean_rejected,
            "smallest_caught_90": {k: self.smallest_caught(k) for k in self.kinds},
            "table": [
                {
                    "size_px": size,
                    "model_px": [size * sy, size * sx],
                    **{
                        kind: {
                            "caught": self.caught(kind, size)[0],
                            "n": self.caught(kind, size)[1],
                            "share": self.caught(kind, size)[0] / self.caught(kind, size)[1],
                            "median_score": float(np.median(self.scores[kind, size])),
                        }
                        for kind in self.kinds
                    },
                }
                for size in self.sizes
            ],
        }


def _model_px(size: float, scale: float) -> str:
    return f"{size * scale:.2g}"


def sheet_table(sheet: DefectSizeSheet) -> str:
    """The printed sheet: share caught per size (rows) and type (columns)."""
    sy, sx = sheet.model_px_per_native_px
    lines = [
        f"defect sizes: share caught (score > threshold {sheet.threshold:.5g}), contrast "
        f"{100 * sheet.contrast:g}% of full scale, {sheet.n_images} good images x {sheet.repeats} "
        f"({sheet.source}); clean images over the threshold: {sheet.clean_rejected} of {sheet.n_images}",
        f"{'size px':>8} {'model px':>9}" + "".join(f"{k:>10}" for k in sheet.kinds),
    ]
    for size in sheet.sizes:
        model = (
            _model_px(size, sy)
            if math.isclose(sy, sx, rel_tol=0.01)
            else f"{_model_px(size, sy)}x{_model_px(size, sx)}"
        )
        cells = []
        for kind in sheet.kinds:
            k, n = sheet.caught(kind, size)
            cells.append(f"{100 * k / n:9.0f}%")
        lines.append(f"{size:>8} {model:>9}" + "".join(cells))
    smallest = ", ".join(f"{k} {sheet.smallest_caught(k) or '-'}" for k in sheet.kinds)
    lines.append(f"smallest size caught in >= 90% (native px): {smallest}")
    return "\n".join(lines)


def defect_size_sheet(
    bundle: Bundle,
    backend: Backend,
    files: list[Path],
    source: str,
    sizes: list[int],
    *,
    contrast: float = DEFAULT_CONTRAST,
    repeats: int = 1,
    seed: int = 0,
    batch: int = 8,
) -> DefectSizeSheet:
    """Plant every (type, size) `repeats` times on each good image in `files` and score them all."""
    if bundle.calibration is None:
        raise CalibrationError(
            f"{bundle.path}: no calibration.yaml; the sheet counts catches at the calibrated threshold, run edge-calibrate first"
        )
    if not 0 < contrast <= 1:
        raise CalibrationError(f"defect contrast {contrast}: must be in (0, 1], a fraction of full scale")
    scores: dict[tuple[Kind, int], list[float]] = {(k, s): [] for k in KINDS for s in sizes}
    clean, scales = [], []
    for i, path in enumerate(tqdm(files, desc="planting defects", unit="image")):
        rgb = read_rgb(path)
        scales.append((bundle.height / rgb.shape[0], bundle.width / rgb.shape[1]))
        jobs = [(k, s, r) for r in range(repeats) for k in KINDS for s in sizes]
        planted = [plant(rgb, k, s, contrast, plant_seed(seed, i, r, k, s)).image for k, s, r in jobs]
        images = [rgb, *planted]
        out = np.concatenate(
            [infer_rgb(backend, bundle, images[j : j + batch])[1] for j in range(0, len(images), batch)]
        )
        clean.append(float(out[0]))
        for (k, s, _), score in zip(jobs, out[1:]):
            scores[k, s].append(float(score))
    sy, sx = np.mean(scales, axis=0)
    return DefectSizeSheet(
        sizes=list(sizes),
        kinds=list(KINDS),
        contrast=contrast,
        threshold=bundle.calibration.threshold,
        source=source,
        n_images=len(files),
        repeats=repeats,
        model_px_per_native_px=(float(sy), float(sx)),
        clean_scores=np.array(clean),
        scores={key: np.array(v) for key, v in scores.items()},
    )


def parse_sizes(text: str) -> list[int]:
    """'2,4,8' → [2, 4, 8]; a clear error for anything else."""
    try:
        sizes = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise ValueError(
            f"--defect-sizes {text!r}: give whole pixel sizes separated by commas, e.g. 2,4,8,16"
        ) from None
    if not sizes or sizes[0] < 1:
        raise ValueError(f"--defect-sizes {text!r}: sizes must be whole numbers >= 1, e.g. 2,4,8,16")
    return sizes
