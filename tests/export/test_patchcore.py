from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from export.backbones import load_backbone
from export.data import list_images, load_image, mvtec_test_samples
from export.graph import AnomalyGraph, AnomalyHead, export_onnx
from export.patchcore import (
    NearestNeighbourScorer,
    PatchCoreConfig,
    export_patchcore,
    feature_extractor,
    fit_patchcore,
    greedy_coreset,
    neighbour_table,
    random_coreset,
    scoring_graph,
)
from tests.export.helpers import PARITY, assert_onnx_parity, export_and_score, relative_error, session

# --- coreset --------------------------------------------------------------------------------


def test_greedy_picks_the_far_point_first() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(0, 0.01, size=(500, 32)).astype(np.float32)
    features[123] += 10.0
    for seed in range(5):
        first, second = greedy_coreset(features, 2, projection_dim=8, seed=seed)
        assert second == 123 or first == 123


def test_coreset_size_uniqueness_and_seed() -> None:
    features = np.random.default_rng(1).normal(size=(3000, 64)).astype(np.float32)
    chosen = greedy_coreset(features, 60, projection_dim=16, seed=0)
    assert len(chosen) == 60 == len(set(chosen.tolist()))
    assert np.array_equal(chosen, greedy_coreset(features, 60, projection_dim=16, seed=0))
    assert not np.array_equal(chosen, greedy_coreset(features, 60, projection_dim=16, seed=1))

    drawn = random_coreset(3000, 60, seed=0)
    assert len(drawn) == 60 == len(set(drawn.tolist())) and drawn.max() < 3000
    assert np.array_equal(drawn, random_coreset(3000, 60, seed=0))


def covering_radius(features: np.ndarray, chosen: np.ndarray) -> float:
    return float(torch.cdist(torch.from_numpy(features), torch.from_numpy(features[chosen])).min(1).values.max())


def test_greedy_covers_clustered_data_better_than_random() -> None:
    # 20 clusters of very unequal size: random sampling misses the small ones, k-center
    # puts a point in each; that is why PatchCore keeps rare normal patterns.
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 5, size=(20, 16))
    sizes = [1000] + [10] * 19
    features = np.concatenate([c + rng.normal(0, 0.1, size=(n, 16)) for c, n in zip(centres, sizes)]).astype(np.float32)
    greedy = covering_radius(features, greedy_coreset(features, 40, projection_dim=128, seed=0))
    uniform = covering_radius(features, random_coreset(len(features), 40, seed=0))
    assert greedy < 1.0 < uniform


# --- graph pieces ---------------------------------------------------------------------------


def test_chunked_nearest_neighbour_equals_brute_force() -> None:
    torch.manual_seed(0)
    bank = torch.randn(1000, 24) * 3 + 5  # off-centre, like real features
    features = torch.randn(2, 24, 5, 6) * 3 + 5
    features[0, :, 2, 3] = bank[17]  # an exact match must score ~0
    scorer = NearestNeighbourScorer(bank, chunk_size=128)  # 8 chunks, the last one partial
    assert scorer.n_chunks == 8
    with torch.no_grad():
        got = scorer(features)
    flat = features.flatten(2).transpose(1, 2).reshape(-1, 24)
    expected = torch.cdist(flat.double(), bank.double()).min(dim=1).values.reshape(2, 5, 6)
    assert got.shape == (2, 1, 5, 6)
    torch.testing.assert_close(got[:, 0].double(), expected, rtol=1e-4, atol=2e-3)
    assert got[0, 0, 2, 3] < 2e-3


# --- image score reweighted by neighbourhood density (eq. 7) ---------------------------------


def eq7_weights(bank: np.ndarray, features: np.ndarray, b: int) -> np.ndarray:
    """The paper's eq. 7 factor per image, by brute force in float64 (no chunks, no
    expansion, no centring): ``features [B, P, D]``, ``bank [M, D]``."""
    distances = np.linalg.norm(features[:, :, None, :] - bank[None, None], axis=-1)  # [B, P, M]
    weights = []
    for image in distances:
        to_bank = image[image.min(axis=1).argmax()]  # m_test,*: the patch with the largest score
        star = to_bank.argmin()  # m*
        support = np.argsort(np.linalg.norm(bank - bank[star], axis=1), kind="stable")[:b]  # N_b(m*)
        assert support[0] == star
        weights.append(1.0 - np.exp(to_bank[star]) / np.exp(to_bank[support]).sum())
    return np.array(weights)


