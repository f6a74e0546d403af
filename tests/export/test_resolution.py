"""Working resolution (``--size HxW``, ``--size auto``), PatchCore's bounded bank and tiling
inside the graph: exported bundles run in a real ONNX Runtime session."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from export.autoencoder import AutoencoderConfig, export_autoencoder
from export.backbones import load_backbone
from export.data import load_image
from export.glass import GlassConfig, export_glass
from export.graph import export_onnx
from export.patchcore import PatchCoreConfig, export_patchcore, extract_patch_features, feature_extractor, fit_patchcore
from export.simplenet import SimpleNetConfig, export_simplenet
from export.sizes import auto_size, parse_size, resolve_size
from export.ssl import SSLConfig, export_ssl
from export.tiling import axis_origins
from tests.export.helpers import assert_onnx_parity, one_thread, session  # noqa: F401 (fixture)
from tests.export.test_cli import error_lines, run_cli

HEIGHT, WIDTH = 32, 64  # a non-square working resolution, sides multiples of every method's stride
RUN = {"epochs": 1, "batch_size": 4, "checkpoint_every": 1}
METHODS = {
    "patchcore": (export_patchcore, PatchCoreConfig, {"coreset_ratio": 0.1, "batch_size": 4}),
    "ssl": (export_ssl, SSLConfig, RUN),
    "autoencoder": (export_autoencoder, AutoencoderConfig, {**RUN, "channels": 4, "kernel_size": 3}),
    "simplenet": (export_simplenet, SimpleNetConfig, {**RUN, "validate_every": 1}),
    "glass": (export_glass, GlassConfig, {**RUN, "gas_steps": 2, "validate_every": 1}),
}


@pytest.fixture(scope="module")
def wide_images(write_images, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wide")
    write_images(folder, 6, size=(40, 80))
    return folder


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_exports_a_non_square_model(method: str, wide_images: Path, tmp_path: Path, one_thread) -> None:
    export, config_cls, tiny = METHODS[method]
    bundle = export(wide_images, tmp_path / "b", config_cls(size=f"{HEIGHT}x{WIDTH}", **tiny))
    described = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert (described["input"]["height"], described["input"]["width"]) == (HEIGHT, WIDTH)
    assert described["outputs"]["anomaly_map"]["shape"] == ["B", 1, HEIGHT, WIDTH]
    images = np.stack([load_image(f, (HEIGHT, WIDTH)) for f in sorted(wide_images.iterdir())[:3]])
    anomaly_map, score = session(bundle / "model.onnx").run(None, {"image": images})
    assert anomaly_map.shape == (3, 1, HEIGHT, WIDTH) and score.shape == (3,)
    np.testing.assert_allclose(score, anomaly_map.max(axis=(1, 2, 3)), rtol=1e-5)
    assert np.isfinite(anomaly_map).all() and anomaly_map.std() > 0


def test_sizes_are_parsed_as_height_by_width() -> None:
    assert parse_size(256) == parse_size("256") == (256, 256)
    assert parse_size("640x256") == (640, 256) and parse_size(" 64 X 32 ") == (64, 32)
    assert parse_size("auto") == "auto"
    for bad in ("64x", "x64", "large", "64x32x3", True):
        with pytest.raises(ValueError, match="expected PX, HxW"):
            parse_size(bad)
    with pytest.raises(ValueError, match="multiple of 16"):
        PatchCoreConfig(size="64x40")


def test_auto_size_keeps_the_aspect_ratio_within_the_pixel_budget() -> None:
    assert auto_size((300, 1200), 256 * 256, 32) == (128, 512)
    assert auto_size((900, 900), 256 * 256, 16) == (256, 256)
    height, width = auto_size((480, 640), 512 * 512, 32)
    assert height % 32 == width % 32 == 0 and abs(width / height - 4 / 3) < 0.1
    assert abs(height * width - 512 * 512) < 0.1 * 512 * 512
    with pytest.raises(ValueError, match="pixel_budget"):
        auto_size((300, 1200), 100, 32)


def test_size_auto_follows_long_training_images(write_images, tmp_path: Path, capsys, caplog) -> None:
    files = write_images(tmp_path / "long", 5, size=(30, 120))
    with caplog.at_level(logging.INFO, logger="export.sizes"):
        resolved = resolve_size(PatchCoreConfig(size="auto", pixel_budget=32 * 128), files, 16)
    assert resolved.size == "32x128"
    assert "--size auto: 30x120 images (median, HxW) → 32x128 (budget 4096 px" in caplog.text
    code, _ = run_cli(
        capsys,
        *("--method", "patchcore", "--data", str(tmp_path / "long"), "--out", str(tmp_path / "b")),
        *("--size", "auto", "--pixel-budget", "4096", "--coreset-ratio", "0.1"),
    )
    described = yaml.safe_load((tmp_path / "b" / "bundle.yaml").read_text())
    assert code == 0 and (described["input"]["height"], described["input"]["width"]) == (32, 128)


def test_bad_sizes_and_tilings_are_one_line_errors(write_images, tmp_path: Path, capsys) -> None:
    write_images(tmp_path / "good", 2)
    common = ["--method", "patchcore", "--data", str(tmp_path / "good"), "--out", str(tmp_path / "b")]
    with pytest.raises(SystemExit):  # argparse's own refusal of a malformed --size
        run_cli(capsys, *common, "--size", "64x")
    assert "expected PX, HxW" in capsys.readouterr().err
    for extra, needle in (
        (["--size", "64x48", "--tile", "64"], "tile 64: larger than the frame 64x48"),
        (["--size", "128", "--tile", "64", "--tile-overlap", "12"], "tile_overlap 12: must be a multiple of 8"),
        (["--size", "128", "--tile", "64", "--reweight", "9"], "not with tile"),
        (["--patches-per-image", "0"], "patches_per_image 0"),
    ):
        code, stderr = run_cli(capsys, *common, *extra)
        assert code == 2 and needle in error_lines(stderr)[0]
    assert not (tmp_path / "b").exists()


def test_the_bank_holds_at_most_patches_per_image_of_each_image(write_images, tmp_path: Path) -> None:
    files = write_images(tmp_path, 4, size=(64, 128))
    config = PatchCoreConfig(size="64x128")
    extractor = feature_extractor(load_backbone(config.backbone), config)
    every = extract_patch_features(extractor, files, (64, 128), 2)
    capped = extract_patch_features(extractor, files, (64, 128), 2, per_image=20, seed=3)
    assert every.shape[0] == 4 * 8 * 16 and capped.shape == (4 * 20, every.shape[1])
    # Each kept row is one of its own image's patches, never an average or a copy of another image's.
    per_image = every.reshape(4, 8 * 16, -1)
    for i in range(4):
        distances = np.abs(capped[20 * i : 20 * (i + 1), None] - per_image[i][None]).max(axis=2)
        assert (distances.min(axis=1) < 1e-5).all()
    assert len({tuple(np.round(r, 4)) for r in capped}) == len(capped)  # drawn without replacement
    model = fit_patchcore(files, PatchCoreConfig(size="64x128", patches_per_image=16, coreset_ratio=0.5))
    assert model.n_patches == 4 * 16 and model.bank_size == 32


@pytest.fixture(scope="module")
def tiled(write_images, tmp_path_factory):
    """A PatchCore tiled model: a 64×96 frame in 32-px tiles without overlap (2×3 tiles)."""
    files = write_images(tmp_path_factory.mktemp("frames"), 4, size=(64, 96))
    config = PatchCoreConfig(size="64x96", tile=32, tile_overlap=0, coreset_ratio=0.2, batch_size=4)
    model = fit_patchcore(files, config)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model.graph, path, 64, 96)
    # Not the training frames: their patches sit on the bank, where the map is a sqrt of a near-0
    # difference that amplifies rounding (export.bundle.MAP_TOLERANCE).
    others = write_images(tmp_path_factory.mktemp("others"), 3, size=(64, 96), seed=7)
    return model, path, np.stack([load_image(f, (64, 96)) for f in others])


def test_tiled_graph_maps_the_whole_frame_and_scores_its_maximum(tiled) -> None:
    model, path, frames = tiled
    outputs = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in onnx.load(path).graph.output
    }
    assert outputs == {"anomaly_map": ["B", 1, 64, 96], "score": ["B"]}
    anomaly_map, score = assert_onnx_parity(model.graph, session(path), frames)
    np.testing.assert_allclose(score, anomaly_map.max(axis=(1, 2, 3)), rtol=1e-6)
    # 6 tiles × 4×4 patch cells × 4 training frames: the bank was built from the tiles.
    assert model.n_patches == 4 * 6 * 16


def test_tiles_without_overlap_score_as_the_untiled_model_on_each_tile(tiled) -> None:
    model, _, frames = tiled
    tiled_scorer = model.graph.patch_scorer
    with torch.no_grad():
        x = model.graph.input(torch.from_numpy(frames))
        stitched = tiled_scorer(x)  # [B, 1, 8, 12]
        for y in (0, 32):
            for left in (0, 32, 64):
                alone = tiled_scorer.scorer(x[:, :, y : y + 32, left : left + 32])
                torch.testing.assert_close(stitched[:, :, y // 8 : y // 8 + 4, left // 8 : left // 8 + 4], alone)


def test_overlapping_tiles_are_averaged(write_images, tmp_path: Path) -> None:
    files = write_images(tmp_path, 3, size=(32, 80))
    config = PatchCoreConfig(size="32x80", tile=32, tile_overlap=16, coreset_ratio=0.2)
    model = fit_patchcore(files, config)
    assert axis_origins(80, 32, 16, 8) == [0, 16, 32, 48]
    inner = model.graph.patch_scorer.scorer
    with torch.no_grad():
        x = model.graph.input(torch.from_numpy(np.stack([load_image(f, (32, 80)) for f in files])))
        stitched = model.graph.patch_scorer(x)
        tiles = [inner(x[:, :, :, left : left + 32]) for left in (0, 16, 32, 48)]
    # Cells 2-3 (px 16-31) lie in tiles 0 and 1: their mean; cell 0 only in tile 0.
    torch.testing.assert_close(stitched[..., 2:4], (tiles[0][..., 2:4] + tiles[1][..., 0:2]) / 2)
    torch.testing.assert_close(stitched[..., 0:2], tiles[0][..., 0:2])
    torch.testing.assert_close(stitched[..., 8:10], tiles[3][..., 2:4])


def test_tiling_is_recorded_in_the_bundle(write_images, tmp_path: Path) -> None:
    write_images(tmp_path / "good", 3, size=(64, 128))
    config = PatchCoreConfig(size="64x128", tile=64, tile_overlap=32, coreset_ratio=0.2, holdout=0.0)
    bundle = export_patchcore(tmp_path / "good", tmp_path / "b", config)
    described = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert described["method_params"]["tiling"] == {"tile": 64, "overlap": 32, "tiles": 3}
    assert (described["input"]["height"], described["input"]["width"]) == (64, 128)
