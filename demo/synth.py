"""Procedural inspection data set in MVTec AD layout: turned steel flanges on a plain background.

The demo must run on a fresh machine with no download, so the data is drawn here in a few seconds.
Good parts vary like real ones (pose, lighting, machining marks, sensor noise); defective parts are
the same renders with one defect painted in, so each mask is exactly the set of pixels it changed.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np

DEFECTS = ("scratch", "stain", "missing")
Part = Literal["flange", "shaft"]
# The long part's defects are small on purpose: a few pixels at the camera's resolution.
SHAFT_DEFECTS = ("scratch", "pit")
_GROUPS = ("train", "calib", "good", *DEFECTS, "pit")  # appended only: every flange keeps its seed

# Flange drawing in pixels of a 256 px image; other sizes scale it.
_OUTER_R, _HUB_R, _BORE_R = 100.0, 46.0, 22.0
_PITCH_R, _HOLE_R, _N_HOLES = 74.0, 8.0, 6
_CHAMFER = 2.5

# Part coverage comes in eighths (like 8x supersampling): a defect that removes any coverage then
# moves the pixel by at least (part - background) / 8, several grey levels, so no changed pixel can
# round back to its clean value and the mask stays exact.
_COVERAGE_LEVELS = 8
_SENSOR_SIGMA = 1.8
_STEEL_TINT = np.array([1.03, 1.0, 0.96], np.float32)  # BGR: slightly cool, like steel under white LEDs
_BACKGROUND_TINT = np.array([1.04, 1.0, 0.94], np.float32)
_STAIN_COLOURS = (  # BGR; each has a channel well below any lit steel value, so stains always show
    (30.0, 32.0, 36.0),  # oil
    (40.0, 85.0, 160.0),  # rust
    (120.0, 110.0, 60.0),  # dried coolant
)
_PLACEMENT_TRIES = 100


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    train_dir: Path
    calib_dir: Path
    test_items: list[tuple[Path, str, Path | None]]  # (image, "good" or defect name, mask or None)


@dataclass(frozen=True)
class _Flange:
    cx: float
    cy: float
    rot: float  # radians, turns the bolt-hole circle
    light: float  # direction the light comes from, radians
    scale: float  # pixels per pixel of the 256 px drawing


class _Scene(NamedTuple):
    flange: _Flange
    coverage: np.ndarray  # HxW float in [0, 1], how much of each pixel is part
    background: np.ndarray  # HxWx3 float


class _Mark(NamedTuple):
    """A defect: inside `region`, the image becomes image * (1 - opacity) + paint * opacity."""

    region: np.ndarray
    paint: np.ndarray
    opacity: float | np.ndarray


def part_seed(seed: int, group: str, index: int) -> int:
    """The render_part seed of image `index` of `group` ("train", "calib", "good" or a defect)."""
    return int(np.random.SeedSequence([seed, _GROUPS.index(group), index]).generate_state(1)[0])


def render_part(seed: int, defect: str | None = None, size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """One BGR uint8 image of a part, and its 0/255 defect mask (None for a good part).

    The defect has its own random stream, so render_part(s, d) differs from render_part(s) exactly
    where the mask is 255.
    """
    rng = np.random.default_rng([seed, 0])
    flange = _random_flange(rng, size)
    geometry = _geometry(flange, size)
    sd = _signed_distances(flange, geometry)
    coverage = _coverage(sd)
    surface = _surface(rng, flange, geometry, sd)
    background = _background(rng, size, size)
    sensor = _SENSOR_SIGMA * rng.standard_normal((size, size, 3), dtype=np.float32)
    image = coverage[..., None] * surface + (1 - coverage[..., None]) * background
    mask = None
    if defect is not None:
        mark = _DEFECT_MAKERS[defect](np.random.default_rng([seed, 1]), _Scene(flange, coverage, background))
        marked = image * (1 - mark.opacity) + mark.paint * mark.opacity
        # Stay in float32: untouched pixels plus the noise in float64 would round a few differently.
        image = np.where(mark.region[..., None], marked, image).astype(np.float32)
        mask = mark.region.astype(np.uint8) * 255
    return np.clip(np.rint(image + sensor), 0, 255).astype(np.uint8), mask


def _random_flange(rng: np.random.Generator, size: int) -> _Flange:
    scale = size / 256
    # Fixturing repeats to a few pixels and a couple of degrees; the lamp is fixed but not perfect.
    return _Flange(
        cx=size / 2 + rng.uniform(-4, 4) * scale,
        cy=size / 2 + rng.uniform(-4, 4) * scale,
        rot=float(np.deg2rad(rng.uniform(-2, 2))),
        light=float(np.deg2rad(-135 + rng.uniform(-4, 4))),
        scale=scale,
    )


class _Geometry(NamedTuple):
    """Per pixel: polar coordinates about the flange centre, distance to the nearest bolt hole's
    centre, and how squarely the directions away from those centres face the lamp (cosines)."""

    d: np.ndarray
    theta: np.ndarray
    lit: np.ndarray
    hole_d: np.ndarray
    hole_lit: np.ndarray


def _geometry(f: _Flange, size: int) -> _Geometry:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    dx, dy = xx - np.float32(f.cx), yy - np.float32(f.cy)
    theta = np.arctan2(dy, dx)
    # Holes sit on one circle, so the nearest is the one nearest in angle.
    step = 2 * np.pi / _N_HOLES
    hole_angle = f.rot + step * np.round((theta - f.rot) / step)
    hx = dx - np.float32(_PITCH_R * f.scale) * np.cos(hole_angle)
    hy = dy - np.float32(_PITCH_R * f.scale) * np.sin(hole_angle)
    d, hole_d = np.hypot(dx, dy), np.hypot(hx, hy)
    # Cosines as dot products: arctan2 is the slowest step of a render, so only theta uses it.
    lx, ly = np.float32(np.cos(f.light)), np.float32(np.sin(f.light))
    lit = (dx * lx + dy * ly) / np.maximum(d, np.float32(1e-3))
    hole_lit = (hx * lx + hy * ly) / np.maximum(hole_d, np.float32(1e-3))
    return _Geometry(d, theta, lit, hole_d, hole_lit)


def _signed_distances(f: _Flange, g: _Geometry) -> dict[str, np.ndarray]:
    """Distance to each edge, positive on the material side."""
    return {
        "outer": _OUTER_R * f.scale - g.d,
        "bore": g.d - _BORE_R * f.scale,
        "holes": g.hole_d - _HOLE_R * f.scale,
        "hub": _HUB_R * f.scale - g.d,
    }


def _coverage(sd: dict[str, np.ndarray]) -> np.ndarray:
    inside = np.minimum(np.minimum(sd["outer"], sd["bore"]), sd["holes"])
    return np.round(np.clip(inside + 0.5, 0, 1) * _COVERAGE_LEVELS) / _COVERAGE_LEVELS


def _surface(rng: np.random.Generator, f: _Flange, g: _Geometry, sd: dict[str, np.ndarray]) -> np.ndarray:
    """Lit, turned steel: concentric tool marks, a bow-tie sheen, lit chamfers and fine speckle."""
    grey = np.where(sd["hub"] > 0, np.float32(172), np.float32(150))
    grey += 12 * g.d * g.lit / np.float32(_OUTER_R * f.scale)
    # Turning leaves grooves along the circumference, which reflect light in a bow-tie pattern.
    grey += 12 * (2 * g.lit * g.lit - 1)
    grey += 5 * _tool_marks(rng, g.d, f.scale) * (1 + 0.3 * np.sin(3 * g.theta + rng.uniform(0, 2 * np.pi)))
    grey += 3 * _smooth_noise(rng, g.d.shape, 0.8 * f.scale)
    grey += _chamfer_shading(f, g, sd)
    return grey[..., None] * _STEEL_TINT


def _tool_marks(rng: np.random.Generator, d: np.ndarray, scale: float) -> np.ndarray:
    """Unit-variance random profile over the radius, about one groove per pixel."""
    # Finely sampled and smoothed, so a plain lookup is as good as (and much faster than) np.interp.
    bins_per_px = 8
    noise = rng.standard_normal((1, int(_OUTER_R * scale + 4) * bins_per_px), dtype=np.float32)
    profile = cv2.GaussianBlur(noise, (0, 0), sigmaX=bins_per_px / 2).ravel()
    index = np.minimum((d * bins_per_px).astype(np.int32), profile.size - 1)
    return profile[index] / profile.std()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), sigmaX=sigma)
    return noise / noise.std()


def _chamfer_shading(f: _Flange, g: _Geometry, sd: dict[str, np.ndarray]) -> np.ndarray:
    """Edges are chamfered: the side tilted towards the lamp is bright, the far side dark."""
    band = _CHAMFER * f.scale
    lit_from_centre, lit_from_hole = 22 * g.lit, 22 * g.hole_lit
    # The outer chamfer and the hub step tilt outward; the bore and holes tilt inward, hence the signs.
    shading = np.zeros_like(g.d)
    for edge, sign, lit in (
        ("outer", 1, lit_from_centre),
        ("hub", 1, lit_from_centre),
        ("bore", -1, lit_from_centre),
        ("holes", -1, lit_from_hole),
    ):
        shading += np.where(np.abs(sd[edge]) < band, sign * lit, np.float32(0))
    return shading


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Dark matte conveyor, well below lit steel so a missing piece always shows."""
    ramp = np.linspace(-4, 4, width, dtype=np.float32)[None, :]
    grey = 50 + ramp + 2 * _smooth_noise(rng, (height, width), 6.0 * height / 256)
    return grey[..., None] * _BACKGROUND_TINT