def test_neighbour_table_is_each_row_then_its_nearest_rows() -> None:
    bank = torch.randn(300, 12, generator=torch.Generator().manual_seed(0)) * 2 + 4
    bank[7] = bank[250]  # a duplicate must not displace row 7 itself
    table = neighbour_table(bank, 5, block_bytes=300 * 4 * 64)  # blocks of 64 rows: the last one partial
    assert table.shape == (300, 5) and table.dtype == torch.int64
    assert torch.equal(table[:, 0], torch.arange(300)) and table[7, 1] == 250 and table[250, 1] == 7
    exact = torch.cdist(bank.double(), bank.double())
    exact.fill_diagonal_(-1.0)
    expected = exact.topk(5, dim=1, largest=False).indices
    assert torch.equal(table[:, 1:], expected[:, 1:])


def conv_graph(bank: torch.Tensor, chunk_size: int, reweight: int) -> AnomalyGraph:
    """A small PatchCore graph: a seeded strided conv stands in for the backbone (64² → 8×8 patches)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, bank.shape[1], 8, stride=8)
    scorer = nn.Sequential(conv, NearestNeighbourScorer(bank, chunk_size, reweight))
    return AnomalyGraph(scorer, (0.5,) * 3, (0.5,) * 3, (64, 64)).eval()


def small_bank_and_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(bank [210, 8] of the conv's own patch features, slightly jittered; test images [3, 64, 64, 3])."""
    g = torch.Generator().manual_seed(2)
    train = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8, generator=g)
    graph = conv_graph(torch.zeros(2, 8), 1024, 0)
    with torch.no_grad():
        features = graph.patch_scorer[0](graph.input(train)).flatten(2).transpose(1, 2).reshape(-1, 8)
    bank = features[torch.randperm(len(features), generator=g)[:210]]
    bank = bank + 0.05 * torch.randn(bank.shape, generator=g)
    return bank, torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=g)


# 210 bank rows: one chunk, 4 chunks and 5 chunks with a short last one, 6 with b = 2.
@pytest.mark.parametrize(("chunk_size", "b"), [(1024, 9), (64, 9), (50, 9), (37, 2)])
def test_reweighted_score_is_eq7_times_the_map_maximum(chunk_size: int, b: int) -> None:
    bank, images = small_bank_and_images()
    graph = conv_graph(bank, chunk_size, b)
    plain = conv_graph(bank, chunk_size, 0)
    with torch.no_grad():
        anomaly_map, score = graph(images)
        plain_map, plain_score = plain(images)
        features = graph.patch_scorer[0](graph.input(images)).flatten(2).transpose(1, 2)
    expected = eq7_weights(bank.double().numpy(), features.double().numpy(), b)
    assert torch.equal(anomaly_map, plain_map)  # the map is not reweighted
    np.testing.assert_allclose(score.numpy(), expected * plain_score.numpy(), rtol=2e-5)
    # Not a constant factor: images differ, and 1 − 1/b ≤ weight < 1 since m* is the nearest.
    assert np.ptp(expected) > 1e-3 and np.all((1 - 1 / b <= expected) & (expected < 1))


def test_reweight_0_scores_as_before_and_bad_values_are_refused() -> None:
    bank, images = small_bank_and_images()
    scorer = NearestNeighbourScorer(bank, 64)
    assert PatchCoreConfig().reweight_neighbours == 0 and not hasattr(scorer, "support")
    graph = conv_graph(bank, 64, 0)
    with torch.no_grad():
        patch_scores = graph.patch_scorer(graph.input(images))
        anomaly_map, score = graph(images)
    assert isinstance(patch_scores, torch.Tensor)  # no weight: the head takes the plain max
    assert torch.equal(score, anomaly_map.amax(dim=(1, 2, 3)))
    for bad in (1, -1):
        with pytest.raises(ValueError, match="reweight_neighbours"):
            PatchCoreConfig(reweight_neighbours=bad)
    with pytest.raises(ValueError, match="only 210 rows"):
        NearestNeighbourScorer(bank, 64, 211)


