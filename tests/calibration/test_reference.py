"""edge-eval against a bundle's PyTorch reference (reference.npz): the reader, the checks that a
reference fits, the comparison in the printout, eval.json and the report, and the exit status
that gates a deployment losing more image AUROC than the budget. The reference's outputs here are
known numbers written with the real writer; export-engine --reference producing them from a
PyTorch model is tested in tests/export/test_reference.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.eval_cli import main
from calibration.reference import REFERENCE_FILE, ReferenceError, load_reference, save_reference
from edge.bundle import load_bundle

from ..edge.conftest import make_bundle
from .test_evaluate import MISSED_VALUE, make_category, run

RUNTIME = {"backend": "pytorch", "version": "test", "device": "cpu", "precision": "fp32"}


@pytest.fixture
def category(tmp_path):
    return make_category(tmp_path / "cat")


def with_reference(tmp_path, category, change=None):
    """A bundle whose reference.npz holds the deployed model's own outputs, edited by ``change``."""
    bundle_dir = make_bundle(tmp_path / "b")
    deployed = run(bundle_dir, category)
    scores, maps = deployed.scores.copy(), deployed.maps.copy()
    if change:
        change(scores, maps)
    save_reference(load_bundle(bundle_dir), deployed.items, maps, scores, RUNTIME, category)
    return bundle_dir


def evaluate_cli(bundle_dir, category, capsys):
    code = main(["--bundle", str(bundle_dir), "--data", str(category)])
    captured = capsys.readouterr()
    return code, captured.out, json.loads((bundle_dir / "eval" / "eval.json").read_text())


def test_a_deployed_model_equal_to_its_reference_is_within_budget(tmp_path, category, capsys):
    bundle_dir = with_reference(tmp_path, category)
    ref = load_reference(load_bundle(bundle_dir))
    assert ref.names[:2] == ["good/000.png", "good/001.png"] and ref.maps.dtype == np.float32
    code, out, data = evaluate_cli(bundle_dir, category, capsys)
    assert code == 0
    assert "deployed vs PyTorch reference (fp32, cpu, torch test" in out and "within budget" in out
    diff = data["reference_comparison"]
    assert diff["image_auroc_drop_points"] == 0 and diff["map_max_abs_diff"] == 0 and diff["within_budget"]
    assert diff["reference"]["runtime"] == RUNTIME and diff["reference"]["data"] == str(category.resolve())
    page = (bundle_dir / "eval" / "report.html").read_text()
    assert "Deployed vs reference model" in page and "PyTorch test, fp32 on cpu" in page


def test_a_deployed_model_that_loses_more_than_the_budget_fails(tmp_path, category, capsys):
    def reference_finds_the_missed_parts(scores, maps):
        scores[5:7] = 0.9

    code, out, data = evaluate_cli(
        with_reference(tmp_path, category, reference_finds_the_missed_parts), category, capsys
    )
    assert code == 1
    assert "OVER BUDGET" in out
    assert data["reference_comparison"]["image_auroc_drop_points"] == pytest.approx(100 * (1 - 17 / 25))
    assert data["reference_comparison"]["score_max_abs_diff"] == pytest.approx(0.9 - MISSED_VALUE / 255)
    assert "OVER BUDGET" in (tmp_path / "b" / "eval" / "report.html").read_text()


def test_small_differences_within_the_budget_pass(tmp_path, category, capsys):
    def fp16_like(scores, maps):
        maps += np.float32(1e-3)
        scores += np.float32(1e-3)

    code, out, data = evaluate_cli(with_reference(tmp_path, category, fp16_like), category, capsys)
    assert code == 0 and data["reference_comparison"]["map_max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_a_reference_that_does_not_fit_is_not_compared_and_says_why(tmp_path, category, capsys, caplog):
    bundle_dir = with_reference(tmp_path, category)
    # Other files: one good part fewer than were scored for the reference.
    (category / "test" / "good" / "004.png").unlink()
    code, out, data = evaluate_cli(bundle_dir, category, capsys)
    assert code == 0 and data["reference_comparison"] is None and "deployed vs PyTorch" not in out
    assert any("holds 10 images of" in n and "not the 9 evaluated here" in n for n in data["notes"])
    # Another model: a new model.onnx in the bundle after its reference was written.
    make_bundle(bundle_dir, 48, 48)
    assert (bundle_dir / REFERENCE_FILE).is_file()
    code, out, data = evaluate_cli(bundle_dir, category, capsys)
    assert code == 0 and data["reference_comparison"] is None
    assert any("scored with another model.onnx" in n for n in data["notes"])


def test_without_a_reference_the_report_says_it_was_not_measured(tmp_path, category, capsys):
    code, _, data = evaluate_cli(make_bundle(tmp_path / "b"), category, capsys)
    assert code == 0 and data["reference_comparison"] is None
    assert any("export-engine --reference" in n for n in data["notes"])


def test_a_damaged_reference_is_a_one_line_error(tmp_path, category, capsys):
    bundle_dir = with_reference(tmp_path, category)
    (bundle_dir / REFERENCE_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ReferenceError, match="reference.npz: unreadable"):
        load_reference(load_bundle(bundle_dir))
    capsys.readouterr()
    assert main(["--bundle", str(bundle_dir), "--data", str(category)]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()  # before any scoring: no progress bar
    assert err.startswith("edge-eval: ") and "reference.npz: unreadable" in err