def _random_polygon(
    rng: np.random.Generator, centre: np.ndarray, radius: float, roughness: float, vertices: int, size: int
) -> np.ndarray:
    """Filled irregular polygon as a bool mask; hard edges, so every pixel is fully in or out."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * (1 - roughness * rng.random(vertices))
    points = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.rint(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def _on_solid(rng: np.random.Generator, coverage: np.ndarray, draw: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Draw a surface defect around random points of solid metal until nearly all of it lands there."""
    solid = coverage >= 1
    candidates = np.flatnonzero(solid)
    for _ in range(_PLACEMENT_TRIES):
        y, x = np.unravel_index(rng.choice(candidates), solid.shape)
        drawn = draw(np.array([x + 0.5, y + 0.5]))
        region = drawn & solid
        if region.sum() >= 0.9 * drawn.sum():
            return region
    raise RuntimeError("could not place a defect on the part")


def _scratch(rng: np.random.Generator, scene: _Scene) -> _Mark:
    scale, size = scene.flange.scale, scene.coverage.shape[0]
    length = rng.uniform(20, 80) * scale
    segments = int(rng.integers(2, 5))
    thickness = max(1, round(int(rng.integers(1, 4)) * scale))

    def draw(start: np.ndarray) -> np.ndarray:
        headings = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, segments))
        steps = (length / segments) * np.stack([np.cos(headings), np.sin(headings)], axis=1)
        points = np.vstack([start, start + np.cumsum(steps, axis=0)])
        canvas = np.zeros((size, size), np.uint8)
        cv2.polylines(canvas, [np.rint(points).astype(np.int32)], False, 1, thickness, cv2.LINE_8)
        return canvas.astype(bool)

    region = _on_solid(rng, scene.coverage, draw)
    # Bright: fresh metal catching the lamp; dark: a groove in shadow.
    paint = np.full(3, 250.0 if rng.random() < 0.5 else 20.0)
    return _Mark(region, paint, rng.uniform(0.65, 0.85))


