"""A backend that overflows on chosen parts, as an fp16 engine can, on top of the brightness bundle."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def overflowing(monkeypatch):
    """``overflowing(cli_module, value, output)``: the backend that cli_module loads gives NaN
    (output "map") or inf (output "score") for the parts of grey level `value`."""

    def patch(module, value: int, output: str) -> None:
        load = module.load_backend

        def load_overflowing(*args, **kwargs):
            backend = load(*args, **kwargs)
            infer = backend.infer

            def infer_overflowing(images):
                maps, scores = (a.copy() for a in infer(images))
                hit = images[:, 0, 0, 0] == value
                if output == "map":
                    maps[hit] = np.nan
                else:
                    scores[hit] = np.inf
                return maps, scores

            backend.infer = infer_overflowing
            return backend

        monkeypatch.setattr(module, "load_backend", load_overflowing)

    return patch
