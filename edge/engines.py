"""TensorRT engine records in a bundle, and whether one fits the machine about to run it.

A TensorRT engine only runs on the GPU model and TensorRT version it was built with, and is
only right for the model files it was built from. bundle.yaml lists every engine built for
the bundle (``engines:``); each record says what it was built for and from, so a mismatch
is caught here, at start-up, with the rebuild command, never deep inside TensorRT:

    - file: model.nvidia-h100-80gb-hbm3-trt10.8.0-fp16.engine
      gpu: NVIDIA H100 80GB HBM3          # the CUDA device name
      compute_capability: '9.0'
      tensorrt: 10.8.0                    # tensorrt.__version__
      precision: fp16
      max_batch: 32
      opt_batch: 8
      onnx_sha256: ...                    # model.onnx it was built from
      onnx_data_sha256: ...               # model.onnx.data, when the bundle has one
      sha256: ...                         # of the engine file
      bytes: 123456
      built_at: '2026-11-23T10:00:00+00:00'

Pure Python: the staleness logic is tested on machines with no GPU.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.bundle import Bundle, BundleError, sha256_file

# Record key → bundle file it fingerprints. model.onnx alone is not enough: with external
# data, a retrained bank of the same shape changes model.onnx.data but not model.onnx.
SOURCE_FILES = {"onnx_sha256": "model.onnx", "onnx_data_sha256": "model.onnx.data"}


class StaleEngineError(BundleError):
    """No engine in the bundle fits this GPU and TensorRT; the message says how to build one."""


def gpu_slug(gpu_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"


def engine_file_name(gpu_name: str, trt_version: str, precision: str) -> str:
    return f"model.{gpu_slug(gpu_name)}-trt{trt_version}-{precision}.engine"


def rebuild_command(bundle: Bundle) -> str:
    return f"edge-build-engine --bundle {bundle.path}"


def engine_record(
    bundle: Bundle,
    engine_path: Path,
    *,
    gpu: str,
    compute_capability: str,
    tensorrt: str,
    precision: str,
    max_batch: int,
    opt_batch: int,
) -> dict[str, Any]:
    """The bundle.yaml record of an engine file just built from `bundle`'s model files."""
    files = bundle.meta.get("files") or {}
    sources = {key: files[name]["sha256"] for key, name in SOURCE_FILES.items() if name in files}
    return {
        "file": engine_path.name,
        "gpu": gpu,
        "compute_capability": compute_capability,
        "tensorrt": tensorrt,
        "precision": precision,
        "max_batch": max_batch,
        "opt_batch": opt_batch,
        **sources,
        "sha256": sha256_file(engine_path),
        "bytes": engine_path.stat().st_size,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _metadata_problems(bundle: Bundle, record: dict, gpu_name: str, trt_version: str) -> list[str]:
    problems = []
    if record.get("gpu") != gpu_name:
        problems.append(f"built for {record.get('gpu')!r}, this GPU is {gpu_name!r}")
    if str(record.get("tensorrt")) != trt_version:
        problems.append(f"built with TensorRT {record.get('tensorrt')}, this machine has {trt_version}")
    files = bundle.meta.get("files") or {}
    for key, name in SOURCE_FILES.items():
        if record.get(key) != (files.get(name) or {}).get("sha256"):
            problems.append(f"built from another {name} (the model changed since)")
    return problems


def _file_problem(bundle: Bundle, record: dict) -> str | None:
    path = bundle.path / record["file"]
    if not path.is_file():
        return "listed in bundle.yaml but the file is missing"
    if path.stat().st_size != record.get("bytes") or sha256_file(path) != record.get("sha256"):
        return "content differs from its sha256 in bundle.yaml (altered or truncated)"
    return None


def find_engine(bundle: Bundle, gpu_name: str, trt_version: str) -> tuple[dict | None, list[str]]:
    """The most recently built engine that fits (GPU, TensorRT, model files, intact file), and
    one reason for every engine rejected on the way."""
    reasons = []
    for i, record in reversed(list(enumerate(bundle.meta.get("engines") or []))):
        if not isinstance(record, dict) or not record.get("file"):
            reasons.append(f"engines[{i}] in bundle.yaml: not an engine record (no file)")
            continue
        # The file is hashed only for an engine that fits otherwise: engines are large.
        problems = _metadata_problems(bundle, record, gpu_name, trt_version) or [
            p for p in [_file_problem(bundle, record)] if p
        ]
        if not problems:
            return record, reasons
        reasons.append(f"{record['file']}: {', '.join(problems)}")
    return None, reasons


def require_engine(bundle: Bundle, gpu_name: str, trt_version: str) -> dict:
    """find_engine, or a StaleEngineError that lists every rejected engine and the fix."""
    record, reasons = find_engine(bundle, gpu_name, trt_version)
    if record is not None:
        return record
    why = "; ".join(reasons) if reasons else "bundle.yaml lists no engine"
    raise StaleEngineError(
        f"{bundle.path}: no TensorRT engine for {gpu_name} with TensorRT {trt_version} ({why}); "
        f"build one on this machine: {rebuild_command(bundle)}"
    )
