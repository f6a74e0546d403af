"""TensorRT backend: runs an engine built on this machine by edge-build-engine, with pycuda.

Written against the TensorRT 10.x Python API (name-based I/O tensors, execute_async_v3) and
pycuda >= 2022.1, following NVIDIA's own sample patterns; CI has no GPU, so only a GPU session
runs it (tests/edge/test_engines.py). tensorrt and pycuda are imported when a backend is
opened or the platform probed, never by `import edge`. On a Jetson, TensorRT is JetPack's
system module, so nothing here asks for the pip package. scripts/check_tensorrt_api.py
type-checks this file against TensorRT's own Python bindings (10.3, JetPack 6.1's, and the
newest 10.x) without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.backends.base import BackendError
from edge.bundle import Bundle
from edge.engines import rebuild_command

if TYPE_CHECKING:
    import tensorrt  # for the type checker only; imported at run time after require_runtime()

INPUT = "image"
OUTPUTS = ("anomaly_map", "score")
INSTALL_HINT = (
    "on x86: pip install tensorrt-cu12 pycuda (TensorRT's wheels download from NVIDIA's index, "
    "pypi.nvidia.com) or install NVIDIA's TensorRT tarball; on a Jetson: TensorRT comes with JetPack "
    "(sudo apt install python3-libnvinfer), then pip install pycuda"
)


def require_runtime() -> None:
    """Import tensorrt and pycuda.driver, or raise a one-line BackendError that says how to
    install them. Callers then import them by name, which costs nothing the second time."""
    try:
        # TensorRT first: the message names it when both are missing.
        # isort: off
        import tensorrt  # noqa: F401
        import pycuda.driver  # noqa: F401
        # isort: on
    except ImportError as e:
        what = "pycuda" if (e.name or "").startswith("pycuda") else "TensorRT"
        state = "is not installed" if isinstance(e, ModuleNotFoundError) else "cannot be loaded"
        raise BackendError(f"{what} {state} ({e}); {INSTALL_HINT}") from None


@functools.cache
def trt_logger() -> tensorrt.ILogger:
    """The process's one TensorRT logger, for every builder and runtime. TensorRT keeps a single
    logger while any builder or runtime lives and ignores the one a newer runtime is given; a
    logger per runtime would be freed with the old runtime at a model reload while the new one
    still logs through it."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


@dataclass(frozen=True, slots=True)
class Platform:
    """What this machine offers TensorRT: the facts that backend choice and engine checks use."""

    trt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    problem: str | None = None  # why TensorRT cannot run here; None when it can


def probe_platform(device: int = 0) -> Platform:
    try:
        require_runtime()
    except BackendError as e:
        return Platform(problem=str(e))
    import pycuda.driver as cuda
    import tensorrt as trt

    try:
        cuda.init()
        gpu = cuda.Device(device)
        return Platform(
            trt_version=trt.__version__,
            gpu_name=gpu.name(),
            compute_capability="{}.{}".format(*gpu.compute_capability()),
        )
    except cuda.Error as e:
        return Platform(trt_version=trt.__version__, problem=f"no usable CUDA GPU {device} ({e})")


