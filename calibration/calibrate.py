"""μ + kσ thresholds from held-out good parts, scored by the deployed bundle on the line's own backend."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from edge.backends import Backend
from edge.bundle import CALIBRATION_FILE, CALIBRATION_SCHEMA_VERSION, Bundle
from edge.preprocess import IMAGE_SUFFIXES, read_image, to_input
from edge.types import Frame

log = logging.getLogger(__name__)

MIN_RECOMMENDED = 20
# σ relative to |μ|: below WARN_SIGMA the good parts hardly differ; below MIN_SIGMA they score
# alike (copies of one image, a frozen camera) and k no longer means anything.
WARN_SIGMA, MIN_SIGMA = 1e-3, 1e-6


class CalibrationError(RuntimeError):
    pass


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: not a directory of good images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_rgb(path: Path) -> np.ndarray:
    img, problem = read_image(path)  # as the line reads it: grayscale files come back as 3 channels
    if img is None:
        raise CalibrationError(f"{path}: unreadable image ({problem}); remove it or replace it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(f"{p.name}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()


@dataclass
class Scores:
    image: np.ndarray  # [n] image scores
    pixel_mean: float
    pixel_std: float


def infer_rgb(backend: Backend, bundle: Bundle, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly_map [b, 1, H, W], score [b]) of RGB images of any size, resized as the line does."""
    frames = [Frame("calib", j, "", 0.0, image) for j, image in enumerate(images)]
    return backend.infer(to_input(frames, bundle.height, bundle.width))


def held_out_files(bundle: Bundle) -> list[Path]:
    """The good images export-engine held out of training (bundle.yaml `training.holdout`)."""
    files = [Path(f) for f in bundle.meta.get("training", {}).get("holdout") or []]
    if not files:
        raise CalibrationError(
            f"{bundle.path}: bundle.yaml lists no held-out images; export with --holdout or give --data"
        )
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CalibrationError(
            f"{missing[0]}: {len(missing)} of {len(files)} held-out images listed in "
            f"{bundle.path / 'bundle.yaml'} are not on this machine (exported on "
            "another?); use --data GOOD_DIR with good parts here"
        )
    return files


