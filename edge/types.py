"""The small typed records that cross boundaries on the line: source → batcher → backend → verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

VerdictKind = Literal["OK", "NG", "ERROR"]


@dataclass(slots=True)
class Frame:
    """One grabbed image, or the record that a grab produced nothing usable.

    A frame with ``image is None`` still travels the whole pipeline so that it ends as an
    ERROR verdict: a part the line could not see must never be let through.
    """

    stream: str
    seq: int  # per-stream sequence number, from 0, never reused
    frame_id: str  # what the source calls it (file name, "cam0:17", ...)
    t_grab: float  # time.time() when grabbed
    image: np.ndarray | None  # HxWx3 uint8 RGB, any size (the line resizes)
    error: str | None = None  # why image is None
    part_id: str | None = None  # the part the PLC announced for this frame (edge/plant); None: free-running

    @property
    def pixels(self) -> np.ndarray:
        """The image of a frame that was grabbed; only judged frames are asked for it."""
        if self.image is None:
            raise ValueError(f"frame {self.frame_id} has no image ({self.error})")
        return self.image


@dataclass(slots=True)
class Batch:
    frames: list[Frame]
    t_formed: float


@dataclass(slots=True)
class Region:
    bbox: tuple[int, int, int, int]  # x, y, w, h in the judged image's pixels (after the source's roi and rotate)
    area_px: int
    peak: float

    def to_json(self) -> dict:
        return {"bbox": list(self.bbox), "area_px": self.area_px, "peak": round(self.peak, 6)}


@dataclass(slots=True)
class Verdict:
    frame: Frame
    verdict: VerdictKind
    score: float | None
    threshold: float
    regions: list[Region] = field(default_factory=list)
    error: str | None = None
    anomaly_map: np.ndarray | None = None  # [h, w] model-resolution map, kept for evidence only

    @property
    def map(self) -> np.ndarray:
        """The anomaly map of a verdict that kept one (every NG; OK ones asked to keep it)."""
        if self.anomaly_map is None:
            raise ValueError(f"the {self.verdict} verdict of {self.frame.frame_id} kept no anomaly map")
        return self.anomaly_map
