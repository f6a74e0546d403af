"""Evidence: NG parts (the frame with its heatmap and regions, optionally the raw frame too) and a
sample of OK parts (raw, to review and to recalibrate or retrain with), each in a size-bounded
ring folder.

Encoding a PNG costs milliseconds, so it happens on its own thread behind a small queue;
when the disk cannot keep up, evidence is skipped (and counted), verdicts never wait.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from edge.types import Verdict

log = logging.getLogger(__name__)


def heat_overlay(rgb: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    """BGR: the part with its anomaly map as a JET heatmap on top. The colours run from this part's
    lowest value up to its peak, or to the threshold when the peak stays below it: an NG part's
    show how its anomaly spreads (red = its peak), an OK part's stay short of red, whatever the
    sign of the scores (SimpleNet's and GLASS's are negative)."""
    amap = cv2.resize(amap, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(amap.min()), max(float(amap.max()), threshold)
    norm = np.clip((amap - lo) / max(hi - lo, 1e-12), 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.55, heat, 0.45, 0)


def overlay(v: Verdict) -> np.ndarray:
    """BGR image: the frame under its heatmap (``heat_overlay``), NG regions boxed (where the
    threshold is crossed), the verdict and score against the threshold written in the corner."""
    out = heat_overlay(v.frame.pixels, v.map, v.threshold)
    for r in v.regions:
        x, y, w, h = r.bbox
        cv2.rectangle(out, (x, y), (x + w, y + h), (255, 255, 255), 2)
    relation = ">" if v.verdict == "NG" else "<="
    cv2.putText(
        out,
        f"{v.verdict} {v.score:.3g} {relation} {v.threshold:.3g}",
        (8, 22),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (255, 255, 255),
        2,
        cv2.LINE_AA,
    )
    return out


class EvidenceStore:
    """One ring folder: per part, its overlay (``<part>.png``) and/or the judged image as it came
    (``<part>_raw.png``, lossless: it can go into a training or calibration folder as it is).
    ``max_files`` counts parts; the oldest part's files go together."""

    def __init__(self, folder: Path, max_files: int, overlay: bool = True, raw: bool = False, queue_size: int = 16):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self.overlay, self.raw = overlay, raw
        self.saved = 0
        self.skipped = 0
        # A restart keeps the ring of the run before: the parts already there, oldest first.
        # Keyed by name: a part saved again under its name (a restarted stream counts from 0) is
        # the newest, not a second entry whose eviction would delete the new files.
        self._parts: OrderedDict[str, list[Path]] = OrderedDict()
        for path in sorted(self.folder.glob("*.png"), key=lambda p: p.stat().st_mtime):
            self._parts.setdefault(path.name.removesuffix(".png").removesuffix("_raw"), []).append(path)
        self._queue: queue.Queue[Verdict | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=f"evidence-{self.folder.name}", daemon=True)
        self._thread.start()

    def submit(self, v: Verdict) -> None:
        try:
            self._queue.put_nowait(v)
        except queue.Full:
            self.skipped += 1

    def _images(self, v: Verdict) -> list[tuple[str, np.ndarray]]:
        images = [("", overlay(v))] if self.overlay else []
        return images + ([("_raw", cv2.cvtColor(v.frame.pixels, cv2.COLOR_RGB2BGR))] if self.raw else [])

    def _run(self) -> None:
        while (v := self._queue.get()) is not None:
            try:
                self._save(v)
            except Exception as e:  # one part that cannot be saved must not end the evidence of the run
                log.warning("evidence of %s in %s not saved: %s", v.frame.frame_id, self.folder, e)
                self.skipped += 1

    def _save(self, v: Verdict) -> None:
        # stream and seq make the name unique; the frame id (an image file's name, say) only helps a
        # person find the part, and is cut so that the name stays within a file system's 255 bytes.
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{v.frame.stream}_{v.frame.seq:08d}_{v.frame.frame_id}")[:200]
        name = f"{name}_{v.verdict}"
        # Made again if someone cleared it away while the line runs (cleaning up the disk, say).
        self.folder.mkdir(parents=True, exist_ok=True)
        written = []
        try:
            for suffix, image in self._images(v):
                path = self.folder / f"{name}{suffix}.png"
                if not cv2.imwrite(str(path), image):
                    raise OSError(f"cv2.imwrite could not write {path.name} (disk full or not writable?)")
                written.append(path)
        except BaseException:
            for path in written:  # half a part's evidence is none
                path.unlink(missing_ok=True)
            raise
        self.saved += 1
        self._parts.pop(name, None)
        self._parts[name] = written
        while len(self._parts) > self.max_files:
            for path in self._parts.popitem(last=False)[1]:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Write what is queued, then stop; closing again does nothing."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