def _stain(rng: np.random.Generator, scene: _Scene) -> _Mark:
    scale, size = scene.flange.scale, scene.coverage.shape[0]
    radius = rng.uniform(4, 12.5) * scale
    region = _on_solid(rng, scene.coverage, lambda c: _random_polygon(rng, c, radius, 0.35, 12, size))
    colour = np.array(_STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))])
    # Uneven thickness, never so thin that the stain fades into the metal.
    opacity = np.clip(0.68 + 0.12 * _smooth_noise(rng, (size, size), 2.0 * scale), 0.5, 0.85)
    return _Mark(region, colour, opacity[..., None])


def _missing(rng: np.random.Generator, scene: _Scene) -> _Mark:
    f, size = scene.flange, scene.coverage.shape[0]
    if rng.random() < 0.5:  # chip out of the rim, centred just inside it so the bite shows
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(7.5, 20)
        at = _OUTER_R - 0.3 * radius
    else:  # the thin bar between a bolt hole and the rim broken away: big enough to cut through it
        angle = f.rot + 2 * np.pi * int(rng.integers(_N_HOLES)) / _N_HOLES
        radius = rng.uniform(13, 20)
        at = (_PITCH_R + _HOLE_R + _OUTER_R) / 2
    centre = np.array([f.cx + at * f.scale * np.cos(angle), f.cy + at * f.scale * np.sin(angle)])
    chunk = _random_polygon(rng, centre, radius * f.scale, 0.3, 20, size)
    # Where there was no metal, showing the background changes nothing, so it is not defective.
    return _Mark(chunk & (scene.coverage > 0), scene.background, 1.0)


