"""Every method on a GPU, in one run: PyTorch fp32 eager, fp16 eager and fp16 + CUDA graph at
several batch sizes, the bundle through ONNX Runtime, and the fp16 accuracy check of docs/methods.md
("Rules every method follows": the fp16 model must not lose more than 0.3 points of image AUROC against fp32).

    PYTHONPATH=. python bench/bench_gpu.py --data DIR [--methods patchcore,simplenet] [--epochs 2]
                                           [--batches 1,8,32] [--out bench_gpu.md]

Per method (each one of METHODS, or --methods): fit once on the good training images (on
the CPU, as export-engine does), write its bundle, then
  speed     images/s and per-batch latency p50/p99 after --warmup untimed batches. A batch is timed
            from a host uint8 batch to float32 map and score back in host memory (page-locked on a
            GPU), what a line's backend pays; CUDA events on a GPU, the wall clock otherwise.
            images/s = images / summed batch times (one batch in flight at a time).
  bundle    model.onnx through ONNX Runtime: its CUDA provider at every batch size when the
            installed onnxruntime offers one, else the CPU at --ort-cpu-batch only.
  accuracy  image and pixel AUROC on the test set: torch fp32, torch fp16 and the bundle; any loss
            against torch fp32 above 0.3 points is flagged.

Without --data the parts are synthetic (demo.synth, labelled so in the output): the speed numbers
hold, the AUROCs are not MVTec's. --device cpu times the fp32 rows only, and checks fp16's
accuracy with PyTorch's CPU fp16 arithmetic: an early warning, not a GPU's kernels.

The device machine has neither the MVTec data nor the efficientnet-lite0 weights package. Write
a resized copy of a category (every method reads at most 288 px) into an ignored folder, then
carry it with the weights file:

    python bench/bench_gpu.py --shrink ../shared/data/mvtec/bottle --data runs/gpu-bench/bottle --side 288
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import torch
import yaml
from torch import nn

from calibration.metrics import image_auroc, pixel_auroc
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.bundle import load_bundle
from export.bundle import write_bundle
from export.cli import load_config
from export.data import IMAGE_SUFFIXES, TrainingSplit, load_image, load_mask, mvtec_test_samples, split_training_data
from export.graph import AnomalyGraph
from export.sizes import size_argument, size_hw

LOSS_LIMIT_POINTS = 0.3  # docs/methods.md, "Rules every method follows"
INPUT_SETS = 4  # distinct input batches timed in turn
EVAL_BATCH = 8
ORT_CPU_ITERS = 20  # the CPU rows are context, not the point: kept short
SYNTHETIC_SIZE = 256  # px of the rendered parts without --size (demo.synth's own)
GRAPH_WARMUP = 3  # eager runs on a side stream before a CUDA graph capture
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"


# --- methods ---------------------------------------------------------------------------------

Fit = Callable[[Callable[..., Any], TrainingSplit, Any, Path], AnomalyGraph]


def fit_on_files(fit: Callable[..., Any], split: TrainingSplit, config: Any, scratch: Path) -> AnomalyGraph:
    return fit(split.train, config).graph


def fit_with_holdout(fit: Callable[..., Any], split: TrainingSplit, config: Any, scratch: Path) -> AnomalyGraph:
    # export.simplenet.export_trained's convention: the hold-out validates each epoch.
    return fit(split.train, split.holdout, config, checkpoint_dir=scratch).graph


def fit_from_scratch(fit: Callable[..., Any], split: TrainingSplit, config: Any, scratch: Path) -> AnomalyGraph:
    # export.scratch.export_scratch's convention: (graph, bundle params).
    return fit(split, config, scratch)[0]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    module: str  # imported only when the method runs
    fit: str  # its fit function; the type of its ``config`` argument is the config
    call: Fit


METHODS: dict[str, MethodSpec] = {
    "patchcore": MethodSpec("export.patchcore", "fit_patchcore", fit_on_files),
    "simplenet": MethodSpec("export.simplenet", "fit_simplenet", fit_with_holdout),
    "glass": MethodSpec("export.glass", "fit_glass", fit_with_holdout),
    "ssl": MethodSpec("export.ssl", "fit_graph", fit_from_scratch),
    "autoencoder": MethodSpec("export.autoencoder", "fit_graph", fit_from_scratch),
}


def fit_function(spec: MethodSpec) -> Callable[..., Any]:
    return getattr(importlib.import_module(spec.module), spec.fit)


def make_config(
    name: str, fit: Callable[..., Any], overrides: dict[str, Any], own: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The method's config as export-engine would build it (dataclass defaults, then
    configs/methods/<name>.yaml), with those shared ``overrides`` its config has and all of
    its ``own`` (--set); and which applied."""
    config_cls = typing.get_type_hints(fit)["config"]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(own) - fields)
    if unknown:
        raise ValueError(f"--set {name}.{unknown[0]}: {name} has no such option; it has {', '.join(sorted(fields))}")
    applied = {**{k: v for k, v in overrides.items() if k in fields}, **own}
    return config_cls(**{**load_config(config_cls, None, name), **applied}), applied


