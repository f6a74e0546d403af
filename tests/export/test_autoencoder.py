"""AESc with Stain noise: the network, the two scores in the graph (MC dropout with fixed
masks), training that repairs stains, and ONNX parity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edge.bundle import load_bundle
from export.autoencoder import (
    AESc,
    AutoencoderConfig,
    UncertaintyScorer,
    dropout_masks,
    export_autoencoder,
    fit_autoencoder,
    fit_graph,
)
from export.cli import main
from export.data import iter_batches, split_training_data
from export.graph import export_onnx
from export.scratch import load_images
from tests.export.helpers import (
    assert_onnx_parity,
    export_and_score,
    good_folder,  # noqa: F401 (a fixture)
    one_thread,  # noqa: F401
    session,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"size": 32, "depth": 4, "channels": 4, "kernel_size": 3, "mc_passes": 5, "epochs": 2, "batch_size": 4}


def test_aesc_reconstructs_at_input_size_in_unit_range() -> None:
    torch.manual_seed(0)
    ae = AESc(depth=5, channels=4, kernel_size=5).eval()
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        y = ae(x)
    assert y.shape == (1, 2, 3, 64, 48) and y.min() >= 0 and y.max() <= 1
    # MC dropout where AESc has it: never next to the pixels, more towards the bottleneck.
    assert ae.dropouts == {
        "enc2": (0.1, 16),
        "enc3": (0.2, 32),
        "enc4": (0.4, 64),
        "dec2": (0.1, 16),
        "dec3": (0.2, 32),
    }


def test_dropout_masks_are_fixed_by_seed_and_scaled_like_dropout() -> None:
    ae = AESc(depth=5, channels=8)
    masks = dropout_masks(ae, passes=400, seed=3)
    assert all(torch.equal(m, dropout_masks(ae, 400, 3)[k]) for k, m in masks.items())
    assert not torch.equal(masks["enc4"], dropout_masks(ae, 400, 4)["enc4"])
    for name, (rate, channels) in ae.dropouts.items():
        mask = masks[name]
        assert mask.shape == (400, 1, channels, 1, 1)
        assert all(v == 0 or v == pytest.approx(1 / (1 - rate)) for v in mask.unique().tolist())
        assert abs((mask == 0).float().mean().item() - rate) < 0.03
        assert abs(mask.mean().item() - 1.0) < 0.05  # expectation preserved


def test_batched_passes_equal_one_pass_at_a_time_and_do_not_mix_images() -> None:
    torch.manual_seed(0)
    ae = AESc(depth=4, channels=4, kernel_size=3).eval()
    x = torch.rand(3, 3, 32, 32)
    masks = dropout_masks(ae, passes=4, seed=0)
    with torch.no_grad():
        together = ae(x, masks)
        assert together.shape == (4, 3, 3, 32, 32)
        for k in range(4):
            alone = ae(x[1:2], {name: m[k : k + 1] for name, m in masks.items()})
            torch.testing.assert_close(alone[0, 0], together[k, 1], rtol=1e-5, atol=1e-6)
        scorer = UncertaintyScorer(ae, passes=4, seed=0)
        first, second = scorer(x), scorer(x)
    assert first.shape == (3, 1, 32, 32) and torch.equal(first, second) and first.mean() > 0
    expected = (255 * together).var(dim=0, unbiased=False).mean(dim=1, keepdim=True)
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-6)


def test_training_repairs_stains_better_each_epoch_and_resumes(good_folder: Path, tmp_path: Path) -> None:
    images = load_images(sorted(good_folder.iterdir()), 32)
    config = AutoencoderConfig(**{**TINY, "epochs": 5, "lr": 0.01}, checkpoint_every=2)
    ae, result = fit_autoencoder(images, images[:3], config, tmp_path / "ckpt")
    losses = [h["mse"] for h in result.history]
    assert result.epochs_run == 5 and losses[-1] < losses[0] / 2
    assert result.best_score == max(h["val"] for h in result.history) and (tmp_path / "ckpt" / "best.pt").is_file()

    resumed, again = fit_autoencoder(images, images[:3], dataclasses.replace(config, resume=True), tmp_path / "ckpt")
    assert again.history == result.history
    for a, b in zip(ae.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module", params=["residual", "uncertainty"])
def fitted(request, good_folder: Path, tmp_path_factory) -> tuple[AutoencoderConfig, torch.nn.Module, Path]:
    config = AutoencoderConfig(score=request.param, **TINY)
    split = split_training_data(good_folder, holdout=0.2, seed=0)
    graph, params = fit_graph(split, config, tmp_path_factory.mktemp("ckpt"))
    assert params["score"] == request.param and params["epochs_run"] == 2
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(graph, path, config.size, config.size)
    return config, graph, path


def test_pytorch_and_onnxruntime_agree_and_repeat(fitted, good_folder: Path) -> None:
    config, graph, path = fitted
    runtime = session(path)
    batch = next(iter_batches(sorted(good_folder.iterdir())[:3], (32, 32), 3))
    batch[1, 8:20, 8:16] = (0, 255, 0)
    for images in (batch, batch[1:2]):
        map_ort, _ = assert_onnx_parity(graph, runtime, images)
        # No random op in the graph: the same image scores the same on every call.
        assert np.array_equal(runtime.run(None, {"image": images})[0], map_ort)
    single = runtime.run(None, {"image": batch[1:2]})[1]
    np.testing.assert_allclose(single, runtime.run(None, {"image": batch})[1][1:2], rtol=1e-5)


def test_export_engine_writes_an_autoencoder_bundle(good_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k not in ("size", "epochs", "batch_size")}))
    code = main(
        [
            "--method",
            "autoencoder",
            "--data",
            str(good_folder),
            "--out",
            str(tmp_path / "b"),
            "--config",
            str(config),
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--score",
            "uncertainty",
            "--mc-passes",
            "3",
        ]
    )
    assert code == 0
    document = yaml.safe_load((tmp_path / "b" / "bundle.yaml").read_text())
    assert (document["method"], document["backbone"]) == ("autoencoder", "aesc")
    params = document["method_params"]
    assert (params["score"], params["mc_passes"], params["epochs_run"]) == ("uncertainty", 3, 1)
    assert document["preprocessing_in_graph"] == {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}
    # Measured: the MC variance does not survive fp16; the bundle tells edge-build-engine so.
    assert document["precision"]["fp16"] is False and "up to 0.32 points" in document["precision"]["why"]
    assert load_bundle(tmp_path / "b").fp16_caution == document["precision"]["why"]
    assert (tmp_path / "b.checkpoints" / "last.pt").is_file()


@pytest.mark.mvtec
@pytest.mark.slow
def test_bottle_default_score_detects_defects(mvtec_bottle: Path, tmp_path: Path) -> None:
    # Two thirds of the default epochs: about 2 minutes here (BENCHMARKS.md has the full run).
    config = AutoencoderConfig(epochs=40)
    run = export_and_score(export_autoencoder, mvtec_bottle, tmp_path / "bundle", config)
    print(f"\nbottle, autoencoder {config.score} {config.size}², {config.epochs} epochs: {run}")
    assert run.image_auroc >= 0.90
