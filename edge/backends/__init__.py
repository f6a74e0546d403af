"""Inference backends: one small interface (load, infer a batch, describe), like Polygraphy's
runners. Runtimes are imported lazily so `import edge` needs none of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.backends.base import Backend, BackendError
from edge.backends.tensorrt import Platform, TensorRTBackend, probe_platform
from edge.bundle import Bundle
from edge.engines import StaleEngineError, require_engine

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendError", "Choice", "choose_backend", "load_backend"]

KINDS = ("auto", "onnxruntime", "tensorrt")


@dataclass(frozen=True, slots=True)
class Choice:
    kind: str  # "tensorrt" or "onnxruntime"
    reason: str
    engine: dict | None = None  # the engine record, for "tensorrt"


def choose_backend(bundle: Bundle, platform: Platform) -> Choice:
    """What `backend: auto` runs, decided from facts alone so it is testable without a GPU:
    TensorRT when it imports, a GPU is there and the bundle has an engine that fits them; else
    ONNX Runtime (which itself prefers its TensorRT, then CUDA, then CPU provider)."""
    if platform.problem:
        return Choice("onnxruntime", f"TensorRT not usable: {platform.problem}")
    try:
        engine = _engine_for(bundle, platform)
    except StaleEngineError as e:
        return Choice("onnxruntime", str(e))
    return Choice(
        "tensorrt", f"engine {engine['file']} fits {platform.gpu_name}, TensorRT {platform.trt_version}", engine
    )


def _choose(bundle: Bundle, kind: str, gpu: int) -> Choice:
    if kind == "onnxruntime":
        return Choice("onnxruntime", "configured")
    platform = probe_platform(gpu)
    if kind == "auto":
        return choose_backend(bundle, platform)
    if platform.problem:
        raise BackendError(f"backend tensorrt: {platform.problem}")
    return Choice("tensorrt", "configured", _engine_for(bundle, platform))


def _engine_for(bundle: Bundle, platform: Platform) -> dict:
    # probe_platform names the GPU and TensorRT version whenever it reports no problem.
    assert platform.gpu_name is not None and platform.trt_version is not None, platform
    return require_engine(bundle, platform.gpu_name, platform.trt_version)


def load_backend(bundle: Bundle, kind: str = "auto", gpu: int = 0, max_batch: int = 8) -> Backend:
    """Open the bundle's model on the runtime `kind` asks for, on CUDA device `gpu` where it
    runs on one, for batches of up to `max_batch`, logging the choice and why. A configured
    "tensorrt" with no fitting engine is a StaleEngineError (a BundleError)."""
    if kind not in KINDS:
        raise BackendError(f"backend {kind!r} is unknown; use one of {', '.join(KINDS)}")
    choice = _choose(bundle, kind, gpu)
    if choice.kind == "tensorrt" and choice.engine is not None:
        backend: Backend = TensorRTBackend(bundle, choice.engine, gpu)
    else:
        from edge.backends.onnxruntime import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(bundle, gpu=gpu, max_batch=max_batch)
    log.info("backend %s → %s (%s): %s", kind, choice.kind, choice.reason, backend.describe())
    return backend
