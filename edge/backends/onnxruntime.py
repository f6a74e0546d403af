"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers when installed."""

from __future__ import annotations

import logging
import os

import numpy as np

from edge.backends.base import BackendError
from edge.bundle import Bundle
from edge.contract import Tensor, declared_problems, output_problems

log = logging.getLogger(__name__)

# Best first. The TensorRT EP needs TensorRT's libraries and CUDA EP needs onnxruntime-gpu;
# a plain onnxruntime wheel offers only CPU, which is always last.
# ONNX Runtime's type names → numpy's, as edge/contract.py words them.
_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
}

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str]) -> list[str]:
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or ["CPUExecutionProvider"]


ORT_TRT_CACHE = "ort-trt-cache"  # in the bundle: the TensorRT provider's engines and tactic timings


def provider_options(
    providers: list[str], bundle: Bundle, gpu: int, max_batch: int, trt_cache: bool = True
) -> list[str | tuple[str, dict[str, str]]]:
    """``providers`` as InferenceSession takes them, the GPU ones on CUDA device ``gpu``. The
    TensorRT provider's defaults do not suit a line: it would build fp32, build again at every
    start and reload (minutes, inside the first batch), and again whenever a batch is larger than
    any before. So: fp16 unless the bundle advises against it, engines and timings cached in the
    bundle (``trt_cache``; built once per GPU), one profile for batches 1 to ``max_batch``."""
    out: list[str | tuple[str, dict[str, str]]] = []
    for p in providers:
        if p == "CPUExecutionProvider":
            out.append(p)
            continue
        opts = {"device_id": str(gpu)}
        if p == "TensorrtExecutionProvider":
            shape = f"x{bundle.height}x{bundle.width}x3"
            opts.update(
                trt_fp16_enable=str(bundle.fp16_caution is None),
                trt_profile_min_shapes=f"image:1{shape}",
                trt_profile_opt_shapes=f"image:{max_batch}{shape}",
                trt_profile_max_shapes=f"image:{max_batch}{shape}",
            )
            if trt_cache:
                cache = str(bundle.path / ORT_TRT_CACHE)
                opts.update(
                    trt_engine_cache_enable="True",
                    trt_engine_cache_path=cache,
                    trt_timing_cache_enable="True",
                    trt_timing_cache_path=cache,
                )
        out.append((p, opts))
    return out


def elsewhere(session_options: dict[str, dict[str, str]], gpu: int) -> bool:
    """Whether a session's GPU provider runs on another CUDA device than ``gpu``: ONNX Runtime,
    when the TensorRT provider fails to load, retries on CUDA without the options given (so on
    device 0)."""
    cuda = session_options.get("CUDAExecutionProvider")
    return cuda is not None and cuda.get("device_id", "0") != str(gpu)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        providers: list[str] | None = None,
        threads: int | None = None,
        gpu: int = 0,
        max_batch: int = 8,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError(
                "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu on a CUDA box)"
            ) from None
        self._ort = ort
        self.bundle = bundle
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("EDGE_ORT_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        self.providers = providers or choose_providers(ort.get_available_providers())
        trt_cache = "TensorrtExecutionProvider" in self.providers and self._cache_folder()

        def session(providers: list[str]):
            return ort.InferenceSession(
                str(bundle.onnx_path),
                sess_options=opts,
                providers=provider_options(providers, bundle, gpu, max_batch, trt_cache),
            )

        try:
            self.session = session(self.providers)
            if elsewhere(self.session.get_provider_options(), gpu):
                log.warning(
                    "%s: ONNX Runtime's TensorRT provider failed to load (see its message above) and it "
                    "fell back to CUDA device 0; loading it again on CUDA device %d",
                    bundle.name,
                    gpu,
                )
                self.session = session(["CUDAExecutionProvider", "CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types per failure; all mean the same here
            raise BackendError(
                f"{bundle.onnx_path}: ONNX Runtime could not load it ({e}); re-export the bundle"
            ) from None
        # A run that fails on the GPU raises (those parts are judged ERROR, the next batch tries again)
        # instead of ONNX Runtime quietly moving the model to device 0 or the CPU for good.
        self.session.disable_fallback()
        self._check_contract(min(2, max_batch))

    def _check_contract(self, batch: int) -> None:
        """The graph's declared inputs and outputs, then a probe batch of ``batch`` blank parts,
        against the engine contract and bundle.yaml (edge/contract.py)."""
        b = self.bundle

        def tensors(nodes) -> list[Tensor]:
            return [Tensor(n.name, _ORT_TYPES.get(n.type, n.type), n.shape) for n in nodes]

        problems = declared_problems(
            tensors(self.session.get_inputs()), tensors(self.session.get_outputs()), b.height, b.width
        )
        if not problems:
            try:
                problems = output_problems(
                    *self.infer(np.zeros((batch, b.height, b.width, 3), np.uint8)), batch, b.height, b.width
                )
            except Exception as e:  # ORT's own exception types; any means the graph does not run as the contract says
                problems = [f"a batch of {batch} blank parts does not run ({' '.join(str(e).split())[:300]})"]
        if problems:
            raise BackendError(
                f"{b.onnx_path}: does not follow the engine contract with bundle.yaml's {b.height}x{b.width} "
                f"input: {'; '.join(problems)}; re-export the bundle"
            )

    def _cache_folder(self) -> bool:
        try:
            (self.bundle.path / ORT_TRT_CACHE).mkdir(exist_ok=True)
            return True
        except OSError as e:
            log.warning(
                "%s: cannot keep the TensorRT provider's engines in the bundle (%s): it builds them again "
                "at every start; make the bundle folder writable",
                self.bundle.name,
                e,
            )
            return False

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run(["anomaly_map", "score"], {"image": images})
        return maps.astype(np.float32, copy=False), scores.astype(np.float32, copy=False)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "version": self._ort.__version__,
            "providers": self.session.get_providers(),
            "model": self.bundle.name,
            "input": [self.bundle.height, self.bundle.width],
        }

    def close(self) -> None:
        self.session = None
