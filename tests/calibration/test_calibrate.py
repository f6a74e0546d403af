"""edge-calibrate on a real ONNX bundle whose scores are known (the brightness model)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from calibration.calibrate import fit, Scores, warnings_for
from calibration.cli import main
from edge.bundle import load_bundle

from ..edge.conftest import make_bundle, part


def write_parts(folder, values):
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        cv2.imwrite(str(folder / f"{i:03d}.png"), part(v, (32, 32)))
    return folder


def test_cli_writes_threshold_the_line_reads(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    values = list(range(40, 80, 2))                        # 20 good parts, scores v/255
    data = write_parts(tmp_path / "good", values)
    assert main(["--bundle", str(bundle), "--data", str(data), "--k", "2"]) == 0
    scores = np.array(values) / 255
    cal = yaml.safe_load((bundle / "calibration.yaml").read_text())
    assert cal["n"] == 20 and cal["k"] == 2.0
    assert cal["mu"] == pytest.approx(scores.mean(), rel=1e-5)
    assert cal["sigma"] == pytest.approx(scores.std(ddof=1), rel=1e-4)
    assert cal["threshold"] == pytest.approx(scores.mean() + 2 * scores.std(ddof=1), rel=1e-4)
    assert cal["data"]["count"] == 20 and len(cal["data"]["files_sha256"]) == 64
    # Flat images: every pixel equals the image score, so pixel moments are those of the scores.
    assert cal["pixel_mu"] == pytest.approx(scores.mean(), rel=1e-5)
    assert load_bundle(bundle).calibration.threshold == pytest.approx(cal["threshold"])
    assert "threshold=" in capsys.readouterr().out


def test_small_set_and_skew_warn():
    x = np.array([0.1] * 9 + [1.0])
    fitted = fit(Scores(x, 0.0, 0.0), k=3)
    w = " ".join(warnings_for(fitted))
    assert "only 10 good images" in w and "skewed" in w
    assert fitted["false_reject_rate"] == 0.0 and fitted["alternatives"]["robust"]["threshold"] == pytest.approx(0.1)


def test_unreadable_image_and_missing_folder_are_clear(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    data = write_parts(tmp_path / "good", [50, 60])
    (data / "broken.png").write_bytes(b"not a png")
    assert main(["--bundle", str(bundle), "--data", str(data)]) == 2
    assert "broken.png: unreadable image" in capsys.readouterr().err
    assert main(["--bundle", str(bundle), "--data", str(tmp_path / "none")]) == 2
    assert "not a directory" in capsys.readouterr().err