def infer_files(
    backend: Backend, bundle: Bundle, files: list[Path], batch: int, desc: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(anomaly_map [b, 1, H, W], score [b]) per batch of files, in order, resized as the line does.
    After the last batch, CalibrationError names every file whose score or map was not finite:
    a threshold or a metric over them would be NaN, or a crash far from the cause."""
    not_finite = []
    for i in tqdm(range(0, len(files), batch), desc=desc, unit="batch"):
        chunk = files[i : i + batch]
        maps, scores = infer_rgb(backend, bundle, [read_rgb(p) for p in chunk])
        finite = np.isfinite(scores) & np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
        not_finite += [p for p, ok in zip(chunk, finite) if not ok]
        yield maps, scores
    if not_finite:
        more = f" and {len(not_finite) - 3} more" if len(not_finite) > 3 else ""
        raise CalibrationError(
            f"{', '.join(map(str, not_finite[:3]))}{more}: {len(not_finite)} of {len(files)} "
            "images give a score or anomaly map that is not finite (NaN or inf): the model "
            "overflowed (an fp16 engine? rebuild it with edge-build-engine --no-fp16)"
        )


def score_images(backend: Backend, bundle: Bundle, files: list[Path], batch: int = 8) -> Scores:
    """Image scores, and pixel-score moments accumulated in float64 (a whole set of maps
    would not need to fit in memory)."""
    scores, s1, s2, n_px = [], 0.0, 0.0, 0
    for maps, s in infer_files(backend, bundle, files, batch, "scoring good parts"):
        scores.append(s)
        m = maps.astype(np.float64)
        s1, s2, n_px = s1 + m.sum(), s2 + (m * m).sum(), n_px + m.size
    mean = s1 / n_px
    return Scores(np.concatenate(scores).astype(np.float64), float(mean), math.sqrt(max(s2 / n_px - mean * mean, 0.0)))


def sample_skew(x: np.ndarray) -> float:
    """The adjusted Fisher–Pearson skewness G1, as scipy.stats.skew(x, bias=False) (scipy is not
    on the line box). Mixing moments, the population third over the sample σ³, reads ~7% low at
    n = 20: borderline skewed sets would miss the warning."""
    n = x.size
    # Equal scores leave only rounding noise of one sign in x − μ, whose skew would be ±1.
    if n < 3 or np.ptp(x) == 0:
        return 0.0
    d = x - x.mean()
    m2, m3 = (d * d).mean(), (d**3).mean()
    return float(m3 / m2**1.5 * math.sqrt(n * (n - 1)) / (n - 2))


def fit(scores: Scores, k: float) -> dict:
    x = scores.image
    mu, sigma = float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0
    threshold = mu + k * sigma
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median))) * 1.4826  # scaled to σ for normal data
    return {
        "mu": mu,
        "sigma": sigma,
        "k": float(k),
        "threshold": threshold,
        "pixel_mu": scores.pixel_mean,
        "pixel_sigma": scores.pixel_std,
        "pixel_threshold": scores.pixel_mean + k * scores.pixel_std,
        "n": int(x.size),
        "false_reject_rate": float((x > threshold).mean()),
        "score_min": float(x.min()),
        "score_max": float(x.max()),
        "skew": sample_skew(x),
        "alternatives": {
            "robust": {"median": median, "mad_sigma": mad, "threshold": median + k * mad},
            "quantile": {"q": 0.99, "threshold": float(np.quantile(x, 0.99))},
        },
    }


def sigma_problem(fitted: dict) -> str | None:
    """Why a calibration's σ is too small to be written without --force, or None."""
    if fitted["sigma"] > MIN_SIGMA * max(abs(fitted["mu"]), 1e-12):
        return None
    return (
        f"σ is {fitted['sigma']:.3g} (μ {fitted['mu']:.6g}): the {fitted['n']} good images all score alike "
        "(copies of one image? a camera that froze?), so μ + kσ is μ whatever k is and any part scoring a "
        "hair above them is NG; calibrate on varied good parts, or give --force to write it anyway"
    )


def warnings_for(fitted: dict) -> list[str]:
    out = []
    if sigma_problem(fitted) is None and fitted["sigma"] <= WARN_SIGMA * abs(fitted["mu"]):
        out.append(
            f"σ is {fitted['sigma']:.3g}, under {WARN_SIGMA:g} of μ ({fitted['mu']:.6g}): the good images hardly "
            "differ, so k has little room; are they varied good parts of the line?"
        )
    if fitted["n"] < MIN_RECOMMENDED:
        out.append(
            f"only {fitted['n']} good images: σ from so few is uncertain, so the false-reject rate "
            f"on the line can be far from what k promises; use at least {MIN_RECOMMENDED}"
        )
    if abs(fitted["skew"]) > 1.0:
        out.append(
            f"scores are skewed (skew {fitted['skew']:.2f}): μ+kσ assumes roughly normal scores; "
            "compare with the robust and quantile thresholds in calibration.yaml"
        )
    return out


def calibrate(bundle: Bundle, backend: Backend, files: list[Path], k: float, source: str, batch: int = 8) -> dict:
    fitted = fit(score_images(backend, bundle, files, batch), k)
    return {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        **fitted,
        "data": {"source": source, "count": len(files), "files_sha256": fingerprint(files)},
        "model": bundle.name,
        "model_sha256": bundle.sha256,
        "backend": backend.describe(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_calibration(bundle: Bundle, result: dict) -> Path:
    path = bundle.path / CALIBRATION_FILE
    path.write_text(yaml.safe_dump(result, sort_keys=False))
    return path
