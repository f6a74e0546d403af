"""Every export is checked before its bundle is written: model.onnx through ONNX Runtime against
the PyTorch model, on real images. A wrong export stops export-engine instead of reaching a line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export.bundle import CHECK_TOLERANCE, ExportCheckError, check_export
from export.graph import AnomalyGraph, export_onnx


@pytest.fixture
def exported(tmp_path: Path) -> tuple[AnomalyGraph, Path, np.ndarray]:
    torch.manual_seed(0)
    graph = AnomalyGraph(nn.Conv2d(3, 1, 3, stride=4, padding=1), (0.5,) * 3, (0.5,) * 3, (64, 64))
    path = tmp_path / "model.onnx"
    export_onnx(graph, path, 64, 64)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    return graph, path, images


def test_a_faithful_export_passes_and_says_how_close(exported) -> None:
    graph, path, images = exported
    checked = check_export(graph, path, images)
    assert checked["images"] == 3 and checked["onnxruntime"]
    assert 0 <= checked["map_max_rel_diff"] < 1e-5 and 0 <= checked["score_max_rel_diff"] < 1e-5


def test_an_export_that_differs_from_the_model_is_refused(exported) -> None:
    graph, path, images = exported
    with torch.no_grad():
        graph.patch_scorer.weight.mul_(1.5)       # the PyTorch model is no longer what was exported
    with pytest.raises(ExportCheckError, match=r"differs from PyTorch's by .* \(relative; allowed") as caught:
        check_export(graph, path, images)
    assert str(path) in str(caught.value) and f"{CHECK_TOLERANCE:g}" in str(caught.value)