_DEFECT_MAKERS: dict[str, Callable[[np.random.Generator, _Scene], _Mark]] = {
    "scratch": _scratch,
    "stain": _stain,
    "missing": _missing,
}


def render_long_part(seed: int, defect: str | None = None, height: int = 300) -> tuple[np.ndarray, np.ndarray | None]:
    """A turned steel shaft lying along a 4:1 frame (1200×300 at the default height): one BGR uint8
    image and its exact 0/255 mask (None for a good part), as render_part. Its defects are a few
    camera pixels across, for checks at the camera's resolution: a model that shrinks the frame
    to 256² sees them at a fifth of their size."""
    width = 4 * height
    rng = np.random.default_rng([seed, 0])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + np.float32(0.5)
    cy, r = height / 2 + rng.uniform(-3, 3), 0.32 * height
    x0, x1 = 0.04 * width + rng.uniform(-4, 4), 0.96 * width + rng.uniform(-4, 4)
    inside = np.minimum(np.minimum(xx - x0, x1 - xx), r - np.abs(yy - cy))
    coverage = np.round(np.clip(inside + 0.5, 0, 1) * _COVERAGE_LEVELS) / _COVERAGE_LEVELS
    # Lit from above: a cylinder's highlight near its top, its underside in shade (grey 70 to 215,
    # far enough from 20 and 250 that every painted pixel moves by many grey levels).
    n = np.clip((yy - cy) / r, -1, 1)
    grey = 100 + 75 * np.sqrt(1 - n * n) - 25 * n
    # Turning marks run round the shaft: across it in this view, one random profile along x.
    marks = cv2.GaussianBlur(rng.standard_normal((1, width), dtype=np.float32), (0, 0), sigmaX=0.6)
    grey += 4 * marks / marks.std() + 2 * _smooth_noise(rng, (height, width), 1.0)
    for groove in rng.uniform(x0 + 0.15 * width, x1 - 0.15 * width, 2):
        grey -= np.where(np.abs(xx - groove) < 3, np.float32(40), np.float32(0))
    surface = grey[..., None] * _STEEL_TINT
    background = _background(rng, height, width)
    sensor = _SENSOR_SIGMA * rng.standard_normal((height, width, 3), dtype=np.float32)
    image = coverage[..., None] * surface + (1 - coverage[..., None]) * background
    mask = None
    if defect is not None:
        mark = _small_defect(np.random.default_rng([seed, 1]), defect, coverage)
        marked = image * (1 - mark.opacity) + mark.paint * mark.opacity
        image = np.where(mark.region[..., None], marked, image).astype(np.float32)
        mask = mark.region.astype(np.uint8) * 255
    return np.clip(np.rint(image + sensor), 0, 255).astype(np.uint8), mask


