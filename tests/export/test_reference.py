"""export-engine --reference: the trained PyTorch model's outputs on the labelled test set, kept in
the bundle, and edge-eval measuring the deployed ONNX model against them (real torch, real ONNX
Runtime, real files)."""

from __future__ import annotations

import json

import numpy as np
import torch

from calibration.eval_cli import main as evaluate_main
from calibration.reference import REFERENCE_FILE, load_reference
from edge.bundle import load_bundle
from export.cli import main
from tests.export.helpers import make_category


def test_reference_is_refused_before_training_without_a_test_set(tmp_path, write_images, capsys):
    write_images(tmp_path / "good", 4)
    code = main(
        [
            "--method",
            "patchcore",
            "--data",
            str(tmp_path / "good"),
            "--out",
            str(tmp_path / "b"),
            "--size",
            "64",
            "--reference",
        ]
    )
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--reference needs a labelled test set" in line and "test: missing" in line
    assert not (tmp_path / "b").exists()


def test_export_keeps_pytorch_outputs_and_edge_eval_measures_the_deployed_model(tmp_path, capsys):
    category = make_category(tmp_path / "cat")
    bundle_dir = tmp_path / "b"
    assert (
        main(
            [
                "--method",
                "patchcore",
                "--data",
                str(category),
                "--out",
                str(bundle_dir),
                "--size",
                "64",
                "--coreset-ratio",
                "0.1",
                "--reference",
            ]
        )
        == 0
    )
    bundle = load_bundle(bundle_dir)
    ref = load_reference(bundle)
    assert ref.meta["model_sha256"] == bundle.sha256
    assert ref.meta["runtime"] == {
        "backend": "pytorch",
        "version": torch.__version__,
        "device": "cpu",
        "precision": "fp32",
    }
    assert ref.names == [f"good/{i:03d}.png" for i in range(3)] + [f"square/{i:03d}.png" for i in range(3)]
    assert ref.maps.shape == (6, 64, 64) and np.all(ref.scores > 0)
    # The squares are anomalies to this model (else the comparison below would compare noise).
    assert ref.scores[3:].min() > ref.scores[:3].max()

    capsys.readouterr()
    assert evaluate_main(["--bundle", str(bundle_dir), "--data", str(category)]) == 0
    assert "within budget" in capsys.readouterr().out
    diff = json.loads((bundle_dir / "eval" / "eval.json").read_text())["reference_comparison"]
    assert diff["image_auroc_drop_points"] == 0
    # ONNX Runtime against PyTorch, fp32 both: rounding only, far below the scores themselves.
    assert 0 < diff["score_max_abs_diff"] < 1e-3 * float(ref.scores.max())
    assert diff["map_max_abs_diff"] < 1e-3 * float(ref.maps.max())
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["bundle.yaml", "eval", "model.onnx", REFERENCE_FILE]


def test_an_unreadable_test_image_keeps_the_bundle_and_says_so(tmp_path, capsys):
    category = make_category(tmp_path / "cat")
    (category / "test" / "square" / "001.png").write_bytes(b"not a png")
    code = main(
        ["--method", "patchcore", "--data", str(category), "--out", str(tmp_path / "b"), "--size", "64", "--reference"]
    )
    assert code == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if "export-engine: error" in x]
    assert "is written, but not its reference" in line and "square/001.png: unreadable image" in line
    load_bundle(tmp_path / "b")  # complete and loadable
    assert not list((tmp_path / "b").glob("reference.npz*"))
