"""Every export is checked before its bundle is written: model.onnx through ONNX Runtime against
the PyTorch model, on real images. A wrong export stops export-engine instead of reaching a line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from export.bundle import MAP_TOLERANCE, SCORE_TOLERANCE, ExportCheckError, check_export
from export.cli import main
from export.graph import AnomalyGraph, export_onnx
from tests.export.helpers import make_category


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
        graph.patch_scorer.weight.mul_(1.5)  # the PyTorch model is no longer what was exported
    with pytest.raises(ExportCheckError, match=r"differs from PyTorch's by .* \(relative; allowed") as caught:
        check_export(graph, path, images)
    message = str(caught.value)
    assert str(path) in message and any(f"allowed {t:g})" in message for t in (MAP_TOLERANCE, SCORE_TOLERANCE))


def test_near_identical_parts_do_not_trip_the_check(tmp_path: Path, capsys) -> None:
    """A fixed part under a fixed camera: shots that differ only by ±6 grey levels of noise. Most
    of PatchCore's map is then the sqrt of a squared distance that cancels to ~0, where either
    runtime's rounding is amplified (once measured at 1.0e-3 of the map's maximum: refused as a
    wrong export under a 1e-3 map tolerance). The score is the map's maximum, far from zero."""
    category = make_category(tmp_path / "part", noise=6)
    assert (
        main(["--method", "patchcore", "--data", str(category), "--out", str(tmp_path / "b"), "--size", "64"]) == 0
    ), capsys.readouterr().err
    checked = yaml.safe_load((tmp_path / "b" / "bundle.yaml").read_text())["export_check"]
    assert checked["map_max_rel_diff"] <= MAP_TOLERANCE and checked["score_max_rel_diff"] <= 1e-4