def test_head_is_upsample_then_gaussian_sigma_4() -> None:
    from scipy.ndimage import gaussian_filter

    head = AnomalyHead((64, 64), sigma=4.0)
    patch_scores = torch.zeros(1, 1, 64, 64)
    patch_scores[0, 0, 30, 20] = 1.0
    patch_scores[0, 0, 2, 60] = 0.5  # near the border: reflect padding matters
    with torch.no_grad():
        anomaly_map, score = head(patch_scores)
    # torch's "reflect" (no edge repeat) is scipy's "mirror"; radius 4σ is scipy's truncate=4.
    expected = gaussian_filter(patch_scores[0, 0].numpy().astype(np.float64), sigma=4.0, mode="mirror")
    np.testing.assert_allclose(anomaly_map[0, 0].numpy(), expected, atol=1e-7)
    assert score.shape == (1,) and score[0] == anomaly_map.max()

    constant = torch.full((2, 1, 8, 8), 3.0)
    with torch.no_grad():
        up, top = AnomalyHead((64, 64))(constant)
    assert (
        up.shape == (2, 1, 64, 64) and torch.allclose(up, torch.tensor(3.0)) and torch.allclose(top, torch.tensor(3.0))
    )


# --- exported model: contract and parity ----------------------------------------------------


@pytest.fixture(scope="module")
def parity_images(optional_mvtec_bottle, write_images, tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    """(training files, test batch uint8 [3, 256, 256, 3]): bottle images when the data is
    there, else synthetic textures."""
    if optional_mvtec_bottle is None:
        files = write_images(tmp_path_factory.mktemp("synthetic"), 9, size=(256, 256))
        train, test = files[:6], files[6:]
    else:
        train = list_images(optional_mvtec_bottle / "train" / "good")[:6]
        test = [s.path for s in mvtec_test_samples(optional_mvtec_bottle) if s.defect in ("good", "broken_large")][
            ::13
        ][:3]
    return train, np.stack([load_image(p, (256, 256)) for p in test])


@pytest.fixture(scope="module")
def lite0_model(parity_images, tmp_path_factory):
    train, _ = parity_images
    model = fit_patchcore(train, PatchCoreConfig(coreset_ratio=0.1, batch_size=3))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    written = export_onnx(model.graph, path, 256, 256)
    return model, path, written


def test_onnx_graph_follows_the_engine_contract(lite0_model) -> None:
    model, path, written = lite0_model
    assert written == [path]  # small model: no external data
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    [image] = proto.graph.input  # the bank is a constant, not an input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert (image.name, image.type.tensor_type.elem_type, dims) == ("image", onnx.TensorProto.UINT8, ["B", 256, 256, 3])
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert outputs == {"anomaly_map": ["B", 1, 256, 256], "score": ["B"]}
    # TensorRT takes a uint8 input only when it feeds a Cast directly (not a Transpose first).
    assert [n.op_type for n in proto.graph.node if "image" in n.input] == ["Cast"]
    bank_rows = sum(i.dims[1] for i in proto.graph.initializer if "bank_t" in i.name)
    assert bank_rows == model.bank_size and model.feature_dim == 152
    assert model.bank_size == round(0.1 * 6 * 32 * 32)


def test_pytorch_and_onnxruntime_agree_for_batch_1_and_3(lite0_model, parity_images) -> None:
    model, path, _ = lite0_model
    _, batch = parity_images
    runtime = session(path)
    for images in (batch, batch[1:2]):
        map_ort, score_ort = assert_onnx_parity(model.graph, runtime, images)
        np.testing.assert_allclose(score_ort, map_ort.max(axis=(1, 2, 3)), rtol=1e-6)
    # Batching must not mix images: image 1 alone scores as it did inside the batch of 3.
    single = runtime.run(None, {"image": batch[1:2]})[1]
    np.testing.assert_allclose(single, runtime.run(None, {"image": batch})[1][1:2], rtol=1e-5)


@pytest.fixture(scope="module")
def reweighted_lite0(parity_images, tmp_path_factory):
    """The Lite0 graph with eq. 7 reweighting (b = 9), bank in 3 chunks, the last one short."""
    train, _ = parity_images
    config = PatchCoreConfig(coreset="random", coreset_ratio=0.1, chunk_size=256, batch_size=3, reweight_neighbours=9)
    model = fit_patchcore(train, config)
    path = tmp_path_factory.mktemp("onnx-reweighted") / "model.onnx"
    export_onnx(model.graph, path, 256, 256)
    return model, path


def test_reweighted_graph_agrees_with_onnxruntime_for_batch_1_and_3(reweighted_lite0, parity_images) -> None:
    model, path = reweighted_lite0
    _, batch = parity_images
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"ArgMax", "ArgMin", "GatherElements", "Softmax"} <= ops
    [support] = [i for i in proto.graph.initializer if i.name.endswith("support")]
    assert list(support.dims) == [model.bank_size, 9]
    runtime = session(path)
    for images in (batch, batch[1:2]):
        map_ort, score_ort = assert_onnx_parity(model.graph, runtime, images)
        weight = score_ort / map_ort.max(axis=(1, 2, 3))
        assert np.all((weight >= 1 - 1 / 9 - 1e-6) & (weight < 1))
    single = runtime.run(None, {"image": batch[1:2]})[1]
    np.testing.assert_allclose(single, runtime.run(None, {"image": batch})[1][1:2], rtol=1e-5)


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (this pytest
# process, which holds the torch model), VmHWM belongs to the new process image alone.
RSS_PROBE = """
import json, sys, time
import numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
t = time.perf_counter()
anomaly_map, score = s.run(None, {"image": x})
np.save(sys.argv[3], score)
status = open("/proc/self/status").read()
peak_kb = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps({"peak_rss_mb": peak_kb / 1024, "run_s": time.perf_counter() - t}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from Linux's /proc")
def test_bank_of_20000_by_1536_exports_and_runs_in_bounded_memory(tmp_path: Path, wide_resnet_weights: Path) -> None:
    # A naive broadcast distance would need B·P·M·C floats = 2·1024·20000·1536·4 B ≈ 250 GB.
    config = PatchCoreConfig(backbone="wide_resnet50_2", pretrain_dim=1536, target_dim=1536)
    extractor = feature_extractor(load_backbone("wide_resnet50_2", wide_resnet_weights), config)
    bank = torch.randn(20000, 1536, generator=torch.Generator().manual_seed(0))
    graph = scoring_graph(extractor, bank, config)
    written = export_onnx(graph, tmp_path / "model.onnx", 256, 256)
    assert [p.name for p in written] == ["model.onnx", "model.onnx.data"]
    assert written[0].stat().st_size < 5 * 2**20 < 20000 * 1536 * 4 < written[1].stat().st_size

    images = np.random.default_rng(0).integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(written[0]), str(tmp_path / "x.npy"), str(tmp_path / "score.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    print(
        f"\n20000×1536 bank, batch 2 at 256²: peak RSS {measured['peak_rss_mb']:.0f} MB, "
        f"ORT run {measured['run_s']:.1f} s, files {[p.stat().st_size >> 20 for p in written]} MB"
    )
    assert measured["peak_rss_mb"] < 1500
    with torch.no_grad():
        _, score_torch = graph(torch.from_numpy(images))
    assert relative_error(score_torch.numpy(), np.load(tmp_path / "score.npy")) < PARITY


# --- end to end on MVTec bottle -------------------------------------------------------------


@pytest.mark.mvtec
@pytest.mark.slow
def test_bottle_exported_model_detects_defects(mvtec_bottle: Path, tmp_path: Path) -> None:
    # 1% coreset: the measured 100.0 / 98.3 of docs/methods.md, and 10× less coreset time than 10%.
    config = PatchCoreConfig(coreset_ratio=0.01)
    run = export_and_score(export_patchcore, mvtec_bottle, tmp_path / "bundle", config)
    print(f"\nbottle, efficientnet_lite0 {config.size}², greedy 1%: {run}")
    assert run.image_auroc >= 0.98
    assert run.pixel_auroc >= 0.95
