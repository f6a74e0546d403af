"""A bundle judging images in your own Python code, exactly as edge-run judges frames: the same
backend choice, resize, threshold and regions, without a daemon, a camera or ZeroMQ. For scripts
and notebooks, and for lines that have their own image acquisition and PLC link.

    from edge.inspector import Inspector

    with Inspector("bundles/bottle-patchcore") as inspector:
        for v in inspector.judge_files(["part-0001.png", "part-0002.png"]):
            print(v.frame.frame_id, v.verdict, v.score, [r.bbox for r in v.regions])

The daemon judges each batch with ``judge_batch`` too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.backends import Backend, load_backend
from edge.bundle import Bundle, BundleError, load_bundle
from edge.preprocess import frame_problem, read_image, to_input
from edge.types import Frame, Verdict
from edge.verdict import Judge

log = logging.getLogger(__name__)


def judge_for(bundle: Bundle, k: float | None) -> Judge:
    """The bundle's judge: its calibrated threshold, or μ + kσ when ``k`` is given."""
    cal = bundle.calibration
    if cal is None:
        raise BundleError(
            f"{bundle.path}: no calibration.yaml, so no threshold to judge by; "
            f"run: edge-calibrate --bundle {bundle.path} --data GOOD_IMAGES_DIR"
        )
    return Judge(threshold=cal.threshold_for(k), pixel_threshold=cal.pixel_threshold)


@dataclass(slots=True)
class Judged:
    verdicts: list[Verdict]  # one per frame, in order
    inferred: int  # frames that went through the model
    infer_ms: float | None  # the model's time for them; None when nothing ran or it failed


def judge_batch(
    backend: Backend, bundle: Bundle, frames: Sequence[Frame], judges: Sequence[Judge], keep_maps: bool = False
) -> Judged:
    """Judges ``frames`` (each by its judge) in one inference: ERROR for a frame that cannot be
    judged and for every frame of a batch whose inference failed, the model's verdict for the
    rest (``keep_maps``: OK verdicts keep their anomaly map too). Never raises for a frame or
    the runtime: a part is never left without a verdict."""
    verdicts: list[Verdict | None] = [None] * len(frames)
    ready = []
    for i, (frame, judge) in enumerate(zip(frames, judges)):
        problem = frame_problem(frame)
        if problem is None:
            ready.append(i)
        else:
            verdicts[i] = judge.error(frame, problem)
    infer_ms = None
    if ready:
        h, w = bundle.height, bundle.width
        t0 = time.perf_counter()
        try:
            maps, scores = backend.infer(to_input([frames[i] for i in ready], h, w))
            if maps.shape != (len(ready), 1, h, w) or scores.shape != (len(ready),):
                raise RuntimeError(
                    f"backend returned maps {maps.shape} / scores {scores.shape} for a batch of {len(ready)}"
                )
        except Exception as e:  # any failure of the runtime: these parts were not judged
            log.exception("inference failed for a batch of %d", len(ready))
            for i in ready:
                verdicts[i] = judges[i].error(frames[i], f"inference failed: {e}")
        else:
            infer_ms = (time.perf_counter() - t0) * 1000
            for i, amap, score in zip(ready, maps, scores):
                verdicts[i] = judges[i].judge(frames[i], amap[0], float(score), keep_maps)
    return Judged([v for v in verdicts if v is not None], len(ready), infer_ms)


class Inspector:
    """A calibrated bundle on its backend (``backend``/``gpu`` as in a line config, batches of up
    to ``max_batch``), judging against its calibrated threshold, or μ + kσ with ``k``;
    ``trusted_keys`` as a line config's trust.keys (the bundle must be signed by one of them).
    Verdicts are the line's: OK, NG (with regions in the image's own pixels) or ERROR (with the
    reason), one per image, never an exception for a bad image."""

    def __init__(
        self,
        bundle: str | Path,
        *,
        backend: str = "auto",
        gpu: int = 0,
        k: float | None = None,
        max_batch: int = 8,
        trusted_keys: Path | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.bundle = load_bundle(bundle, trusted_keys=trusted_keys)
        self.judge = judge_for(self.bundle, k)
        self.max_batch = max_batch
        self.backend = load_backend(self.bundle, backend, gpu, max_batch)

    @property
    def threshold(self) -> float:
        return self.judge.threshold

    def describe(self) -> dict:
        return {**self.backend.describe(), "threshold": self.threshold}

    def judge_images(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None, keep_maps: bool = False
    ) -> list[Verdict]:
        """One verdict per image: ``uint8 [H, W, 3]`` RGB of any size (OpenCV reads BGR: convert
        with cv2.cvtColor(img, cv2.COLOR_BGR2RGB)). ``names`` become the frame ids."""
        names = list(names) if names is not None else [str(i) for i in range(len(images))]
        if len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        now = time.time()
        frames = [Frame("inspector", i, name, now, image) for i, (name, image) in enumerate(zip(names, images))]
        return self._judge(frames, keep_maps)

    def judge_files(self, paths: Sequence[str | Path], keep_maps: bool = False) -> list[Verdict]:
        """One verdict per image file, as the line's image folder source reads them; a file that
        cannot be read is an ERROR verdict that says so."""
        frames = []
        for i, path in enumerate(map(Path, paths)):
            bgr, problem = read_image(path)
            rgb = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames.append(
                Frame("inspector", i, str(path), time.time(), rgb, problem and f"cannot read image {path}: {problem}")
            )
        return self._judge(frames, keep_maps)

    def _judge(self, frames: list[Frame], keep_maps: bool) -> list[Verdict]:
        verdicts = []
        for start in range(0, len(frames), self.max_batch):
            chunk = frames[start : start + self.max_batch]
            verdicts += judge_batch(self.backend, self.bundle, chunk, [self.judge] * len(chunk), keep_maps).verdicts
        return verdicts

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
