"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers when installed."""
from __future__ import annotations

import logging
import os

import numpy as np

from edge.backends.base import BackendError
from edge.bundle import Bundle

log = logging.getLogger(__name__)

# Best first. The TensorRT EP needs TensorRT's libraries and CUDA EP needs onnxruntime-gpu;
# a plain onnxruntime wheel offers only CPU, which is always last.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str]) -> list[str]:
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or ["CPUExecutionProvider"]


def on_gpu(providers: list[str], gpu: int) -> list[str | tuple[str, dict[str, str]]]:
    """``providers`` as InferenceSession takes them, the GPU ones on CUDA device ``gpu``."""
    return [p if p == "CPUExecutionProvider" else (p, {"device_id": str(gpu)}) for p in providers]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, threads: int | None = None,
                 gpu: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed: pip install onnxruntime "
                               "(or onnxruntime-gpu on a CUDA box)") from None
        self._ort = ort
        self.bundle = bundle
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("EDGE_ORT_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        self.providers = providers or choose_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(bundle.onnx_path), sess_options=opts,
                                                providers=on_gpu(self.providers, gpu))
        except Exception as e:  # ORT raises its own exception types per failure; all mean the same here
            raise BackendError(f"{bundle.onnx_path}: ONNX Runtime could not load it ({e}); re-export the bundle") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["image"] or not {"anomaly_map", "score"} <= set(outputs):
            raise BackendError(f"{bundle.onnx_path}: inputs {inputs} / outputs {outputs} do not follow the "
                               "engine contract (image → anomaly_map, score); re-export the bundle")

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run(["anomaly_map", "score"], {"image": images})
        return maps.astype(np.float32, copy=False), scores.astype(np.float32, copy=False)

    def describe(self) -> dict:
        return {"backend": self.name, "version": self._ort.__version__,
                "providers": self.session.get_providers(), "model": self.bundle.name,
                "input": [self.bundle.height, self.bundle.width]}

    def close(self) -> None:
        self.session = None
