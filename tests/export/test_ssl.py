"""Self-supervised synthetic-anomaly CNN: stage 1 learns, stage 2 scores like PatchCore, both
fusions export to one ONNX graph that ONNX Runtime runs as PyTorch does."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from export.cli import main
from export.data import iter_batches, split_training_data
from export.graph import export_onnx
from export.patchcore import NearestNeighbourScorer
from export.scratch import load_images
from export.ssl import CLASSES, LevelProduct, SSLConfig, export_ssl, fit_classifier, fit_graph, labelled_views
from tests.export.helpers import (assert_onnx_parity, export_and_score, good_folder, one_thread,  # noqa: F401
                                  session)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"size": 64, "epochs": 2, "batch_size": 4, "coreset_ratio": 0.1, "checkpoint_every": 1}


@pytest.fixture(scope="module")
def unseen_batch(write_images, tmp_path_factory) -> np.ndarray:
    """Three images no bank holds (a patch that is in the bank scores ~0, where the square
    root amplifies rounding), one with a red square."""
    files = write_images(tmp_path_factory.mktemp("unseen"), 3, size=(64, 64), seed=1)
    batch = next(iter_batches(files, (64, 64), 3))
    batch[1, 20:40, 10:30] = (255, 0, 0)
    return batch


def test_views_are_good_cutpaste_scar_of_each_image_and_repeat_by_seed() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    views, labels = labelled_views(images, np.random.default_rng(1), jitter=0.1)
    assert views.shape == (6, 32, 32, 3) and views.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 0, 1, 2] and len(CLASSES) == 3
    again, _ = labelled_views(images, np.random.default_rng(1), jitter=0.1)
    assert np.array_equal(views, again)
    # The anomalies are the jittered good view with a patch changed: most pixels are shared.
    assert (views[1] == views[0]).all(axis=-1).mean() > 0.8 and (views[2] == views[0]).all(axis=-1).mean() > 0.9


def test_level_product_is_the_product_of_per_level_nearest_distances() -> None:
    torch.manual_seed(0)
    channels = (3, 5)
    banks = [torch.randn(50, 3), torch.randn(70, 5)]
    features = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        got = LevelProduct(banks, channels, chunk_size=16)(features)
    expected = torch.ones(2, 1, 4, 6)
    for bank, level in zip(banks, features.split(list(channels), dim=1)):
        flat = level.flatten(2).transpose(1, 2).reshape(-1, level.shape[1])
        expected *= torch.cdist(flat, bank).min(dim=1).values.reshape(2, 1, 4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert isinstance(LevelProduct(banks, channels, 16).scorers[0], NearestNeighbourScorer)


def test_stage_1_loss_goes_down_and_checkpoints_resume(good_folder: Path, tmp_path: Path) -> None:
    images = load_images(sorted(good_folder.iterdir()), 32)
    config = SSLConfig(size=32, epochs=6, batch_size=5, lr=0.01, checkpoint_every=2)
    _, result = fit_classifier(images, images[:4], config, tmp_path / "ckpt")
    losses = [h["loss"] for h in result.history]
    assert result.epochs_run == 6 and np.mean(losses[-2:]) < losses[0]
    assert (tmp_path / "ckpt" / "last.pt").is_file() and result.best_epoch is not None

    # A finished run, resumed, trains no further and keeps the same weights.
    net_a, _ = fit_classifier(images, images[:4], config, tmp_path / "ckpt")
    resumed = dataclasses.replace(config, resume=True)
    net_b, again = fit_classifier(images, images[:4], resumed, tmp_path / "ckpt")
    assert again.epochs_run == 6 and again.history == result.history
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module", params=["concat", "multiply"])
def fitted(request, good_folder: Path, tmp_path_factory) -> tuple[SSLConfig, torch.nn.Module, dict, Path]:
    config = SSLConfig(fusion=request.param, **TINY)
    split = split_training_data(good_folder, holdout=0.2, seed=0)
    graph, params = fit_graph(split, config, tmp_path_factory.mktemp("ckpt"))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(graph, path, config.size, config.size)
    return config, graph, params, path


def test_both_fusions_export_the_engine_contract_with_bank_constants(fitted) -> None:
    config, _, params, path = fitted
    proto = onnx.load(str(path))
    [image] = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert (image.name, image.type.tensor_type.elem_type, dims) == ("image", onnx.TensorProto.UINT8, ["B", 64, 64, 3])
    assert [o.name for o in proto.graph.output] == ["anomaly_map", "score"]
    banks = [i for i in proto.graph.initializer if "bank_t" in i.name]
    patches = 8 * 8 * 8                                      # 8 training images, 8×8 layer2 cells each
    assert params["training_patches"] == patches
    if config.fusion == "concat":
        assert [b.dims[0] for b in banks] == [128 + 256] and params["bank_size"] == round(0.1 * patches)
    else:
        assert sorted(b.dims[0] for b in banks) == [128, 256] and params["bank_size"] == [round(0.1 * patches)] * 2
    assert params["epochs_run"] == 2 and not {"resume", "checkpoint_dir", "checkpoint_every"} & set(params)


def test_pytorch_and_onnxruntime_agree(fitted, unseen_batch: np.ndarray) -> None:
    _, graph, _, path = fitted
    runtime = session(path)
    batch = unseen_batch
    for images in (batch, batch[1:2]):
        assert_onnx_parity(graph, runtime, images)
    single = runtime.run(None, {"image": batch[1:2]})[1]
    np.testing.assert_allclose(single, runtime.run(None, {"image": batch})[1][1:2], rtol=1e-5)


def test_export_engine_writes_an_ssl_bundle_and_refuses_to_overwrite_a_run(good_folder: Path, tmp_path: Path,
                                                                            capsys) -> None:
    common = ["--method", "ssl", "--data", str(good_folder), "--size", "64", "--epochs", "1", "--batch-size", "4",
              "--fusion", "multiply", "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    document = yaml.safe_load((tmp_path / "a" / "bundle.yaml").read_text())
    assert (document["method"], document["backbone"]) == ("ssl", "resnet18-ssl")
    assert document["method_params"]["fusion"] == "multiply" and document["input"]["height"] == 64
    runtime = session(tmp_path / "a" / "model.onnx")
    anomaly_map, score = runtime.run(None, {"image": np.zeros((2, 64, 64, 3), np.uint8)})
    assert anomaly_map.shape == (2, 1, 64, 64) and score.shape == (2,)

    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "b")]) == 2
    assert "--resume" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main([*common, "--out", str(tmp_path / "b"), "--resume", "--fusion", "concat"]) == 0


def test_training_options_are_shared_with_other_trained_methods() -> None:
    from export.cli import _autoencoder_arguments, _ssl_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument_group("another trained method").add_argument("--epochs", type=int)
    _ssl_arguments(parser.add_argument_group("ssl options"))
    _autoencoder_arguments(parser.add_argument_group("autoencoder options"))
    args = parser.parse_args(["--epochs", "3", "--resume", "--fusion", "multiply", "--score", "uncertainty"])
    assert (args.epochs, args.resume, args.fusion, args.score, args.checkpoint_dir) == (3, True, "multiply",
                                                                                       "uncertainty", None)
    assert parser.parse_args([]).resume is None          # absent: the config's value stands


@pytest.mark.mvtec
@pytest.mark.slow
def test_bottle_default_fusion_detects_defects(mvtec_bottle: Path, tmp_path: Path) -> None:
    # 2 epochs: most of what longer training gives on bottle (BENCHMARKS.md), within
    # this test's CPU budget; a 5% bank halves the coreset time.
    config = SSLConfig(epochs=2, coreset_ratio=0.05)
    run = export_and_score(export_ssl, mvtec_bottle, tmp_path / "bundle", config)
    print(f"\nbottle, ssl {config.fusion} {config.size}², {config.epochs} epochs: {run}")
    assert run.image_auroc >= 0.90
