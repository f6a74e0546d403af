"""Per-stream counters and latency percentiles for the status topic. Owned by the inference thread."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edge.types import Verdict


def percentiles(values, qs=(50, 99)) -> dict[str, float | int | None]:
    arr = np.fromiter(values, dtype=np.float64)
    out: dict[str, float | int | None] = {
        f"p{q}": (round(float(np.percentile(arr, q)), 3) if arr.size else None) for q in qs
    }
    out["n"] = int(arr.size)
    return out


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float | None  # None while there are no values
    p99: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        arr = np.fromiter(values, dtype=np.float64)
        p50, p99 = (round(float(np.percentile(arr, q)), 3) if arr.size else None for q in (50, 99))
        return cls(p50, p99, int(arr.size))


@dataclass(frozen=True, slots=True)
class Drift:
    """The running mean of OK scores (``ok_mean``, over ``n``) against the calibration's μ, in σ (``z``)."""

    ok_mean: float | None
    calib_mu: float | None
    z: float | None
    n: int


class LineStats:
    def __init__(self, window: int = 2048):
        self.verdicts = {"OK": 0, "NG": 0, "ERROR": 0}
        self.publish_failed = 0
        self.latency_ms: deque[float] = deque(maxlen=window)  # grab → publish, per frame
        self._ok_scores: deque[float] = deque(maxlen=window)

    def count(self, v: Verdict, latency_ms: float) -> None:
        self.verdicts[v.verdict] += 1
        self.latency_ms.append(latency_ms)
        if v.verdict == "OK" and v.score is not None:
            self._ok_scores.append(v.score)

    def new_model(self) -> None:
        """Another model's scores are on another scale: the drift window starts again."""
        self._ok_scores.clear()

    def judged(self) -> int:
        return sum(self.verdicts.values())

    def drift(self, mu: float | None, sigma: float | None) -> Drift:
        """Running mean of OK scores against calibration μ, in σ: a line that creeps towards
        its threshold (lighting, lens, new material) shows here before it rejects parts."""
        mean = float(np.mean(self._ok_scores)) if self._ok_scores else None
        z = (mean - mu) / sigma if mean is not None and mu is not None and sigma else None
        return Drift(mean, mu, None if z is None else round(z, 3), len(self._ok_scores))
