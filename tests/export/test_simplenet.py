"""SimpleNet: its pieces on tiny inputs, a short training that learns, the exported graph against
PyTorch, the CLI wiring (config file, checkpoints, --resume), and bottle through the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from export.cli import main
from export.data import load_image
from export.graph import export_onnx
from export.simplenet import (
    NOISE_STD,
    OFFICIAL_NOISE_NORM,
    Discriminator,
    PatchScorer,
    SimpleNetConfig,
    epoch_batches,
    export_simplenet,
    feature_noise,
    fit_simplenet,
    make_adaptor,
    noise_scale,
    truncated_l1_loss,
)
from tests.export.helpers import assert_onnx_parity, export_and_score, one_thread, session  # noqa: F401 (fixture)

TINY = 64  # px: an 8×8 feature grid, enough for every piece, seconds to train


# --- pieces ----------------------------------------------------------------------------------


def test_feature_noise_is_zero_mean_gaussian_with_sigma() -> None:
    torch.manual_seed(0)
    features = torch.randn(2000, 152) * 4 + 3
    noise = feature_noise(features, 0.5) - features
    assert noise.mean().abs() < 0.005
    assert noise.std().item() == pytest.approx(0.5, rel=0.01)
    # Independent per element: no correlation between dimensions, none with the features.
    correlation = torch.corrcoef(noise[:, :8].T) - torch.eye(8)
    assert correlation.abs().max() < 0.1
    assert torch.corrcoef(torch.stack([noise[:, 0], features[:, 0]]))[0, 1].abs() < 0.1
    fraction_within_1sigma = ((noise.abs() < 0.5).float().mean()).item()
    assert fraction_within_1sigma == pytest.approx(0.6827, abs=0.01)


def test_truncated_l1_loss_on_known_values() -> None:
    true_scores = torch.tensor([1.0, 0.2])
    fake_scores = torch.tensor([-1.0, 0.1])
    # normal: relu(0.5 − 1) = 0, relu(0.5 − 0.2) = 0.3 → 0.15; fake: relu(−0.5) = 0, relu(0.6) = 0.6 → 0.3
    assert truncated_l1_loss(true_scores, fake_scores, 0.5).item() == pytest.approx(0.45)
    assert truncated_l1_loss(torch.tensor([0.5, 2.0]), torch.tensor([-0.5, -3.0])).item() == 0.0
    assert truncated_l1_loss(torch.zeros(4), torch.zeros(4), 0.5).item() == pytest.approx(1.0)  # the collapse value


def test_noise_scale_is_one_in_the_official_setting() -> None:
    assert noise_scale(0.015, 1536) == pytest.approx(1.0)
    assert pytest.approx(0.588, abs=1e-3) == OFFICIAL_NOISE_NORM
    assert noise_scale(1.0, 152) == pytest.approx(np.sqrt(152) / OFFICIAL_NOISE_NORM)


def test_discriminator_and_scorer_shapes_and_sign() -> None:
    torch.manual_seed(0)
    adaptor, disc = make_adaptor(12), Discriminator(12, hidden=16).eval()
    assert [type(m).__name__ for m in disc.body] == ["Linear", "BatchNorm1d", "LeakyReLU"]
    assert disc.tail.bias is None and disc.body[2].negative_slope == 0.2
    features = torch.randn(2, 12, 3, 5)
    with torch.no_grad():
        maps = PatchScorer(adaptor, disc, sign=-1.0)(features)
        rows = features.permute(0, 2, 3, 1).reshape(-1, 12)
        expected = -disc(adaptor(rows)).reshape(2, 3, 5)
        assert maps.shape == (2, 1, 3, 5)
        torch.testing.assert_close(maps[:, 0], expected)
        probs = Discriminator(12, hidden=16, sigmoid=True).eval()(rows)
    assert probs.shape == (30,) and ((probs > 0) & (probs < 1)).all()


def test_epoch_batches_visit_every_patch_of_each_image_once() -> None:
    torch.manual_seed(0)
    batches = epoch_batches(n_images=10, patches=6, batch_size=4)
    assert [len(b) for b in batches] == [24, 24, 12]
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(60))
    # Whole images per step: each step's indices are complete blocks of 6.
    for b in batches:
        images = (b // 6).unique()
        assert len(b) == 6 * len(images) and set((b % 6).tolist()) == set(range(6))
    assert sum(len(b) for b in epoch_batches(10, 6, 4, limit=5)) == 30


def test_noise_defaults_to_the_backbones() -> None:
    assert SimpleNetConfig().noise == NOISE_STD["efficientnet_lite0"] == 1.0
    assert SimpleNetConfig(backbone="wide_resnet50_2").noise == 0.015  # the published value
    assert SimpleNetConfig(noise_std=0.3).noise == 0.3


# --- training and export ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(write_images, tmp_path_factory) -> tuple[list[Path], list[Path]]:
    folder = tmp_path_factory.mktemp("good")
    files = write_images(folder, 10, size=(TINY, TINY))
    return files[:8], files[8:]


@pytest.fixture(scope="module")
def tiny_model(tiny_data, one_thread):
    train, holdout = tiny_data
    return fit_simplenet(train, holdout, SimpleNetConfig(size=TINY, epochs=8, batch_size=4, validate_every=1))


def test_training_reduces_the_loss_and_selects_on_validation(tiny_model) -> None:
    result = tiny_model.result
    losses = [h["loss"] for h in result.history]
    assert result.epochs_run == 8 and losses[-1] < losses[0]
    assert all("val" in h for h in result.history) and result.best_epoch is not None
    assert result.best_score == max(h["val"] for h in result.history)
    assert tiny_model.feature_dim == 152 and not tiny_model.graph.training


def test_pytorch_and_onnxruntime_agree(tiny_model, tiny_data, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(tiny_model.graph, path, TINY, TINY)
    runtime = session(path)
    images = np.stack([load_image(f, (TINY, TINY)) for f in tiny_data[0][:3]])
    images[0, 20:40, 20:40] = 255  # one image with a bright defect
    for batch in (images, images[1:2]):
        assert_onnx_parity(tiny_model.graph, runtime, batch)
    # No noise generator at inference: no random op in the graph, the same image always scores the same.
    assert not {n.op_type for n in onnx.load(str(path)).graph.node} & {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
    }
    assert np.array_equal(runtime.run(None, {"image": images})[1], runtime.run(None, {"image": images})[1])


def test_cli_export_checkpoints_and_resume(tmp_path: Path, write_images, capsys, one_thread) -> None:
    write_images(tmp_path / "good", 6, size=(TINY, TINY))
    config = tmp_path / "sn.yaml"
    config.write_text("epochs: 2\nbatch_size: 4\nvalidate_every: 1\n")
    common = [
        "--method",
        "simplenet",
        "--data",
        str(tmp_path / "good"),
        "--size",
        str(TINY),
        "--config",
        str(config),
        "--holdout",
        "0.34",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    params = yaml.safe_load((tmp_path / "a" / "bundle.yaml").read_text())["method_params"]
    assert params["epochs_run"] == 2 and params["noise_std"] == 1.0 and params["textures"] == "procedural"
    assert params["feature_dim"] == 152 and 1 <= params["kept_epoch"] <= 2
    assert (tmp_path / "ckpt" / "last.pt").is_file()

    # --resume with more epochs continues from epoch 2 (the log says so) instead of starting over.
    assert main([*common, "--out", str(tmp_path / "b"), "--resume", "--epochs", "3"]) == 0
    params = yaml.safe_load((tmp_path / "b" / "bundle.yaml").read_text())["method_params"]
    assert params["epochs_run"] == 3
    history = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["result"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


@pytest.mark.parametrize("method", ["simplenet", "glass"])
def test_a_fresh_run_keeps_off_an_earlier_runs_checkpoints(tmp_path: Path, write_images, capsys, method: str) -> None:
    write_images(tmp_path / "good", 2, size=(TINY, TINY))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"hours of training")
    code = main(
        [
            "--method",
            method,
            "--data",
            str(tmp_path / "good"),
            "--out",
            str(tmp_path / "b"),
            "--size",
            str(TINY),
            "--epochs",
            "1",
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
        ]
    )
    assert code == 2 and "--resume" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert (tmp_path / "ckpt" / "last.pt").read_bytes() == b"hours of training"


def test_resume_refuses_another_methods_or_another_networks_checkpoint(
    tmp_path: Path, write_images, capsys, one_thread
) -> None:
    write_images(tmp_path / "good", 4, size=(TINY, TINY))
    common = [
        "--data",
        str(tmp_path / "good"),
        "--size",
        str(TINY),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--holdout",
        "0",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    assert main(["--method", "simplenet", *common, "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    config = tmp_path / "narrow.yaml"
    config.write_text("hidden_dim: 64\n")
    for argv, needle in (
        (["--method", "glass"], "holds a simplenet run, not a glass one"),
        (["--method", "simplenet", "--config", str(config)], "hidden_dim 64 (the checkpoint's: 1024)"),
    ):
        assert main([*argv, *common, "--resume", "--out", str(tmp_path / "b")]) == 2
        [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line or "Traceback" in line]
        assert needle in line and str(tmp_path / "ckpt") in line and "--checkpoint-dir" in line
        assert not (tmp_path / "b").exists()


# --- end to end on MVTec bottle ----------------------------------------------------------------


@pytest.mark.mvtec
@pytest.mark.slow
def test_bottle_through_the_onnx_bundle(mvtec_bottle: Path, tmp_path: Path, one_thread) -> None:
    # 4 of the official 160 epochs (CPU time); the validation (held-out good images against
    # synthetic anomalies) keeps the best of the epochs it saw.
    config = SimpleNetConfig(epochs=4, validate_every=2, checkpoint_dir=str(tmp_path / "ckpt"))
    run = export_and_score(export_simplenet, mvtec_bottle, tmp_path / "bundle", config)
    print(
        f"\nSimpleNet bottle, efficientnet_lite0 {config.size}², {run.method_params['epochs_run']} epochs "
        f"(kept {run.method_params['kept_epoch']}): {run}"
    )
    assert run.image_auroc >= 0.98
