"""``export-engine --reference``: score the labelled test set beside the training images with
the trained PyTorch model (fp32) and keep its outputs in the bundle (calibration/reference.py),
so that edge-eval can report what deployment (ONNX Runtime, an fp16 TensorRT engine) changed.

The model is wrapped in the line's Backend interface and scored through edge-eval's own
code path (same image reading, resizing and pixel grid): the only difference left between
the two sets of outputs is the runtime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from calibration.calibrate import CalibrationError
from calibration.evaluate import DatasetError, find_items, score_items
from calibration.reference import save_reference
from edge.bundle import load_bundle

from .data import DataError
from .graph import AnomalyGraph

log = logging.getLogger(__name__)


class TorchBackend:
    """An exported graph run in PyTorch, fp32, behind the line's Backend interface."""

    name = "pytorch"

    def __init__(self, graph: AnomalyGraph, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.graph = graph.eval().to(self.device)

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            maps, scores = self.graph(torch.from_numpy(images).to(self.device))
        return maps.float().cpu().numpy(), scores.float().cpu().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "version": torch.__version__, "device": str(self.device), "precision": "fp32"}

    def close(self) -> None:
        pass


def check_reference_data(data: Path) -> None:
    """Raise DataError unless ``data`` has a labelled test set (before any training is spent)."""
    try:
        find_items(Path(data))
    except DatasetError as e:
        raise DataError(f"--reference needs a labelled test set beside the training images: {e}") from None


def write_reference(bundle_dir: Path, graph: AnomalyGraph, data: Path, batch: int = 8) -> Path:
    """Score every test image of the MVTec-layout category ``data`` with ``graph`` and write
    ``bundle_dir``/reference.npz. The test set is only scored here, never used to choose anything."""
    bundle = load_bundle(bundle_dir)
    backend = TorchBackend(graph)
    try:
        items = find_items(Path(data))
        maps, scores, seconds = score_items(bundle, backend, items, batch, "PyTorch reference")
        path = save_reference(bundle, items, maps, scores, backend.describe(), data)
    except (DatasetError, CalibrationError, OSError) as e:
        # The model is trained and its bundle complete: say so, not only what failed.
        raise DataError(f"the bundle {bundle.path} is written, but not its reference: {e}") from None
    log.info(
        "reference: %d test images scored in PyTorch in %.1f s → %s (%.1f MB)",
        len(items),
        seconds,
        path,
        path.stat().st_size / 1e6,
    )
    return path
