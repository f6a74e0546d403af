"""Inference backends: one small interface (load, infer a batch, describe), like Polygraphy's
runners. Runtimes are imported lazily so `import edge` needs none of them."""
from __future__ import annotations

import logging

from edge.backends.base import Backend, BackendError
from edge.bundle import Bundle

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendError", "load_backend"]


def load_backend(bundle: Bundle, kind: str = "auto") -> Backend:
    """Open the bundle's model on the best runtime available for `kind`, logging the choice."""
    if kind in ("auto", "onnxruntime"):
        from edge.backends.onnxruntime import OnnxRuntimeBackend
        backend = OnnxRuntimeBackend(bundle)
        log.info("backend %s: %s", kind, backend.describe())
        return backend
    raise BackendError(f"backend {kind!r} is not available in this build; use 'auto' or 'onnxruntime'")
