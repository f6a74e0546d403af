"""The defect-size sheet: planted defects have their size in the image's own pixels, and a real
ONNX bundle that sees big defects but not tiny ones (the brightness model at 32 px, judging
256-px parts) shows exactly that, in the printed table, eval.json and the report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from calibration.defect_sizes import KINDS, defect_size_sheet, plant, plant_seed, scratch_width
from calibration.eval_cli import main
from edge.backends import load_backend
from edge.bundle import load_bundle

from ..edge.conftest import make_bundle
from .test_evaluate import make_category

SURFACE = 100  # grey level of the good parts: +64 is 164, above the brightness bundle's 0.5 (127.5)


def good_surface(rng: np.random.Generator, height: int = 256, width: int = 320) -> np.ndarray:
    """Mid-grey with fine texture, far from 0 and 255, so every pixel a defect touches changes."""
    return np.clip(SURFACE + rng.normal(0, 4, (height, width, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)


def extent(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1


def length(mask: np.ndarray) -> float:
    """Largest distance between two of the mask's pixel centres, plus one pixel."""
    pts = np.argwhere(mask).astype(float)
    return float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()) + 1


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 8, 16, 33, 64])
def test_planted_defects_have_the_requested_size_in_native_pixels(size):
    rng = np.random.default_rng(size)
    for trial in range(4):
        rgb = good_surface(rng)
        for kind in KINDS:
            p = plant(rgb, kind, size, 0.25, plant_seed(0, trial, 0, kind, size))
            changed = (p.image != rgb).any(axis=2)
            assert not (changed & ~p.mask).any(), f"{kind} {size}: changed pixels outside its mask"
            if kind == "scratch":
                assert np.array_equal(changed, p.mask)
                # On the pixel grid a slanted line's end pixels fall up to a pixel diagonal short of its ends.
                assert size - 2 <= length(p.mask) <= size + scratch_width(size), (kind, size, length(p.mask))
                assert p.mask.sum() <= (size + 1) * (scratch_width(size) + 1) * 1.5
            else:  # spot and dent: a disc of that diameter
                assert extent(p.mask) == (size, size), (kind, size, extent(p.mask))
                if kind == "spot":
                    assert np.array_equal(changed, p.mask)
                    assert (p.image[p.mask].astype(int) - rgb[p.mask] == 64).all()  # brighter on a dark surface
            if kind == "dent" and size >= 4:
                moved = p.image[p.mask].astype(int) - rgb[p.mask]
                assert moved.max() == 64 and moved.min() == -64  # one side lit, the other in shadow


def test_planting_is_deterministic_and_every_placement_differs():
    rgb = good_surface(np.random.default_rng(0))
    a = plant(rgb, "spot", 8, 0.25, plant_seed(0, 3, 0, "spot", 8))
    b = plant(rgb, "spot", 8, 0.25, plant_seed(0, 3, 0, "spot", 8))
    c = plant(rgb, "spot", 8, 0.25, plant_seed(0, 3, 1, "spot", 8))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)


def test_a_bright_surface_gets_darker_defects():
    rgb = np.full((64, 64, 3), 200, np.uint8)
    p = plant(rgb, "spot", 6, 0.25, np.random.default_rng(0))
    assert (p.image[p.mask] == 200 - 64).all()


def write_parts(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        cv2.imwrite(str(path), good_surface(rng, 256, 256))
        paths.append(path)
    return paths


def test_the_sheet_shows_a_model_that_catches_big_defects_but_not_tiny_ones(tmp_path):
    # The brightness model at 32 px judges 256-px parts: an 8x8 block of camera pixels becomes one
    # model pixel, so a defect must fill about half of one to lift it over the threshold.
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    files = write_parts(tmp_path / "good", 4)
    sheet = defect_size_sheet(
        bundle, load_backend(bundle, "onnxruntime"), files, "test parts", [2, 4, 32, 64], repeats=2, batch=5
    )
    assert sheet.clean_rejected == 0
    assert sheet.model_px_per_native_px == pytest.approx((1 / 8, 1 / 8))
    for kind in KINDS:
        assert sheet.caught(kind, 2) == (0, 8) and sheet.caught(kind, 4) == (0, 8), kind
    for kind in ("spot", "dent"):
        assert sheet.caught(kind, 32) == (8, 8) and sheet.caught(kind, 64) == (8, 8), kind
    assert sheet.smallest_caught("spot") == 32


def test_edge_eval_writes_the_sheet_into_eval_json_and_the_report(tmp_path, capsys):
    bundle_dir = make_bundle(tmp_path / "b")
    # The default good parts are the ones export-engine held out: listed in bundle.yaml.
    meta = yaml.safe_load((bundle_dir / "bundle.yaml").read_text())
    meta["training"] = {"holdout": [str(p) for p in write_parts(tmp_path / "held", 3)]}
    (bundle_dir / "bundle.yaml").write_text(yaml.safe_dump(meta))
    category = make_category(tmp_path / "cat")
    assert (
        main(
            [
                "--bundle",
                str(bundle_dir),
                "--data",
                str(category),
                "--out",
                str(tmp_path / "e"),
                "--defect-sizes",
                "2,64",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "defect sizes: share caught" in out and "held out of training" in out
    sheet = json.loads((tmp_path / "e" / "eval.json").read_text())["defect_sizes"]
    assert [row["size_px"] for row in sheet["table"]] == [2, 64]
    assert sheet["table"][0]["spot"] == pytest.approx(
        {"caught": 0, "n": 3, "share": 0.0, "median_score": SURFACE / 255}, rel=0.05
    )
    assert sheet["table"][1]["spot"]["caught"] == 3 and sheet["n_images"] == 3 and sheet["contrast"] == 0.25
    assert sheet["smallest_caught_90"]["spot"] == 64
    assert "Defect sizes caught" in (tmp_path / "e" / "report.html").read_text()


def test_edge_eval_refuses_bad_sizes_and_an_uncalibrated_bundle(tmp_path, capsys):
    category = make_category(tmp_path / "cat")
    args = ["--data", str(category), "--out", str(tmp_path / "e")]
    with pytest.raises(SystemExit) as e:
        main(["--bundle", str(make_bundle(tmp_path / "b")), *args, "--defect-sizes", "2,big"])
    assert e.value.code == 2 and "whole pixel sizes" in capsys.readouterr().err
    uncalibrated = make_bundle(tmp_path / "u", threshold=None)
    assert (
        main(
            [
                "--bundle",
                str(uncalibrated),
                *args,
                "--defect-sizes",
                "--defect-good",
                str(tmp_path / "cat" / "test" / "good"),
            ]
        )
        == 2
    )
    assert "run edge-calibrate first" in capsys.readouterr().err
