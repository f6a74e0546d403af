"""Self-supervised synthetic-anomaly CNN: stage 1 learns, stage 2 scores like PatchCore, both
fusions export to one ONNX graph that ONNX Runtime runs as PyTorch does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import yaml

from export.cli import main
from export.data import iter_batches, split_training_data
from export.graph import export_onnx
from export.patchcore import NearestNeighbourScorer
from export.scratch import load_images
from export.ssl import (
    CHANNELS,
    CLASSES,
    DOWNSAMPLING,
    STRIDES,
    LevelProduct,
    SSLConfig,
    export_ssl,
    fit_classifier,
    fit_graph,
    labelled_views,
    level_sections,
    resnet,
)
from export.wavelet import LOWPASS, WAVELETS, WaveletLowpass
from tests.export.helpers import (
    assert_onnx_parity,
    export_and_score,
    good_folder,  # noqa: F401 (a fixture)
    one_thread,  # noqa: F401
    session,
)

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


# --- wavelet down-sampling (WaveCNet) ----------------------------------------------------------


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavelet_taps_are_an_orthonormal_daubechies_lowpass(wavelet: str) -> None:
    h = np.asarray(LOWPASS[wavelet])
    n = len(h) // 2  # dbN: 2N taps, N vanishing moments; haar = db1
    assert len(h) % 2 == 0 and h.sum() == pytest.approx(np.sqrt(2), abs=1e-12)
    for shift in range(n):  # Σ h[k] h[k+2m] = δ(m): orthonormal even shifts
        assert np.dot(h[: len(h) - 2 * shift], h[2 * shift :]) == pytest.approx(float(shift == 0), abs=1e-12)
    k = np.arange(len(h))
    for p in range(n):  # the high-pass (-1)^k h[k] kills polynomials < N
        assert np.dot((-1.0) ** k * k**p, h) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavelet_lowpass_halves_and_keeps_a_constant_times_its_dc_gain(wavelet: str) -> None:
    dwt = WaveletLowpass(3, wavelet)
    with torch.no_grad():
        out = dwt(torch.full((2, 3, 16, 12), 0.7))
    assert out.shape == (2, 3, 8, 6)
    dc_gain = sum(LOWPASS[wavelet]) ** 2  # the 2-D filter h ⊗ h sums to (√2)² = 2
    inner = out if wavelet == "haar" else out[..., 1:-1, 1:-1]  # zero padding: the border falls off
    torch.testing.assert_close(inner, torch.full_like(inner, 0.7 * dc_gain))
    if wavelet != "haar":
        assert (out[..., 0, :] < 0.7 * dc_gain - 1e-3).all()


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavelet_lowpass_is_the_separable_dwt_of_each_channel(wavelet: str) -> None:
    x = np.random.default_rng(0).standard_normal((1, 2, 10, 8))
    h = np.asarray(LOWPASS[wavelet])
    p = len(h) // 2 - 1

    def rows(a: np.ndarray) -> np.ndarray:  # y[i] = Σ_k h[k] x[2i - p + k], zeros outside
        padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(p, p), (0, 0)])
        return np.stack(
            [
                np.tensordot(h, padded[..., 2 * i : 2 * i + len(h), :], axes=([0], [-2]))
                for i in range(a.shape[-2] // 2)
            ],
            axis=-2,
        )

    expected = rows(rows(x).swapaxes(-1, -2)).swapaxes(-1, -2)
    with torch.no_grad():
        got = WaveletLowpass(2, wavelet)(torch.from_numpy(x).float())
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_haar_lowpass_is_twice_average_pooling() -> None:
    x = torch.randn(2, 5, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(WaveletLowpass(5, "haar")(x), 2 * F.avg_pool2d(x, 2))
    with pytest.raises(ValueError, match="haar, db2, db3"):
        WaveletLowpass(5, "db9")
    with pytest.raises(ValueError, match="downsample 'wavelet': choose from stride, haar, db2, db3"):
        SSLConfig(downsample="wavelet")
    assert DOWNSAMPLING == ("stride", "haar", "db2", "db3")


@pytest.mark.parametrize("downsample", WAVELETS)
def test_wavelet_resnet_has_the_plain_level_shapes_and_initial_weights(downsample: str) -> None:
    torch.manual_seed(0)
    plain = resnet("stride")
    torch.manual_seed(0)
    wavelet = resnet(downsample)
    lowpass = [m for m in wavelet.modules() if isinstance(m, WaveletLowpass)]
    # Stem conv and max-pool; layer2-4's first block: its 3×3 conv and its shortcut.
    assert len(lowpass) == 8 and not any(isinstance(m, WaveletLowpass) for m in plain.modules())
    strided = [
        m
        for m in wavelet.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)) and m.stride not in (1, (1, 1))
    ]
    assert not strided
    convs = [m.weight for m in wavelet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(
        torch.equal(a, b)
        for a, b in zip(convs, [m.weight for m in plain.modules() if isinstance(m, torch.nn.Conv2d)], strict=True)
    )
    levels = tuple(STRIDES)  # every stage: layer1..layer4
    x = y = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for level, a, b in zip(
            levels, level_sections(plain.eval(), levels), level_sections(wavelet.eval(), levels), strict=True
        ):
            x, y = a(x), b(y)
            assert x.shape == y.shape == (2, CHANNELS[level], 64 // STRIDES[level], 64 // STRIDES[level]), level


@pytest.fixture(
    scope="module",
    params=[("concat", "stride"), ("multiply", "stride"), ("concat", "db2")],
    ids=["concat", "multiply", "concat-db2"],
)
def fitted(request, good_folder: Path, tmp_path_factory) -> tuple[SSLConfig, torch.nn.Module, dict, Path]:
    fusion, downsample = request.param
    config = SSLConfig(fusion=fusion, downsample=downsample, **TINY)
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
    patches = 8 * 8 * 8  # 8 training images, 8×8 layer2 cells each
    assert params["training_patches"] == patches
    if config.fusion == "concat":
        assert [b.dims[0] for b in banks] == [128 + 256] and params["bank_size"] == round(0.1 * patches)
    else:
        assert sorted(b.dims[0] for b in banks) == [128, 256] and params["bank_size"] == [round(0.1 * patches)] * 2
    assert params["epochs_run"] == 2 and not {"resume", "checkpoint_dir", "checkpoint_every"} & set(params)
    assert params["downsample"] == config.downsample


def test_wavelet_downsampling_exports_as_plain_depthwise_convs(fitted) -> None:
    config, _, _, path = fitted
    proto = onnx.load(str(path))
    lowpass = [
        node
        for node in proto.graph.node
        if node.op_type == "Conv" and next(a.i for a in node.attribute if a.name == "group") > 1
    ]
    if config.downsample == "stride":
        assert not lowpass
        return
    taps = len(LOWPASS[config.downsample])
    # layer2,layer3: the stem's conv and max-pool, layer2's and layer3's first conv and shortcut.
    assert len(lowpass) == 6
    producers = {output: node.op_type for node in proto.graph.node for output in node.output}
    for node in lowpass:  # the zero padding is the Conv's own, no Pad op (a BatchNorm after it is folded in)
        assert producers[node.input[0]] in ("Conv", "Relu")
        attributes = {a.name: list(a.ints) for a in node.attribute if a.ints}
        assert attributes["kernel_shape"] == [taps, taps] and attributes["strides"] == [2, 2]
        assert attributes["pads"] == [taps // 2 - 1] * 4


def test_pytorch_and_onnxruntime_agree(fitted, unseen_batch: np.ndarray) -> None:
    _, graph, _, path = fitted
    runtime = session(path)
    batch = unseen_batch
    for images in (batch, batch[1:2]):
        assert_onnx_parity(graph, runtime, images)
    single = runtime.run(None, {"image": batch[1:2]})[1]
    np.testing.assert_allclose(single, runtime.run(None, {"image": batch})[1][1:2], rtol=1e-5)


def test_export_engine_writes_an_ssl_bundle_and_refuses_to_overwrite_a_run(
    good_folder: Path, tmp_path: Path, capsys
) -> None:
    common = [
        "--method",
        "ssl",
        "--data",
        str(good_folder),
        "--size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--fusion",
        "multiply",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
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


def test_export_engine_records_the_wavelet_and_resumes_only_its_own_network(
    good_folder: Path, tmp_path: Path, capsys
) -> None:
    common = [
        "--method",
        "ssl",
        "--data",
        str(good_folder),
        "--size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    assert main([*common, "--downsample", "haar", "--out", str(tmp_path / "a")]) == 0
    document = yaml.safe_load((tmp_path / "a" / "bundle.yaml").read_text())
    assert document["method_params"]["downsample"] == "haar"
    capsys.readouterr()
    # The checkpoint holds the wavelet network: the plain one cannot continue it, and says so.
    assert main([*common, "--resume", "--out", str(tmp_path / "b")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "downsample 'stride'" in error and "Traceback" not in error
    assert main([*common, "--resume", "--downsample", "haar", "--out", str(tmp_path / "c")]) == 0
    resumed = yaml.safe_load((tmp_path / "c" / "bundle.yaml").read_text())["method_params"]
    assert (resumed["downsample"], resumed["best_validation"]) == ("haar", document["method_params"]["best_validation"])


def test_training_options_are_shared_with_other_trained_methods() -> None:
    from export import autoencoder, ssl
    from export.cli import _methods, build_parser
    from export.training import TRAINING_OPTIONS

    assert TRAINING_OPTIONS in ssl.OPTION_GROUPS and TRAINING_OPTIONS in autoencoder.OPTION_GROUPS
    parser = build_parser(_methods())  # registers the shared group once, for every method that reads it
    args = parser.parse_args(
        ["--method", "ssl", "--data", "d", "--out", "o", "--epochs", "3", "--resume", "--fusion", "multiply"]
    )
    assert (args.epochs, args.resume, args.fusion, args.checkpoint_dir) == (3, True, "multiply", None)
    [(flags, downsample)] = [(f, k) for f, k in ssl.OPTIONS.options if f == ("--downsample",)]
    assert tuple(downsample["choices"]) == DOWNSAMPLING and "WaveCNet" in downsample["help"]
    assert (
        parser.parse_args(["--method", "ssl", "--data", "d", "--out", "o"]).resume is None
    )  # the config's value stands


@pytest.mark.mvtec
@pytest.mark.slow
def test_bottle_default_fusion_detects_defects(mvtec_bottle: Path, tmp_path: Path) -> None:
    # 2 epochs: most of what longer training gives on bottle (BENCHMARKS.md), within
    # this test's CPU budget; a 5% bank halves the coreset time.
    config = SSLConfig(epochs=2, coreset_ratio=0.05)
    run = export_and_score(export_ssl, mvtec_bottle, tmp_path / "bundle", config)
    print(f"\nbottle, ssl {config.fusion} {config.size}², {config.epochs} epochs: {run}")
    assert run.image_auroc >= 0.90