# --- models ----------------------------------------------------------------------------------


class HalfGraph(nn.Module):
    """An AnomalyGraph with its patch scorer and head in fp16 (bank, weights, map). The input
    stage stays fp32: it maps uint8 pixels through one folded scale and shift (1/255/std,
    −mean/std), which fp16 would round before they meet the pixels; its output is cast once.
    Outputs come back float32, as the engine contract and the TensorRT backend give them."""

    def __init__(self, graph: AnomalyGraph) -> None:
        super().__init__()
        graph = copy.deepcopy(graph)
        self.input = graph.input
        self.patch_scorer = graph.patch_scorer.half()
        self.head = graph.head.half()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map, score = self.head(self.patch_scorer(self.input(image).half()))
        return anomaly_map.float(), score.float()


# --- timing ----------------------------------------------------------------------------------

Step = Callable[[Any], object]


@dataclass(frozen=True, slots=True)
class Speed:
    images_per_s: float
    p50_ms: float
    p99_ms: float


def wall_clock(step: Step, x: Any) -> float:
    start = time.perf_counter()
    step(x)
    return (time.perf_counter() - start) * 1e3


def cuda_clock(step: Step, x: Any) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    step(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def measure(
    step: Step, inputs: Sequence[Any], batch: int, warmup: int, iters: int, clock: Callable[[Step, Any], float]
) -> Speed:
    for i in range(warmup):
        step(inputs[i % len(inputs)])
    times = [clock(step, inputs[i % len(inputs)]) for i in range(iters)]
    p50, p99 = np.percentile(times, [50, 99])
    return Speed(batch * iters / (sum(times) / 1e3), float(p50), float(p99))


def host_batches(images: np.ndarray, batch: int, pinned: bool) -> list[torch.Tensor]:
    """INPUT_SETS different uint8 batches of test images, in turn: one buffer timed over and
    over would measure the caches, and real parts, not zeros, set the kernels' speed."""
    batches = []
    for k in range(INPUT_SETS):
        tensor = torch.from_numpy(images[[(k * batch + j) % len(images) for j in range(batch)]])
        batches.append(tensor.pin_memory() if pinned else tensor)
    return batches


class HostOutputs:
    """Where a timed batch's outputs land; page-locked on a GPU so the copies back are DMA."""

    def __init__(self, batch: int, size: tuple[int, int], pinned: bool) -> None:
        self.map = torch.empty(batch, 1, *size, pin_memory=pinned)
        self.score = torch.empty(batch, pin_memory=pinned)

    def fetch(self, anomaly_map: torch.Tensor, score: torch.Tensor) -> None:
        self.map.copy_(anomaly_map, non_blocking=True)
        self.score.copy_(score, non_blocking=True)


def eager_step(model: nn.Module, device: torch.device, outputs: HostOutputs) -> Step:
    def step(images: torch.Tensor) -> None:
        outputs.fetch(*model(images.to(device, non_blocking=True)))

    return step


def graph_step(model: nn.Module, device: torch.device, example: torch.Tensor, outputs: HostOutputs) -> Step:
    """One CUDA graph per batch size, replayed on static buffers: new images are copied into
    the captured input, the outputs read from the captured ones."""
    static_in = example.to(device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    # Outside the capture: cuDNN picks its algorithms and the allocator fills its pool here,
    # neither of which may happen while capturing.
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_map, static_score = model(static_in)

    def step(images: torch.Tensor) -> None:
        static_in.copy_(images, non_blocking=True)
        graph.replay()
        outputs.fetch(static_map, static_score)

    return step


@dataclass(frozen=True, slots=True)
class TorchMode:
    label: str
    half: bool
    graphed: bool


TORCH_MODES = (
    TorchMode("torch fp32 eager", False, False),
    TorchMode("torch fp16 eager", True, False),
    TorchMode("torch fp16 + CUDA graph", True, True),
)


def torch_speed(
    model: nn.Module,
    mode: TorchMode,
    images: np.ndarray,
    batch: int,
    size: tuple[int, int],
    device: torch.device,
    args: argparse.Namespace,
) -> Speed:
    on_gpu = device.type == "cuda"
    inputs = host_batches(images, batch, pinned=on_gpu)
    outputs = HostOutputs(batch, size, pinned=on_gpu)
    step = graph_step(model, device, inputs[0], outputs) if mode.graphed else eager_step(model, device, outputs)
    return measure(step, inputs, batch, args.warmup, args.iters, cuda_clock if on_gpu else wall_clock)


@dataclass(frozen=True, slots=True)
class OrtPlan:
    providers: list[str]
    batches: tuple[int, ...]
    iters: int
    note: str


def ort_plan(available: Sequence[str], args: argparse.Namespace) -> OrtPlan:
    """How the bundle runs: ONNX Runtime's CUDA provider at every batch size, else briefly on
    its CPU. Not TensorRT's provider: engines are edge-build-engine's business, and a wheel
    may list that provider without TensorRT being installed."""
    if CUDA_EP in available:
        return OrtPlan(
            [CUDA_EP, CPU_EP], tuple(args.batches), args.iters, f"{CUDA_EP} offered: the bundle at every batch size"
        )
    return OrtPlan(
        [CPU_EP],
        (args.ort_cpu_batch,),
        min(args.iters, ORT_CPU_ITERS),
        f"no CUDA provider ({', '.join(available)}): the bundle on the CPU, batch {args.ort_cpu_batch}, "
        f"{min(args.iters, ORT_CPU_ITERS)} timed batches",
    )


# --- accuracy --------------------------------------------------------------------------------

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Accuracy:
    image: float
    pixel: float
    scores: np.ndarray = field(repr=False)


@dataclass(frozen=True, slots=True)
class TestSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    masks: np.ndarray  # bool [N, H, W]
    labels: np.ndarray  # bool [N], True = defective


def load_test_set(data: Path, size: tuple[int, int]) -> TestSet:
    samples = mvtec_test_samples(data)
    masks = [load_mask(s.mask, size) if s.mask else np.zeros(size, bool) for s in samples]
    return TestSet(
        np.stack([load_image(s.path, size) for s in samples]),
        np.stack(masks),
        np.array([s.label for s in samples], bool),
    )


def torch_predict(model: nn.Module, device: torch.device) -> Predict:
    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        anomaly_map, score = model(torch.from_numpy(images).to(device))
        return anomaly_map.cpu().numpy(), score.cpu().numpy()

    return predict


def evaluate(predict: Predict, test: TestSet) -> Accuracy:
    maps, scores = zip(*(predict(test.images[i : i + EVAL_BATCH]) for i in range(0, len(test.images), EVAL_BATCH)))
    scores = np.concatenate(scores)
    return Accuracy(image_auroc(scores, test.labels), pixel_auroc(np.concatenate(maps)[:, 0], test.masks), scores)


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeedRow:
    method: str
    mode: str
    batch: int
    speed: Speed | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class AccuracyRow:
    method: str
    model: str
    accuracy: Accuracy
    reference: Accuracy | None = None  # torch fp32's, for the rows compared with it
    note: str = ""


@dataclass(slots=True)
class Report:
    header: list[str]
    methods: list[list[str]] = field(default_factory=list)
    speed: list[SpeedRow] = field(default_factory=list)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def points(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def speed_cells(row: SpeedRow) -> list[str]:
    if row.speed is None:
        return [row.method, row.mode, str(row.batch), "", "", "", row.note]
    return [
        row.method,
        row.mode,
        str(row.batch),
        f"{row.speed.images_per_s:.1f}",
        f"{row.speed.p50_ms:.2f}",
        f"{row.speed.p99_ms:.2f}",
        row.note,
    ]


def loss_points(row: AccuracyRow) -> float:
    return 100 * (row.reference.image - row.accuracy.image)


def accuracy_cells(row: AccuracyRow) -> list[str]:
    if row.reference is None:
        return [row.method, row.model, points(row.accuracy.image), points(row.accuracy.pixel), "", "", row.note]
    ref, scores = row.reference.scores, row.accuracy.scores
    relative = float(np.linalg.norm(scores - ref) / np.linalg.norm(ref))
    loss = loss_points(row)
    verdict = f"**FAIL: loses > {LOSS_LIMIT_POINTS}**" if loss > LOSS_LIMIT_POINTS else "ok"
    return [
        row.method,
        row.model,
        points(row.accuracy.image),
        points(row.accuracy.pixel),
        f"{-loss:+.2f}",
        f"{relative:.1e}",
        " ".join(filter(None, [verdict, row.note])),
    ]


def render(report: Report) -> str:
    lines = [
        *report.header,
        "",
        "### Methods",
        "",
        *table(["method", "input px", "fit s", "model.onnx MB", "config overrides"], report.methods),
        "",
        "### Speed",
        "",
        *table(
            ["method", "mode", "batch", "images/s", "p50 ms", "p99 ms", "note"], [speed_cells(r) for r in report.speed]
        ),
        "",
        "### Accuracy (test set)",
        "",
        *table(
            [
                "method",
                "model",
                "image AUROC",
                "pixel AUROC",
                "Δ image vs torch fp32 (points)",
                "score rel. diff",
                "check",
            ],
            [accuracy_cells(r) for r in report.accuracy],
        ),
    ]
    if report.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"


def environment(
    device: torch.device, command: str, data_label: str, ort_note: str, args: argparse.Namespace
) -> list[str]:
    on_gpu = device.type == "cuda"
    gpu = torch.cuda.get_device_name(device) if on_gpu else f"no GPU ({platform.machine()} CPU)"
    cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if on_gpu else "CPU only"
    clock = "CUDA events; fp32 is IEEE fp32 (TF32 off), cudnn.benchmark on" if on_gpu else "wall clock"
    return [
        f"## bench_gpu: {gpu}",
        "",
        f"- when: {datetime.now(timezone.utc).isoformat(timespec='seconds')}, {os.cpu_count()} CPU cores",
        f"- command: `{command}`",
        f"- torch {torch.__version__} ({cuda}), Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__} (providers: {', '.join(ort.get_available_providers())})",
        f"- data: {data_label}",
        f"- timing: per batch, host uint8 in → float32 map and score back on the host; {args.warmup} "
        f"warm-up + {args.iters} timed batches per row, {INPUT_SETS} input batches in turn; torch rows: "
        f"{clock}; onnxruntime rows: wall clock around session.run",
        "- fp16: the graph's patch scorer and head in fp16, its uint8 → float input stage in fp32; "
        "the CUDA graph rows run the same fp16 model",
        f"- onnxruntime: {ort_note}",
    ]


# --- one method ------------------------------------------------------------------------------


def fit_method(
    name: str, spec: MethodSpec, data: Path, scratch: Path, args: argparse.Namespace, report: Report
) -> tuple[AnomalyGraph, Path]:
    """Fit the method on ``data``'s good images and write its bundle; (graph, bundle dir)."""
    fit = fit_function(spec)
    config, applied = make_config(name, fit, overrides(args), args.set.get(name, {}))
    split = split_training_data(data, config.holdout, config.seed)
    work = scratch / f"{name}-fit"
    work.mkdir()
    start = time.perf_counter()
    graph = spec.call(fit, split, config, work)
    fit_s = time.perf_counter() - start
    bundle_dir = scratch / f"{name}-bundle"
    write_bundle(
        bundle_dir,
        graph,
        method=name,
        backbone=str(getattr(config, "backbone", name)),
        split=split,
        method_params={"written_by": "bench_gpu"},
    )
    onnx_mb = sum(p.stat().st_size for p in bundle_dir.glob("model.onnx*")) / 2**20
    report.methods.append(
        [
            name,
            f"{graph.size[0]}×{graph.size[1]}",
            f"{fit_s:.1f}",
            f"{onnx_mb:.1f}",
            ", ".join(f"{k}={v}" for k, v in applied.items()) or "none",
        ]
    )
    return graph, bundle_dir


@torch.no_grad()
def bench_method(
    name: str,
    graph: AnomalyGraph,
    bundle_dir: Path,
    test: TestSet,
    device: torch.device,
    plan: OrtPlan,
    args: argparse.Namespace,
    report: Report,
) -> None:
    """Time and evaluate one fitted method, appending its rows to ``report`` as they are
    measured (a failure later keeps what was measured before it)."""
    fp32 = graph.to(device)
    models = {False: fp32, True: HalfGraph(fp32)}
    for mode in TORCH_MODES:
        for batch in args.batches:
            if mode.half and device.type != "cuda":
                # CPU fp16 kernels are emulations: their speed says nothing about a GPU's.
                report.speed.append(SpeedRow(name, mode.label, batch, None, "n/a on CPU"))
                continue
            speed = torch_speed(models[mode.half], mode, test.images, batch, graph.size, device, args)
            report.speed.append(SpeedRow(name, mode.label, batch, speed))
            progress(f"{name} {mode.label} batch {batch}: {speed.images_per_s:.1f} images/s")

    backend = OnnxRuntimeBackend(load_bundle(bundle_dir), providers=plan.providers)
    used = backend.session.get_providers()[0]
    fell_back = "asked for CUDA, ONNX Runtime fell back to its CPU" if used != plan.providers[0] else ""
    ort_label = f"bundle: onnxruntime {used.removesuffix('ExecutionProvider')}"
    for batch in plan.batches:
        inputs = [t.numpy() for t in host_batches(test.images, batch, pinned=False)]
        speed = measure(backend.infer, inputs, batch, args.warmup, plan.iters, wall_clock)
        report.speed.append(SpeedRow(name, ort_label, batch, speed, fell_back))
        progress(f"{name} {ort_label} batch {batch}: {speed.images_per_s:.1f} images/s")

    reference = evaluate(torch_predict(fp32, device), test)
    report.accuracy.append(AccuracyRow(name, "torch fp32", reference))
    half_note = "" if device.type == "cuda" else "CPU fp16 arithmetic, not a GPU's kernels"
    compared = [
        AccuracyRow(name, "torch fp16", evaluate(torch_predict(models[True], device), test), reference, half_note),
        AccuracyRow(name, ort_label, evaluate(backend.infer, test), reference, fell_back),
    ]
    report.accuracy += compared
    report.notes += [
        f"{name}: {row.model} loses {loss_points(row):.2f} points of image AUROC against torch fp32 "
        f"(limit {LOSS_LIMIT_POINTS})"
        for row in compared
        if loss_points(row) > LOSS_LIMIT_POINTS
    ]


# --- data ------------------------------------------------------------------------------------


def synthetic_data(folder: Path, n_train: int, size: int) -> Path:
    from demo.synth import make_dataset

    return make_dataset(
        folder,
        n_train=n_train,
        n_calib=0,
        n_test_good=max(1, n_train // 2),
        n_test_defect_each=max(1, n_train // 4),
        size=size,
    ).root


def describe_data(data: Path, synthetic: bool) -> str:
    test = mvtec_test_samples(data)
    n_train = len(list((data / "train" / "good").iterdir()))
    height, width = cv2.imread(str(test[0].path)).shape[:2]
    what = (
        "SYNTHETIC demo parts (demo.synth), not MVTec: speed numbers hold, AUROCs are of this set"
        if synthetic
        else f"`{data}`"
    )
    return (
        f"{what}; {n_train} good training images (minus each method's hold-out), {len(test)} test images "
        f"({sum(s.label for s in test)} defective), files {width}×{height} px"
    )


def shrink_category(src: Path, dst: Path, side: int) -> int:
    """Copy an MVTec category with every image and mask resized to ``side``² (masks by
    nearest neighbour, so they stay binary; other files as they are); returns bytes written."""
    written = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            mask = path.relative_to(src).parts[0] == "ground_truth"
            cv2.imwrite(
                str(out), cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST if mask else cv2.INTER_AREA)
            )
        else:
            shutil.copyfile(path, out)
        written += out.stat().st_size
    return written


# --- command line ----------------------------------------------------------------------------


class NoDevice(RuntimeError):
    """--device cuda where there is no CUDA device."""


def progress(message: str) -> None:
    print(f"bench_gpu: {message}", file=sys.stderr, flush=True)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive integer")
    return value


def int_list(text: str) -> tuple[int, ...]:
    values = tuple(positive(v) for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers")
    return values


def method_option(text: str) -> tuple[str, str, Any]:
    key, sep, value = text.partition("=")
    method, dot, field_name = key.partition(".")
    if not (sep and dot and method in METHODS and field_name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected METHOD.KEY=VALUE with METHOD one of {', '.join(METHODS)}")
    return method, field_name, yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="an MVTec category (e.g. a carried copy of bottle); default: synthetic demo parts",
    )
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--batches", type=int_list, default=(1, 8, 32), metavar="B,B,...")
    p.add_argument("--iters", type=positive, default=100, help="timed batches per row")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches before each row")
    p.add_argument("--epochs", type=positive, help="epochs for the methods that train (config field 'epochs')")
    p.add_argument("--coreset-ratio", type=float, help="bank fraction for the methods with a coreset")
    p.add_argument(
        "--size", type=size_argument, metavar="PX|HxW", help="input size for every method (default: each one's own)"
    )
    p.add_argument(
        "--set",
        type=method_option,
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="one method's config option (repeatable), e.g. autoencoder.score=uncertainty",
    )
    p.add_argument(
        "--backbone-weights",
        metavar="PATH",
        help="ImageNet backbone weights file (where the efficientnet-lite0 package is not installed)",
    )
    p.add_argument(
        "--synthetic",
        type=positive,
        default=60,
        metavar="N",
        help="without --data: N synthetic good training images, N/2 good and 3×N/4 defective test parts",
    )
    p.add_argument(
        "--ort-cpu-batch", type=positive, default=8, help="batch size for ONNX Runtime when it has only its CPU"
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench_gpu.md"), help="the markdown report (rewritten after each method)"
    )
    p.add_argument(
        "--shrink",
        type=Path,
        metavar="SRC",
        help="instead of benchmarking: write a resized copy of MVTec category SRC to --data, then exit",
    )
    p.add_argument("--side", type=positive, default=288, help="with --shrink: side of the copies, px")
    return p


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {
        "epochs": args.epochs,
        "coreset_ratio": args.coreset_ratio,
        "size": args.size,
        "backbone_weights": args.backbone_weights,
    }
    return {k: v for k, v in values.items() if v is not None}


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise NoDevice(
            f"--device cuda: no CUDA device here (torch {torch.__version__}: torch.cuda.is_available() "
            f"is False); run it on a GPU machine, or pass --device cpu"
        )
    device = torch.device(name)
    if device.type == "cuda":
        # fp32 rows are the accuracy reference: IEEE fp32, not the TF32 convolutions cuDNN
        # defaults to. The legacy flags: after the newer fp32_precision API has set cuDNN's,
        # torch 2.14 raises on any later read of torch.backends.cudnn.allow_tf32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return device


def run(args: argparse.Namespace, command: str, device: torch.device, scratch: Path) -> Report:
    synthetic = args.data is None
    if synthetic:
        data = synthetic_data(
            scratch / "synthetic", args.synthetic, max(size_hw(args.size)) if args.size else SYNTHETIC_SIZE
        )
    else:
        data = args.data.resolve()
    plan = ort_plan(ort.get_available_providers(), args)
    progress(f"onnxruntime: {plan.note}")
    report = Report(environment(device, command, describe_data(data, synthetic), plan.note, args))
    for name in args.methods:
        spec = METHODS[name]
        try:
            graph, bundle_dir = fit_method(name, spec, data, scratch, args, report)
            bench_method(name, graph, bundle_dir, load_test_set(data, graph.size), device, plan, args, report)
        except Exception as exc:  # on a leased GPU, one method's failure must not cost the others' rows
            traceback.print_exc()
            report.notes.append(f"{name}: FAILED, {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
        args.out.write_text(render(report))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.shrink:
        if args.data is None:
            parser.error("--shrink needs --data DST, the folder to write the copy to")
        progress(f"{args.data}: {shrink_category(args.shrink, args.data, args.side) / 2**20:.1f} MiB written")
        return 0
    own: dict[str, dict[str, Any]] = {}
    for method, key, value in args.set:
        own.setdefault(method, {})[key] = value
    args.set = own
    for method in own:  # a typo must not surface only after the other methods trained
        try:
            make_config(method, fit_function(METHODS[method]), {}, own[method])
        except ValueError as exc:
            parser.error(str(exc))
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.data is not None and not (args.data / "test").is_dir():
        parser.error(f"--data {args.data}: not an MVTec category (no test/ folder)")
    try:
        device = select_device(args.device)
    except NoDevice as exc:
        print(f"bench_gpu: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as scratch:
        report = run(args, shlex.join(["bench/bench_gpu.py", *argv]), device, Path(scratch))
    print(render(report))
    progress(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
