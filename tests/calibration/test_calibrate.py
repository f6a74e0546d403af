"""edge-calibrate on a real ONNX bundle whose scores are known (the brightness model)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

import calibration.cli
from calibration.calibrate import Scores, fit, warnings_for
from calibration.cli import main
from calibration.eval_cli import main as eval_main
from edge.bundle import load_bundle

from ..edge.conftest import make_bundle, part


def write_parts(folder, values):
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        cv2.imwrite(str(folder / f"{i:03d}.png"), part(v, (32, 32)))
    return folder


def test_cli_writes_threshold_the_line_reads(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    values = list(range(40, 80, 2))  # 20 good parts, scores v/255
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


def test_non_finite_outputs_are_refused_before_fitting(tmp_path, capsys, overflowing):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    data = write_parts(tmp_path / "good", range(40, 80, 2))
    overflowing(calibration.cli, 50, "map")
    overflowing(calibration.cli, 60, "score")
    assert main(["--bundle", str(bundle), "--data", str(data)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("edge-calibrate: ") and "2 of 20 images" in err and "not finite" in err
    assert "good/005.png" in err and "good/010.png" in err and "--no-fp16" in err
    assert not (bundle / "calibration.yaml").exists()


@pytest.mark.parametrize("cli", [main, eval_main], ids=["edge-calibrate", "edge-eval"])
@pytest.mark.parametrize("batch", ["0", "-1"])
def test_batch_below_one_is_a_usage_error(tmp_path, capsys, cli, batch):
    bundle = make_bundle(tmp_path / "b")
    data = write_parts(tmp_path / "good", [50, 60])
    with pytest.raises(SystemExit) as exited:
        cli(["--bundle", str(bundle), "--data", str(data), "--batch", batch])
    assert exited.value.code == 2
    assert f"--batch must be >= 1 (got {batch})" in capsys.readouterr().err


def test_holdout_exported_on_another_machine(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    meta["training"] = {"data": "/train-box/bottle", "holdout": [f"/train-box/bottle/{i:03d}.png" for i in range(21)]}
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(meta))
    assert main(["--bundle", str(bundle), "--holdout"]) == 2
    err = capsys.readouterr().err
    assert "21 of 21 held-out images listed in" in err and "not on this machine" in err and "--data GOOD_DIR" in err


def test_skew_is_the_adjusted_sample_skewness():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for n in (8, 20, 83):
        x = rng.exponential(size=n)
        assert fit(Scores(x, 0.0, 0.0), k=3)["skew"] == pytest.approx(stats.skew(x, bias=False))
    # Skew 1.10, read as 0.94 by the population third moment over the sample σ³: it warns now.
    x = np.r_[np.zeros(10), np.ones(8), 2.4, 2.4]
    assert stats.skew(x, bias=False) > 1.0 and any("skewed" in w for w in warnings_for(fit(Scores(x, 0, 0), 3)))
    # Equal scores have no skew, whatever rounding leaves in x − μ.
    assert fit(Scores(np.full(25, 0.4), 0.0, 0.0), k=3)["skew"] == 0.0
