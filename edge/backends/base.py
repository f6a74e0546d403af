from __future__ import annotations

from typing import Protocol

import numpy as np


class BackendError(RuntimeError):
    """The model could not be loaded or run; the message says why and what to do."""


class Backend(Protocol):
    """What the line needs of an inference runtime (the engine contract of docs/bundle-format.md)."""

    name: str

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, H, W, 3] RGB → (anomaly_map float32 [B, 1, H, W], score float32 [B])."""
        ...

    def describe(self) -> dict:
        """Runtime, device and model facts for logs and the status topic."""
        ...

    def close(self) -> None: ...
