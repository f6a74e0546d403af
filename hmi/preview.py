"""What recalibrating on the reviewed parts would do, before anyone applies it: the reviewed good
parts scored by the line's bundle and fitted by the line's own calibration code
(calibration.calibrate, as ``edge-calibrate --data <review_dir>/good`` would), then the false
rejects among them and the confirmed defects let through, at today's threshold and at the new one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import load_bundle


@dataclass(frozen=True, slots=True)
class Preview:
    k: float
    threshold_now: float
    threshold_new: float
    good: int  # reviewed good parts
    false_rejects_now: int  # of them, above today's threshold
    false_rejects_new: int
    defects: int  # confirmed defects
    missed_now: int  # of them, at or below today's threshold
    missed_new: int
    warnings: list[str]


def preview(bundle_dir: Path, review_dir: Path, k: float | None) -> Preview:
    # Imported here: the calibration code (and its tqdm) is needed only when someone asks.
    from calibration.calibrate import CalibrationError, fit, list_images, score_images, warnings_for
    from edge.backends import load_backend

    bundle = load_bundle(bundle_dir)
    if bundle.calibration is None:
        raise CalibrationError(f"{bundle_dir}: no calibration.yaml to compare with")
    k = bundle.calibration.k if k is None else k
    threshold_now = bundle.calibration.threshold_for(k)
    good = list_images(review_dir / "good")
    defect_dirs = [d for d in sorted(review_dir.iterdir()) if d.is_dir() and d.name != "good"]
    defects = [f for d in defect_dirs for f in list_images(d)]
    backend = load_backend(bundle, "onnxruntime")
    try:
        good_scores = score_images(backend, bundle, good)
        fitted = fit(good_scores, k)
        defect_scores = score_images(backend, bundle, defects).image if defects else np.zeros(0)
    finally:
        backend.close()
    new = fitted["threshold"]
    x = good_scores.image
    return Preview(
        k=k,
        threshold_now=threshold_now,
        threshold_new=new,
        good=int(x.size),
        false_rejects_now=int((x > threshold_now).sum()),
        false_rejects_new=int((x > new).sum()),
        defects=int(defect_scores.size),
        missed_now=int((defect_scores <= threshold_now).sum()),
        missed_new=int((defect_scores <= new).sum()),
        warnings=warnings_for(fitted),
    )
