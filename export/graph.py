"""What every exported graph shares, whatever the method (docs/bundle-format.md, "Engine
contract"): ``image uint8 [B, H, W, 3]`` RGB in; ``anomaly_map float [B, 1, H, W]`` and
``score float [B]`` out; the graph scales and normalises the image itself so the line does
no per-pixel float work on its CPU.

A method supplies only the patch scorer: normalised ``float [B, 3, H, W]`` → patch scores
``float [B, 1, h, w]``, higher = more anomalous; or ``(patch scores, weight float [B])``
when its image score is the map's maximum times a per-image factor (PatchCore's
neighbourhood-density reweighting), which leaves the map as it is.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .sizes import SizeSpec, check_size_spec, parse_size

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
OPSET = 17
PIXEL_SCALE = 1.0 / 255.0
SMOOTHING_SIGMA = 4.0
EXTERNAL_DATA_BYTES = 100 * 2**20  # above this, weights go to model.onnx.data


class ImageInput(nn.Module):
    """``uint8 [B, H, W, 3]`` RGB → ``float [B, 3, H, W]``, ``(x/255 − mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
        # One multiply-add per pixel: the same affine map, folded.
        self.register_buffer("scale", PIXEL_SCALE / std_t)
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT accepts a uint8 network input only when it feeds a Cast directly.
        return image.float().permute(0, 3, 1, 2) * self.scale + self.shift


def smoothing_radius(sigma: float) -> int:
    """``round(4σ)``, scipy.ndimage's default truncation of a Gaussian."""
    return int(4.0 * sigma + 0.5)


def check_size(size: SizeSpec, multiple: int = 1, why: str = "") -> None:
    """Refuse a model input (``PX``, ``HxW`` or ``auto``, see export.sizes) whose sides are
    not multiples of ``multiple`` (``why``: what needs it), or that the anomaly map's
    smoothing does not fit (its reflect padding needs more pixels than the kernel's radius):
    in the config, not after hours of training."""
    radius = smoothing_radius(SMOOTHING_SIGMA)
    parsed = parse_size(size)
    if parsed != "auto" and min(parsed) <= radius:
        raise ValueError(
            f"size {size}: each side must be ≥ {radius + 1} px, or the anomaly map's smoothing "
            f"(σ {SMOOTHING_SIGMA:g}, radius {radius} px) does not fit"
        )
    check_size_spec(size, multiple, why)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``smoothing_radius(sigma)``."""
    radius = smoothing_radius(sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


class AnomalyHead(nn.Module):
    """Patch scores ``[B, 1, h, w]`` → (``anomaly_map [B, 1, H, W]``, ``score [B]``):
    bilinear upsample, separable Gaussian smoothing with reflect padding (borders are not
    darkened by zeros), score = the map's maximum (times the scorer's weight, when it gives
    one: taken here rather than in AnomalyGraph so that whatever runs scorer → head, such as
    bench_gpu's fp16 copy, scores alike)."""

    def __init__(self, size: tuple[int, int], sigma: float = SMOOTHING_SIGMA) -> None:
        super().__init__()
        self.size = size
        kernel = gaussian_kernel(sigma)
        self.radius = kernel.numel() // 2
        if self.radius >= min(size):
            raise ValueError(f"smoothing radius {self.radius} px does not fit a {size} image")
        self.register_buffer("kernel_x", kernel.reshape(1, 1, 1, -1))
        self.register_buffer("kernel_y", kernel.reshape(1, 1, -1, 1))

    def forward(self, scored: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        patch_scores, weight = scored if isinstance(scored, tuple) else (scored, None)
        upsampled = F.interpolate(patch_scores, size=self.size, mode="bilinear", align_corners=False)
        r = self.radius
        padded = F.pad(upsampled, (r, r, r, r), mode="reflect")
        anomaly_map = F.conv2d(F.conv2d(padded, self.kernel_x), self.kernel_y)
        score = anomaly_map.amax(dim=(1, 2, 3))
        return anomaly_map, score if weight is None else score * weight


class AnomalyGraph(nn.Module):
    """The whole exported graph: ImageInput → the method's patch scorer → AnomalyHead."""

    def __init__(
        self,
        patch_scorer: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        size: tuple[int, int],
        sigma: float = SMOOTHING_SIGMA,
    ) -> None:
        super().__init__()
        self.input = ImageInput(mean, std)
        self.patch_scorer = patch_scorer
        self.head = AnomalyHead(size, sigma)
        # Kept as plain values so the bundle can describe what the graph does.
        self.size, self.mean, self.std = tuple(size), tuple(mean), tuple(std)
        # Why fp16 kernels would cost this graph accuracy, where its method measured that they
        # do; None: fp16-safe. Becomes bundle.yaml's precision, which edge-build-engine follows.
        self.fp16_caution: str | None = None

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.patch_scorer(self.input(image)))


def tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _declare_output_shapes(model: onnx.ModelProto, height: int, width: int) -> None:
    # The tracer's shape inference loses the static H, W behind Resize (and can even reuse
    # the batch name for another axis); the contract's shapes are written out instead, and
    # check_model(full_check=True) then verifies them against the graph.
    shapes = {OUTPUT_NAMES[0]: ["B", 1, height, width], OUTPUT_NAMES[1]: ["B"]}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[output.name]:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


def export_onnx(module: nn.Module, path: Path, height: int, width: int, opset: int = OPSET) -> list[Path]:
    """Write ``module`` (image → anomaly_map, score) as ONNX at ``path`` with a dynamic batch
    axis, check it, and return the files written (``model.onnx`` and, for a model over
    ~100 MB, its external data ``model.onnx.data``)."""
    import onnx

    if opset < OPSET:
        raise ValueError(f"opset {opset}: the engine contract needs ≥ {OPSET}")
    path = Path(path)
    module = module.eval()
    example = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8)
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False), on purpose: torch 2.14's default dynamo
    # exporter cannot write opset 17 (it emits 18; its down-conversion fails on Pad), the
    # newest that TensorRT 8.x (JetPack 5) parses, and it took 5× longer (11.5 s vs 2.3 s)
    # on the same PatchCore graph. Tracing this graph (frozen backbone, constant weights, a
    # Python loop over bank chunks) yields plain Conv/MatMul/ReduceMin nodes with only the
    # batch axis symbolic; parity with PyTorch is tested. It is deprecated upstream and
    # serialises through one protobuf, so a model over 2 GB would need dynamo=True.
    with torch.no_grad(), warnings.catch_warnings():
        # Known and harmless: F.pad's pads become a small constant subgraph (a reversed
        # Slice) that ONNX Runtime and TensorRT fold when they load the model.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "B"}, **{name: {0: "B"} for name in OUTPUT_NAMES}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    _declare_output_shapes(model, height, width)
    data_path = path.with_name(path.name + ".data")
    external = tensor_bytes(module) > EXTERNAL_DATA_BYTES
    data_path.unlink(missing_ok=True)
    onnx.save_model(
        model,
        path,
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=data_path.name,
        size_threshold=1024,
    )
    onnx.checker.check_model(str(path), full_check=True)
    return [path, data_path] if external else [path]