class TensorRTBackend:
    """One engine, one CUDA context, one stream; page-locked host and device buffers sized once
    for the engine's max batch, so a partial batch reuses them without reallocating."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, engine: dict, device: int = 0):
        require_runtime()
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        self.bundle, self.engine = bundle, engine
        self.version = trt.__version__
        self._ctx: Any = None
        self._stream: Any = None
        self._runtime: tensorrt.Runtime | None = None
        self._engine: tensorrt.ICudaEngine | None = None
        self._context: tensorrt.IExecutionContext | None = None
        self._host: dict[str, Any] = {}  # pycuda page-locked arrays; .base is the allocation
        self._device: dict[str, Any] = {}
        path = bundle.path / engine["file"]
        try:
            cuda.init()
            self.gpu = cuda.Device(device).name()
            self._ctx = cuda.Device(device).make_context()
            self._ctx.pop()
            with self._active():
                self._open(path)
        except Exception as e:
            self.close()
            if isinstance(e, BackendError):
                raise
            raise BackendError(f"{path}: could not open it on CUDA GPU {device} ({type(e).__name__}: {e})") from e

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        # The context is current only while in use: CUDA's context stack is per thread, and
        # whoever calls next (a model reload, the caller's own CUDA work) finds it as it was.
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def _open(self, path: Path) -> None:
        import tensorrt as trt

        self._runtime = trt.Runtime(trt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"{path}: TensorRT {self.version} could not load this engine (its log above says why); "
                f"rebuild it: {rebuild_command(self.bundle)}"
            )
        self.max_batch = self._max_batch(self._engine, path)
        h, w, b = self.bundle.height, self.bundle.width, self.max_batch
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(
                f"{path}: TensorRT {self.version} could not create an execution context for batch "
                f"{b} (its log above says why; most often too little free GPU memory); rebuild it "
                f"with a smaller --max-batch: {rebuild_command(self.bundle)} --max-batch N"
            )
        self._context.set_input_shape(INPUT, (b, h, w, 3))
        self._stream = self._cuda.Stream()
        for name in (INPUT, *OUTPUTS):
            host = self._cuda.pagelocked_empty(
                tuple(self._context.get_tensor_shape(name)), trt.nptype(self._engine.get_tensor_dtype(name))
            )
            self._host[name] = host
            self._device[name] = self._cuda.mem_alloc(host.nbytes)
            # Set once: the buffers never move, only the batch size changes.
            self._context.set_tensor_address(name, int(self._device[name]))
        shapes = {name: self._host[name].shape for name in OUTPUTS}
        if shapes != {"anomaly_map": (b, 1, h, w), "score": (b,)}:
            raise BackendError(
                f"{path}: outputs {shapes} at batch {b} do not follow the engine contract "
                f"(anomaly_map [B, 1, {h}, {w}], score [B]); re-export the bundle, then "
                f"{rebuild_command(self.bundle)}"
            )

    def _max_batch(self, engine: tensorrt.ICudaEngine, path: Path) -> int:
        """The engine's max batch, once its I/O is checked against the engine contract."""
        import tensorrt as trt

        h, w = self.bundle.height, self.bundle.width
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        if (
            names == {INPUT, *OUTPUTS}
            and engine.get_tensor_mode(INPUT) == trt.TensorIOMode.INPUT
            and engine.get_tensor_dtype(INPUT) == trt.DataType.UINT8
        ):
            max_shape = tuple(engine.get_tensor_profile_shape(INPUT, 0)[2])
            if max_shape[1:] == (h, w, 3):
                return int(max_shape[0])
        raise BackendError(
            f"{path}: its I/O tensors {sorted(names)} do not follow the engine contract "
            f"(image uint8 [B, {h}, {w}, 3] → anomaly_map, score); {rebuild_command(self.bundle)}"
        )

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chunks = [self._run(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        if len(chunks) == 1:
            return chunks[0]
        maps, scores = zip(*chunks)
        return np.concatenate(maps), np.concatenate(scores)

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, cuda, context = len(images), self._cuda, self._context
        if context is None:
            raise BackendError("the TensorRT backend was closed; load the model again")
        np.copyto(self._host[INPUT][:n], images, casting="no")
        with self._active():
            if not context.set_input_shape(INPUT, images.shape):
                raise BackendError(f"TensorRT refused input shape {images.shape}")
            cuda.memcpy_htod_async(self._device[INPUT], self._host[INPUT][:n], self._stream)
            if not context.execute_async_v3(self._stream.handle):
                raise BackendError("TensorRT could not run the engine (its log above says why)")
            for name in OUTPUTS:
                cuda.memcpy_dtoh_async(self._host[name][:n], self._device[name], self._stream)
            self._stream.synchronize()
        # Copies either way: fp16 outputs become float32, and the next batch overwrites the
        # page-locked buffers.
        return self._host["anomaly_map"][:n].astype(np.float32), self._host["score"][:n].astype(np.float32)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "version": self.version,
            "gpu": self.gpu,
            "engine": self.engine["file"],
            "precision": self.engine.get("precision"),
            "max_batch": self.max_batch,
            "model": self.bundle.name,
            "input": [self.bundle.height, self.bundle.width],
        }

    def close(self) -> None:
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            # Freed with their context current, TensorRT's objects before the memory they use.
            self._context = self._engine = self._runtime = None
            for mem in self._device.values():
                mem.free()
            for host in self._host.values():
                host.base.free()
            self._device, self._host, self._stream = {}, {}, None
        finally:
            # Detached while current: pycuda destroys a context that is not current only from
            # the thread that made it and silently leaks it from any other, and close (like
            # infer) may be called from another thread than the one that opened the backend.
            self._ctx.detach()
            self._ctx = None