def _small_defect(rng: np.random.Generator, defect: str, coverage: np.ndarray) -> _Mark:
    """scratch: a straight 1-px line 6 to 20 px long, bright or dark; pit: a dark disc 3 to 7 px across."""
    shape = coverage.shape

    def draw(start: np.ndarray) -> np.ndarray:
        canvas = np.zeros(shape, np.uint8)
        if defect == "scratch":
            heading = rng.uniform(0, 2 * np.pi)
            end = start + rng.uniform(6, 20) * np.array([np.cos(heading), np.sin(heading)])
            cv2.line(canvas, tuple(np.rint(start).astype(int)), tuple(np.rint(end).astype(int)), 1, 1, cv2.LINE_8)
        elif defect == "pit":
            cv2.circle(canvas, tuple(np.rint(start).astype(int)), int(rng.integers(1, 4)), 1, -1, cv2.LINE_8)
        else:
            raise ValueError(f"long parts have {', '.join(SHAFT_DEFECTS)} defects, not {defect!r}")
        return canvas.astype(bool)

    region = _on_solid(rng, coverage, draw)
    paint = 250.0 if defect == "scratch" and rng.random() < 0.5 else 20.0
    return _Mark(region, np.full(3, paint), rng.uniform(0.65, 0.85))


def _render(part: Part, seed: int, defect: str | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    return render_part(seed, defect, size) if part == "flange" else render_long_part(seed, defect, size)


def make_dataset(
    out: Path,
    *,
    n_train: int = 60,
    n_calib: int = 24,
    n_test_good: int = 12,
    n_test_defect_each: int = 6,
    size: int = 256,
    seed: int = 0,
    part: Part = "flange",
) -> DatasetInfo:
    """Write the data set under `out` (replacing an earlier one there) and describe it. `part`
    "shaft": long parts, `size` high and 4·`size` wide (e.g. 300: 1200×300), with small defects."""
    out = Path(out)
    _clear_previous(out)
    defects = DEFECTS if part == "flange" else SHAFT_DEFECTS
    train_dir, calib_dir = out / "train" / "good", out / "calib" / "good"
    _write_group(train_dir, None, seed, "train", n_train, size, part)
    _write_group(calib_dir, None, seed, "calib", n_calib, size, part)
    good = _write_group(out / "test" / "good", None, seed, "good", n_test_good, size, part)
    test_items: list[tuple[Path, str, Path | None]] = [(p, "good", None) for p, _ in good]
    for defect in defects:
        written = _write_group(
            out / "test" / defect, out / "ground_truth" / defect, seed, defect, n_test_defect_each, size, part
        )
        test_items += [(p, defect, m) for p, m in written]
    counts = {
        "train": n_train,
        "calib": n_calib,
        "test/good": n_test_good,
        **{f"test/{d}": n_test_defect_each for d in defects},
    }
    _write_readme(out, seed, size, counts, part)
    return DatasetInfo(out, train_dir, calib_dir, test_items)


def _clear_previous(out: Path) -> None:
    """Stale images from a bigger earlier run would leak into this one; only our own output goes."""
    if out.exists() and any(out.iterdir()) and not (out / "README.txt").exists():
        raise FileExistsError(f"{out} is not empty and holds no synthetic data set; not overwriting it")
    for sub in ("train", "calib", "test", "ground_truth"):
        shutil.rmtree(out / sub, ignore_errors=True)


def _write_group(
    image_dir: Path, mask_dir: Path | None, seed: int, group: str, count: int, size: int, part: Part
) -> list[tuple[Path, Path | None]]:
    image_dir.mkdir(parents=True, exist_ok=True)
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
    defect = group if group in (*DEFECTS, *SHAFT_DEFECTS) else None
    written = []
    for i in range(count):
        image, mask = _render(part, part_seed(seed, group, i), defect, size)
        image_path = image_dir / f"{i:03d}.png"
        cv2.imwrite(str(image_path), image)
        mask_path = None
        if mask_dir is not None and mask is not None:
            mask_path = mask_dir / f"{i:03d}_mask.png"
            cv2.imwrite(str(mask_path), mask)
        written.append((image_path, mask_path))
    return written


_PART_TEXT = {
    "flange": [
        "Parts: turned steel flanges with six bolt holes on a dark conveyor.",
        "Defects: scratch (thin bright or dark line), stain (oil, rust or coolant blob),",
        "missing (a chip out of the rim or a broken bar beside a bolt hole).",
    ],
    "shaft": [
        "Parts: turned steel shafts with two ring grooves, lying along the frame, on a dark conveyor.",
        "Defects, small on purpose: scratch (straight 1-px line, 6 to 20 px long, bright or dark),",
        "pit (dark disc 3 to 7 px across).",
    ],
}


def _write_readme(out: Path, seed: int, size: int, counts: dict[str, int], part: Part) -> None:
    width = size if part == "flange" else 4 * size
    lines = [
        "Synthetic visual-inspection data set written by demo.synth (not real images).",
        f"Seed {seed}: the same seed writes byte-identical files. Images are {width}x{size} BGR PNG.",
        "Layout follows MVTec AD: train/good, test/<label>, ground_truth/<defect>/<name>_mask.png",
        "(255 = defective pixel); calib/good holds extra good parts for threshold calibration.",
        *_PART_TEXT[part],
        "",
        *(f"{name}: {n} images" for name, n in counts.items()),
    ]
    (out / "README.txt").write_text("\n".join(lines) + "\n")


# Tried in order until one reads back with every frame (opencv-python-headless 5.0 on Linux, 256 px
# demo frames: mean error 0 grey levels for FFV1, 1.7 for MJPG, 2.8 for mp4v).
# FFV1 is lossless and in the FFmpeg that the opencv-python wheels bundle. OpenCV's own MJPEG writer
# needs no FFmpeg at all and is the only one here that honours the quality setting (FFmpeg's ignores
# it). mp4v is the last resort: lossy and blocky, but present in nearly every FFmpeg.
_VIDEO_CODECS: tuple[tuple[str, str, int], ...] = (
    ("FFV1", ".avi", cv2.CAP_FFMPEG),
    ("MJPG", ".avi", cv2.CAP_OPENCV_MJPEG),
    ("mp4v", ".mp4", cv2.CAP_FFMPEG),
)


def write_video(images: list[Path], path: Path, fps: float = 10) -> Path:
    """Write the images as a video OpenCV reads back with as many frames; returns the file written,
    whose extension is the chosen codec's."""
    frames = [_read_image(p) for p in images]
    if not frames:
        raise ValueError("a video needs at least one image")
    height, width = frames[0].shape[:2]
    if any(f.shape[:2] != (height, width) for f in frames):
        raise ValueError("all images of a video must have the same size")
    for fourcc, ext, api in _VIDEO_CODECS:
        target = Path(path).with_suffix(ext)
        writer = cv2.VideoWriter(str(target), api, cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            continue
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
        for frame in frames:
            writer.write(frame)
        writer.release()
        if _count_frames(target) == len(frames):
            return target
        target.unlink(missing_ok=True)
    raise RuntimeError("this OpenCV build cannot write a video it can read back")


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


def _count_frames(path: Path) -> int:
    # Decode rather than trust CAP_PROP_FRAME_COUNT, which is an estimate from the container.
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic inspection data set (MVTec AD layout).")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument(
        "--part",
        choices=["flange", "shaft"],
        default="flange",
        help="flange: round parts, 256x256 (default); shaft: long parts 4:1 with small defects, 1200x300",
    )
    parser.add_argument("--size", type=int, help="image height in px (default 256 for flange, 300 for shaft)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    size = args.size or (256 if args.part == "flange" else 300)
    info = make_dataset(args.out, seed=args.seed, part=args.part, size=size)
    print(
        f"wrote {len(info.test_items)} test images and their masks, plus train and calib, "
        f"to {info.root} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
