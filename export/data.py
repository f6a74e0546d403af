"""Training and evaluation images: where they are, how they are read, and which ones the
model may see.

Two layouts are accepted for training data: an MVTec AD category (``<cat>/train/good``,
``<cat>/test/<type>``, ``<cat>/ground_truth/<type>/<name>_mask.png``) or a plain folder of
good images. Every listing is sorted so that the bank, the hold-out split and the
fingerprint are the same on every machine.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.preprocess import IMAGE_SUFFIXES, read_image, resize

GOOD = "good"


class DataError(ValueError):
    """A data folder the exporter cannot use, phrased for the person who pointed at it."""


class ImageReadError(DataError):
    """One image file that cannot be read or decoded."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path


@dataclass(frozen=True, slots=True)
class Fingerprint:
    count: int
    sha256: str


@dataclass(frozen=True, slots=True)
class TrainingSplit:
    root: Path  # the --data folder, absolute
    train: list[Path]  # what the model learns from
    holdout: list[Path]  # good images it never sees, for calibration
    fingerprint: Fingerprint  # of ``train``


@dataclass(frozen=True, slots=True)
class EvalSample:
    path: Path
    defect: str  # "good" or the defect type (the MVTec folder name)
    mask: Path | None  # ground-truth mask; None for good parts

    @property
    def label(self) -> int:
        return int(self.defect != GOOD)


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name. Hidden files are not
    images: macOS leaves a ``._<name>`` AppleDouble file beside every image it copies."""
    return sorted(
        p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def training_images(data: Path) -> list[Path]:
    """The good training images under ``data``: an MVTec category's ``train/good`` or the
    images of a plain folder. Raises DataError when there are none."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"training data {data}: not a directory")
    mvtec_good = data / "train" / GOOD
    files = list_images(mvtec_good if mvtec_good.is_dir() else data)
    if not files:
        raise DataError(
            f"training data {data}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or in its train/good/"
        )
    # Not resolved: an image or a train/good linked from elsewhere keeps its name under
    # ``data``, which the fingerprint and the bundle's file list are relative to.
    return [f.absolute() for f in files]


def mvtec_test_samples(category: Path) -> list[EvalSample]:
    """Every test image of an MVTec category with its defect type and mask, sorted by
    (defect type, name)."""
    test_root = Path(category) / "test"
    if not test_root.is_dir():
        raise DataError(f"{category}: no test/ folder (not an MVTec category)")
    samples = []
    for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
        for path in list_images(defect_dir):
            mask = None
            if defect_dir.name != GOOD:
                mask = Path(category) / "ground_truth" / defect_dir.name / f"{path.stem}_mask.png"
                if not mask.is_file():
                    raise DataError(f"{path}: ground-truth mask {mask} is missing")
            samples.append(EvalSample(path=path.resolve(), defect=defect_dir.name, mask=mask))
    return samples


def _decode(path: Path, flags: int) -> np.ndarray:
    image, problem = read_image(path, flags)
    if image is None:
        raise ImageReadError(path, problem)
    return image


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` RGB at ``size`` = (H, W); grayscale becomes
    three equal channels, alpha is dropped, 16-bit is scaled to 8-bit."""
    bgr = _decode(Path(path), cv2.IMREAD_COLOR)
    return resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), *size)


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as ``bool [H, W]`` at ``size`` (nearest neighbour keeps it binary)."""
    mask = _decode(Path(path), cv2.IMREAD_GRAYSCALE)
    height, width = size
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 127


def iter_batches(files: Sequence[Path], size: tuple[int, int], batch_size: int) -> Iterator[np.ndarray]:
    """``uint8 [B, H, W, 3]`` batches of the files, in order."""
    for start in range(0, len(files), batch_size):
        yield np.stack([load_image(f, size) for f in files[start : start + batch_size]])


def fingerprint(files: Sequence[Path], root: Path | None = None) -> Fingerprint:
    """Count and SHA-256 of the sorted list of (path relative to ``root``, size in bytes):
    it changes when an image is added, removed, renamed or rewritten with another size,
    and does not depend on where the folder lives."""
    paths = [Path(f) for f in files]
    if root is None:
        root = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path(".")
    digest = hashlib.sha256()
    for rel, size in sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in paths):
        digest.update(f"{rel}\t{size}\n".encode())
    return Fingerprint(count=len(paths), sha256=digest.hexdigest())


def split_holdout(files: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, holdout): a seeded random ``fraction`` of the good images kept away from the
    model, so that calibration can measure scores of good parts the model never saw.
    Independent of the input order; at least one image always stays in train."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"holdout fraction {fraction}: must be in [0, 1)")
    ordered = sorted(Path(f) for f in files)
    n_holdout = min(round(fraction * len(ordered)), len(ordered) - 1)
    picked = set(np.random.default_rng(seed).permutation(len(ordered))[:n_holdout].tolist())
    train = [f for i, f in enumerate(ordered) if i not in picked]
    holdout = [f for i, f in enumerate(ordered) if i in picked]
    return train, holdout


def split_training_data(data: Path, holdout: float, seed: int) -> TrainingSplit:
    """The good images under ``data`` split into train and hold-out, with the train set's
    fingerprint relative to ``data``."""
    root = Path(data).resolve()
    train, held = split_holdout(training_images(root), holdout, seed)
    return TrainingSplit(root=root, train=train, holdout=held, fingerprint=fingerprint(train, root))
