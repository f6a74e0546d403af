"""Scores → verdicts: μ+kσ threshold for OK/NG, connected components of the anomaly map for NG regions."""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.types import Frame, Region, Verdict


class Judge:
    def __init__(self, threshold: float, pixel_threshold: float, max_regions: int = 16):
        self.threshold = float(threshold)
        # Regions explain an NG: a pixel threshold above the image one could leave an NG
        # part with no region at all, so it never exceeds the image threshold.
        self.pixel_threshold = min(float(pixel_threshold), self.threshold)
        self.max_regions = max_regions

    def error(self, frame: Frame, why: str) -> Verdict:
        return Verdict(frame=frame, verdict="ERROR", score=None, threshold=self.threshold, error=why)

    def judge(self, frame: Frame, amap: np.ndarray, score: float, keep_map: bool = False) -> Verdict:
        """amap: [h, w] at model resolution; regions come back in the frame's own pixels. The
        map stays with an NG verdict (its evidence), with an OK one only when ``keep_map``."""
        if not math.isfinite(score) or not np.isfinite(amap).all():
            return self.error(frame, "model returned a non-finite score")
        if score <= self.threshold:
            return Verdict(
                frame=frame, verdict="OK", score=score, threshold=self.threshold, anomaly_map=amap if keep_map else None
            )
        fh, fw = frame.pixels.shape[:2]
        regions = self.regions(amap, fw, fh)
        return Verdict(
            frame=frame, verdict="NG", score=score, threshold=self.threshold, regions=regions, anomaly_map=amap
        )

    def regions(self, amap: np.ndarray, fw: int, fh: int) -> list[Region]:
        """Regions of the map scaled to a judged image of fw x fh pixels."""
        mask = (amap > self.pixel_threshold).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        mh, mw = amap.shape
        found = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            peak = float(amap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
            (x0, x1), (y0, y1) = _span(x, w, fw, mw), _span(y, h, fh, mh)
            found.append(Region(bbox=(x0, y0, x1 - x0, y1 - y0), area_px=round(area * fw * fh / (mw * mh)), peak=peak))
        found.sort(key=lambda r: r.peak, reverse=True)
        return found[: self.max_regions]


def _span(start: int, length: int, size: int, model_size: int) -> tuple[int, int]:
    """Map pixels [start, start + length) scaled to an image ``size`` pixels across: ends
    rounded outwards, in integers, so the box covers the region and never ends past the image
    (rounding the start and the length each on its own could end 1 px beyond it)."""
    return start * size // model_size, -(-(start + length) * size // model_size)
