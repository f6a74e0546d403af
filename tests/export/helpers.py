"""Shared by the method tests: the parity measure, a folder of good images, an export timed
and its bundle scored on an MVTec category with ONNX Runtime, and a one-thread torch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from calibration.metrics import image_auroc, pixel_auroc
from export.data import iter_batches, load_mask, mvtec_test_samples
from tests.conftest import textured_image

PARITY = 1e-4  # max|torch − ort| / max|torch|, fp32


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(reference - other).max() / np.abs(reference).max())


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_onnx_parity(
    graph: torch.nn.Module, runtime: ort.InferenceSession, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's (anomaly_map, score) for ``images``, checked against PyTorch's: the
    engine contract's shapes (a map at input size) and the same values to PARITY."""
    with torch.no_grad():
        map_torch, score_torch = (t.numpy() for t in graph(torch.from_numpy(images)))
    map_ort, score_ort = runtime.run(None, {"image": images})
    assert map_ort.shape == (len(images), 1, *images.shape[1:3]) and score_ort.shape == (len(images),)
    assert relative_error(map_torch, map_ort) < PARITY and relative_error(score_torch, score_ort) < PARITY
    return map_ort, score_ort


class SizedConfig(Protocol):
    size: int


ConfigT = TypeVar("ConfigT", bound=SizedConfig)


@dataclass(frozen=True)
class BundleRun:
    """An export, timed, and how its bundle scores a category's test set."""

    image_auroc: float
    pixel_auroc: float
    train_s: float  # the whole export, training included
    ort_ms_per_image: float  # model.onnx alone (no image decoding), CPU, batches of 8
    method_params: dict[str, Any]  # bundle.yaml's

    def __str__(self) -> str:
        return (
            f"image AUROC {self.image_auroc:.4f}, pixel AUROC {self.pixel_auroc:.4f}; "
            f"train+export {self.train_s:.0f} s; ORT {self.ort_ms_per_image:.1f} ms/image"
        )


def export_and_score(
    export: Callable[[Path, Path, ConfigT], Path], category: Path, out: Path, config: ConfigT
) -> BundleRun:
    """``export(category, out, config)``, timed, then its model.onnx on the category's test set."""
    start = time.perf_counter()
    bundle = export(category, out, config)
    train_s = time.perf_counter() - start
    runtime = session(bundle / "model.onnx")
    samples = mvtec_test_samples(category)
    size = (config.size, config.size)
    maps, scores, infer_s = [], [], 0.0
    for batch in iter_batches([s.path for s in samples], size, 8):
        start = time.perf_counter()
        anomaly_map, score = runtime.run(None, {"image": batch})
        infer_s += time.perf_counter() - start
        maps.append(anomaly_map[:, 0])
        scores.append(score)
    masks = np.stack([load_mask(s.mask, size) if s.mask else np.zeros(size, bool) for s in samples])
    return BundleRun(
        image_auroc(np.concatenate(scores), [s.label for s in samples]),
        pixel_auroc(np.concatenate(maps), masks),
        train_s,
        1e3 * infer_s / len(samples),
        yaml.safe_load((bundle / "bundle.yaml").read_text())["method_params"],
    )


@pytest.fixture(scope="module")
def good_folder(write_images, tmp_path_factory) -> Path:
    """Ten good 40×40 images, which each test resizes to its own size. Not larger: downscaled
    to 32 px, 72×80 ones are too smooth for AESc to halve its loss in the 5 epochs of its test."""
    folder = tmp_path_factory.mktemp("good")
    write_images(folder, 10, size=(40, 40))
    return folder


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Training tests on one torch thread: on a shared CPU, two threads make every small op
    wait for a descheduled worker (measured: a 6-epoch smoke test 102 s → 7 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_category(root: Path, noise: int = 20) -> Path:
    """A tiny MVTec-layout category of 64-px shots of one textured part, ± ``noise`` grey levels
    of sensor noise each: 6 good ones in train/good, 3 good and 3 with a flat grey square in
    test/ (the squares masked in ground_truth/square/)."""
    rng = np.random.default_rng(0)
    part = textured_image(rng, 64, 64).astype(np.int16)

    def shot(folder: Path, name: str, square: bool) -> None:
        image = np.clip(part + rng.integers(-noise, noise + 1, part.shape), 0, 255).astype(np.uint8)
        if square:
            image[20:36, 20:36] = 128
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    for i in range(6):
        shot(root / "train" / "good", f"{i:03d}.png", False)
    for i in range(3):
        shot(root / "test" / "good", f"{i:03d}.png", False)
        shot(root / "test" / "square", f"{i:03d}.png", True)
        mask = np.zeros((64, 64), np.uint8)
        mask[20:36, 20:36] = 255
        (root / "ground_truth" / "square").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "ground_truth" / "square" / f"{i:03d}_mask.png"), mask)
    return root
