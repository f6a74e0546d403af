"""A bundle's PyTorch reference outputs (``reference.npz``): what the trained model, fp32 in
PyTorch on the training machine, gave for each image of a labelled test set.

docs/methods.md asks for the metrics of the deployed artifact *and* of the PyTorch model, and caps
the deployed model's image-AUROC loss at 0.3 points. The reference is written at export time
(``export-engine --reference``, the only place the PyTorch model exists) and read here without
torch, so ``edge-eval`` can measure the deployed ONNX model or fp16 engine on the line's own box
and backend against it. The file is this module's contract: the writer (export/) and the reader
(edge-eval) both go through it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.evaluate import EvalResult, Item, compare, evaluate_outputs
from edge.bundle import Bundle

REFERENCE_FILE = "reference.npz"
REFERENCE_SCHEMA = 1
REWRITE = "re-export the bundle with export-engine --reference"


class ReferenceError(ValueError):
    """reference.npz cannot be read; the message names the file and the fix."""


def items_fingerprint(items: list[Item]) -> str:
    """SHA-256 of the (name, size) list: another category, an added, removed or rewritten image
    changes it, wherever the folder lives."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.name}\t{item.image.stat().st_size}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Reference:
    names: list[str]  # Item.name of each image, in scoring order
    files_sha256: str  # items_fingerprint of what was scored
    scores: np.ndarray  # float32 [N]
    maps: np.ndarray = field(repr=False)  # float32 [N, h, w], on calibration.evaluate's pixel grid
    meta: dict = field(default_factory=dict)  # model_sha256, data, runtime, precision, created_at

    def problem(self, bundle: Bundle, items: list[Item]) -> str | None:
        """Why this reference cannot be compared with `bundle` scored on `items`, or None."""
        if self.meta.get("model_sha256") != bundle.sha256:
            return (
                f"{REFERENCE_FILE} was scored with another model.onnx ({str(self.meta.get('model_sha256'))[:12]}, "
                f"this bundle's is {bundle.sha256[:12]}); {REWRITE}"
            )
        if self.files_sha256 != items_fingerprint(items):
            return (
                f"{REFERENCE_FILE} holds {len(self.names)} images of {self.meta.get('data')}, not the "
                f"{len(items)} evaluated here; evaluate on that data to compare with it"
            )
        return None


def save_reference(
    bundle: Bundle, items: list[Item], maps: np.ndarray, scores: np.ndarray, runtime: dict, data: Path
) -> Path:
    """Write ``bundle``/reference.npz (compressed; atomically, so a half-written file is never read)."""
    meta = {
        "schema": REFERENCE_SCHEMA,
        "model_sha256": bundle.sha256,
        "data": str(Path(data).resolve()),
        "runtime": runtime,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = bundle.path / REFERENCE_FILE
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez_compressed(
            f,
            names=np.array([i.name for i in items]),
            scores=np.asarray(scores, np.float32),
            maps=np.asarray(maps, np.float32),
            files_sha256=np.array(items_fingerprint(items)),
            meta=np.array(json.dumps(meta)),
        )
    os.replace(partial, path)
    return path


def load_reference(bundle: Bundle) -> Reference | None:
    """The bundle's reference outputs, or None when it has none."""
    path = bundle.path / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ref = Reference(
                names=[str(n) for n in z["names"]],
                files_sha256=str(z["files_sha256"]),
                scores=z["scores"].astype(np.float32),
                maps=z["maps"].astype(np.float32),
                meta=meta,
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ReferenceError(f"{path}: unreadable ({e.__class__.__name__}: {e}); {REWRITE}, or delete it") from None
    if meta.get("schema") != REFERENCE_SCHEMA:
        raise ReferenceError(
            f"{path}: schema {meta.get('schema')!r}, this edge-eval reads {REFERENCE_SCHEMA}; {REWRITE}"
        )
    if len(ref.scores) != len(ref.names) or len(ref.maps) != len(ref.names):
        raise ReferenceError(
            f"{path}: {len(ref.names)} names, {len(ref.scores)} scores, {len(ref.maps)} maps; {REWRITE}"
        )
    return ref


def compare_with_reference(bundle: Bundle, deployed: EvalResult, ref: Reference | None) -> dict | None:
    """``deployed`` (edge-eval's result for ``bundle``) against the bundle's reference ``ref``,
    measured with the same code: calibration.evaluate.compare's differences plus the reference's
    facts. None, with a note on ``deployed`` saying why, when there is no reference that fits."""
    if ref is None:
        deployed.notes.append(
            f"no PyTorch reference in the bundle, so deployed vs PyTorch is not measured "
            f"(export-engine --reference writes {REFERENCE_FILE})"
        )
        return None
    problem = ref.problem(bundle, deployed.items)
    if problem:
        deployed.notes.append(problem)
        return None
    reference = evaluate_outputs(deployed.items, ref.maps, ref.scores, bundle.calibration)
    return {**compare(deployed, reference), "reference": ref.meta}
