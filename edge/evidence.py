"""Evidence: NG parts (the frame with its heatmap and regions, optionally the raw frame too) and a
sample of OK parts (raw, to review and to recalibrate or retrain with), each in a size-bounded
ring folder.

Encoding a PNG costs milliseconds, so it happens on its own thread behind a small queue;
when the disk cannot keep up, evidence is skipped (and counted), verdicts never wait.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from edge.types import Verdict

log = logging.getLogger(__name__)

MANIFEST = ".edge-evidence"  # in the ring folder: its parts, oldest first, each with its files
_OWN_NAME = re.compile(r"[A-Za-z0-9._-]+_(OK|NG|ERROR)((_raw)?\.png|\.json)")  # as _save names them


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
    (``<part>_raw.png``, lossless: it can go into a training or calibration folder as it is), and
    the verdict message (``<part>.json``: score, threshold, model, for the review on edge-hmi).
    ``max_files`` counts parts; the oldest part's files go together."""

    def __init__(self, folder: Path, max_files: int, overlay: bool = True, raw: bool = False, queue_size: int = 16):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self.overlay, self.raw = overlay, raw
        self.saved = 0
        self.skipped = 0
        # A restart keeps the ring of the run before, oldest first, as its manifest lists it: the
        # ring deletes only files it wrote, never a folder's other images (captured good parts, say).
        # Keyed by name: a part saved again under its name (a restarted stream counts from 0) is
        # the newest, not a second entry whose eviction would delete the new files.
        self._parts: OrderedDict[str, list[Path]] = self._read_manifest()
        ours = {path.name for paths in self._parts.values() for path in paths}
        foreign = [
            p.name
            for p in self.folder.iterdir()
            if p.name not in ours and not p.name.startswith(MANIFEST) and not p.is_dir()  # ok/: the OK ring
        ]
        if foreign:
            log.warning(
                "evidence.dir %s holds %d file(s) the line did not write (e.g. %s): they are left alone; "
                "the ring keeps and deletes only its own (listed in %s)",
                self.folder,
                len(foreign),
                sorted(foreign)[0],
                MANIFEST,
            )
        self._queue: queue.Queue[tuple[Verdict, dict | None] | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=f"evidence-{self.folder.name}", daemon=True)
        self._thread.start()

    def _read_manifest(self) -> OrderedDict[str, list[Path]]:
        parts: OrderedDict[str, list[Path]] = OrderedDict()
        try:
            lines = (self.folder / MANIFEST).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return parts
        except (OSError, UnicodeDecodeError) as e:
            log.warning("%s: cannot read it (%s): the ring starts empty and leaves the files there alone", MANIFEST, e)
            return parts
        for line in lines:
            name, *files = line.split("\t")
            # Only names the ring itself makes: a manifest edited to list ../x or another folder's file
            # must not make it delete that.
            paths = [self.folder / f for f in files if _OWN_NAME.fullmatch(f) and (self.folder / f).is_file()]
            if _OWN_NAME.fullmatch(name + ".png") and paths:
                parts.pop(name, None)
                parts[name] = paths
        return parts

    def _write_manifest(self) -> None:
        text = "".join("\t".join([name, *(p.name for p in paths)]) + "\n" for name, paths in self._parts.items())
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.folder / MANIFEST)  # a crash leaves the old manifest or the new, never half

    def submit(self, v: Verdict, message: dict | None = None) -> None:
        """``message``: the verdict as published (edge.publish.verdict_message), saved beside the images."""
        try:
            self._queue.put_nowait((v, message))
        except queue.Full:
            self.skipped += 1

    def _images(self, v: Verdict) -> list[tuple[str, np.ndarray]]:
        images = [("", overlay(v))] if self.overlay else []
        return images + ([("_raw", cv2.cvtColor(v.frame.pixels, cv2.COLOR_RGB2BGR))] if self.raw else [])

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            v, message = item
            try:
                self._save(v, message)
            except Exception as e:  # one part that cannot be saved must not end the evidence of the run
                log.warning("evidence of %s in %s not saved: %s", v.frame.frame_id, self.folder, e)
                self.skipped += 1

    def _ours(self, name: str, file: str) -> Path:
        """Where the part ``name`` writes ``file``; OSError when a file the line did not write is there."""
        path = self.folder / file
        if name not in self._parts and (path.exists() or path.is_symlink()):
            raise OSError(f"{path.name} is there and the line did not write it; it is not overwritten")
        return path

    def _save(self, v: Verdict, message: dict | None) -> None:
        # stream and seq make the name unique; the frame id (an image file's name, say) only helps a
        # person find the part, and is cut so that the name stays within a file system's 255 bytes.
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{v.frame.stream}_{v.frame.seq:08d}_{v.frame.frame_id}")[:200]
        name = f"{name}_{v.verdict}"
        # Made again if someone cleared it away while the line runs (cleaning up the disk, say).
        self.folder.mkdir(parents=True, exist_ok=True)
        written = []
        try:
            for suffix, image in self._images(v):
                path = self._ours(name, f"{name}{suffix}.png")
                if not cv2.imwrite(str(path), image):
                    raise OSError(f"cv2.imwrite could not write {path.name} (disk full or not writable?)")
                written.append(path)
            if message is not None:
                path = self._ours(name, f"{name}.json")
                path.write_text(json.dumps(message))
                written.append(path)
        except BaseException:
            for path in written:  # half a part's evidence is none
                path.unlink(missing_ok=True)
            raise
        self._parts.pop(name, None)
        self._parts[name] = written
        evicted = []
        while len(self._parts) > self.max_files:
            evicted += self._parts.popitem(last=False)[1]
        try:
            self._write_manifest()  # before the deletions: a file is never deleted while the manifest lists it
        except OSError as e:  # the folder cleared meanwhile, say: the next part's manifest lists this one too
            log.warning("%s: %s not written (%s); written again with the next part", self.folder, MANIFEST, e)
        for path in evicted:
            path.unlink(missing_ok=True)
        self.saved += 1

    def close(self) -> None:
        """Write what is queued, then stop; closing again does nothing."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
