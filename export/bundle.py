"""Write a bundle directory: ``model.onnx`` (+ ``model.onnx.data``) and ``bundle.yaml``,
the one artifact that crosses from training to the line (docs/bundle-format.md).

``bundle.yaml`` is a contract read by the line side: key names and meanings change only
with a ``schema_version`` bump.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import edge

# The line's reader holds the bundle contract (schema version, file name, hashing): the writer
# uses the same definitions so the two cannot drift. edge.bundle needs only yaml and hashlib.
from edge.bundle import BUNDLE_FILE, SCHEMA_VERSION, sha256_file

from .data import DataError, TrainingSplit, load_image
from .graph import INPUT_NAME, OUTPUT_NAMES, PIXEL_SCALE, AnomalyGraph, export_onnx

MODEL_ONNX = "model.onnx"
PACKAGES = ("torch", "torchvision", "timm", "onnx")
CHECK_IMAGES = 4  # real images the exported graph is checked on
# Relative to each output's largest value. Measured: scores ~1e-7; maps ~1e-6, but up to 1.0e-3
# for PatchCore on near-identical parts, where most of the map is the sqrt of a squared distance
# that cancels to ~0 and amplifies either runtime's rounding (tests/export/test_export_check.py).
# A wrong export is off by 1e-1 and more.
MAP_TOLERANCE = 1e-2
SCORE_TOLERANCE = 1e-3


class ExportCheckError(RuntimeError):
    """The exported model.onnx does not compute what the PyTorch model does."""


def check_export(graph: AnomalyGraph, onnx_path: Path, images: np.ndarray) -> dict[str, Any]:
    """Run ``images`` (uint8 [N, H, W, 3]) through the written ``onnx_path`` with ONNX Runtime
    on the CPU and through ``graph`` in PyTorch; their largest relative differences (map, score),
    or ExportCheckError above MAP_TOLERANCE / SCORE_TOLERANCE: a bundle that is not the model it was trained as
    must not reach the line."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_map, ort_score = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    with torch.no_grad():
        torch_map, torch_score = (t.numpy() for t in graph.eval()(torch.from_numpy(images)))
    diffs = {
        name: float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))
        for name, a, b in (("map", ort_map, torch_map), ("score", ort_score, torch_score))
    }
    allowed = {"map": MAP_TOLERANCE, "score": SCORE_TOLERANCE}
    worst = max(diffs, key=lambda name: diffs[name] / allowed[name])
    if diffs[worst] > allowed[worst]:
        raise ExportCheckError(
            f"{onnx_path}: ONNX Runtime's {worst} differs from PyTorch's by {diffs[worst]:.1e} "
            f"(relative; allowed {allowed[worst]:g}) on {len(images)} training images: the "
            "export is wrong; please report it with this bundle.yaml's versions"
        )
    return {
        "images": len(images),
        "onnxruntime": ort.__version__,
        **{f"{name}_max_rel_diff": float(f"{d:.2e}") for name, d in diffs.items()},
    }


def file_record(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["edge_inspect"] = edge.__version__
    return versions


def describe_graph(graph: AnomalyGraph) -> dict[str, Any]:
    """The ``input``, ``preprocessing_in_graph``, ``outputs`` and ``precision`` sections: what
    the line must feed the model, what it gets back, and whether an fp16 engine keeps its accuracy."""
    height, width = graph.size
    precision = {"fp16": True} if graph.fp16_caution is None else {"fp16": False, "why": graph.fp16_caution}
    return {
        "input": {
            "name": INPUT_NAME,
            "height": height,
            "width": width,
            "channels": 3,
            "dtype": "uint8",
            "layout": "NHWC",
            "colour": "RGB",
        },
        "preprocessing_in_graph": {"scale": PIXEL_SCALE, "mean": list(graph.mean), "std": list(graph.std)},
        "outputs": {
            OUTPUT_NAMES[0]: {"shape": ["B", 1, height, width], "dtype": "float32"},
            OUTPUT_NAMES[1]: {"shape": ["B"], "dtype": "float32"},
        },
        "precision": precision,
    }


def check_out_dir(out: Path) -> None:
    """Refuse a bundle directory that holds anything: a calibration.yaml or engine from an
    older model beside a new model.onnx would judge parts with the wrong threshold. Call it
    before training too, so a mistake costs seconds, not a training run."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(
            f"--out {out}: already exists and is not an empty directory; "
            f"choose a new bundle directory or remove the old one"
        )


def write_bundle(
    out: Path,
    graph: AnomalyGraph,
    *,
    method: str,
    backbone: str,
    split: TrainingSplit,
    method_params: dict[str, Any],
    reference: bool = False,
) -> Path:
    """Export ``graph`` to ``out/model.onnx`` and describe it in ``out/bundle.yaml``; with
    ``reference``, also score the labelled test set of ``split.root`` in PyTorch
    (``out/reference.npz``, see export/reference.py). ``out`` must not exist or be empty.
    Returns the path of bundle.yaml."""
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    height, width = graph.size
    files = export_onnx(graph, out / MODEL_ONNX, height, width)
    checked = check_export(
        graph,
        out / MODEL_ONNX,
        np.stack([load_image(f, (height, width)) for f in (split.holdout + split.train)[:CHECK_IMAGES]]),
    )
    document = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "backbone": backbone,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **describe_graph(graph),
        "files": {f.name: file_record(f) for f in files},
        "training": {
            "data": str(split.root),
            "count": split.fingerprint.count,
            "files_sha256": split.fingerprint.sha256,
            "holdout": [str(f) for f in split.holdout],
        },
        "method_params": method_params,
        "export_check": checked,
        "versions": package_versions(),
        "engines": [],
    }
    # Written last: a bundle.yaml present means the model files beside it are complete.
    path = out / BUNDLE_FILE
    path.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100))
    if reference:
        from .reference import write_reference  # pulls in the evaluation code: only when asked

        write_reference(out, graph, split.root)
    return path
