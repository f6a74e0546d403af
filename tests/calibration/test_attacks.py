"""Attacks on edge-calibrate and edge-eval from their inputs (README "Reliability", the attack
table): good parts that all score alike, masks of another size, YAML that expands without bound."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from calibration.cli import main
from calibration.eval_cli import main as eval_main

from ..edge.conftest import make_bundle, part
from ..edge.test_attacks import BOMB

EVAL = [sys.executable, "-c", "import sys; from calibration.eval_cli import main; sys.exit(main())"]


def write_parts(folder, values, size=(32, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        cv2.imwrite(str(folder / f"{i:03d}.png"), part(v, size))
    return folder


# 10. σ = 0: every good image scores the same.


def test_good_parts_that_all_score_alike_are_refused_unless_forced(tmp_path, capsys, caplog):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    data = write_parts(tmp_path / "good", [50] * 25)  # 25 copies of one image
    assert main(["--bundle", str(bundle), "--data", str(data)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert line.startswith("edge-calibrate: ") and "σ is 0" in line and "--force" in line
    assert not (bundle / "calibration.yaml").exists()

    assert main(["--bundle", str(bundle), "--data", str(data), "--force"]) == 0
    assert "σ is 0" in caplog.text
    assert yaml.safe_load((bundle / "calibration.yaml").read_text())["sigma"] == 0


# 11. Masks of another size or aspect than their image.


def mvtec_category(root, mask_size):
    write_parts(root / "test" / "good", [40, 42, 44])
    defect = root / "test" / "spot"
    defect.mkdir(parents=True)
    masks = root / "ground_truth" / "spot"
    masks.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(defect / f"{i:03d}.png"), part(40, (32, 32), spot=(4, 4, 8)))
        mask = np.zeros((32, 32), np.uint8)
        mask[4:12, 4:12] = 255
        cv2.imwrite(
            str(masks / f"{i:03d}_mask.png"), cv2.resize(mask, mask_size[::-1], interpolation=cv2.INTER_NEAREST)
        )
    return root


@pytest.mark.parametrize("mask_size", [(37, 900), (16, 32)], ids=["other-aspect", "other-aspect-smaller"])
def test_a_mask_of_another_aspect_than_its_image_is_an_error_naming_it(tmp_path, capsys, mask_size):
    root = mvtec_category(tmp_path / "cat", mask_size)
    assert eval_main(["--bundle", str(make_bundle(tmp_path / "b")), "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(root / "ground_truth" / "spot" / "000_mask.png") in err and "32x32" in err


def test_a_mask_of_the_same_aspect_is_resized_and_evaluated(tmp_path, capsys):
    root = mvtec_category(tmp_path / "cat", (64, 64))
    assert eval_main(["--bundle", str(make_bundle(tmp_path / "b")), "--data", str(root)]) == 0


# 8. edge-eval on a calibration.yaml alias bomb.


def test_edge_eval_refuses_an_alias_bomb_calibration_at_once(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    (bundle / "calibration.yaml").write_text((bundle / "calibration.yaml").read_text() + BOMB)
    root = mvtec_category(tmp_path / "cat", (32, 32))
    r = subprocess.run(
        [*EVAL, "--bundle", str(bundle), "--data", str(root), "--backend", "onnxruntime"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "alias" in r.stderr
