"""Anomaly-detection metrics as MVTec AD defines them, on plain arrays (numpy, scikit-learn, OpenCV).

Conventions: higher score = more anomalous; label / mask True = defect. A part is NG when its
score is strictly above the threshold, as on the line (edge.verdict).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import numpy.typing as npt
from sklearn.metrics import precision_recall_curve, roc_auc_score

AUPRO_FPR_LIMIT = 0.3


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    # With one class only, AUROC is undefined; NaN keeps the row in a table instead of crashing it.
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, scores))


def image_auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    return _auroc(np.asarray(labels, bool).ravel(), np.asarray(scores, np.float64).ravel())


def pixel_auroc(maps: npt.ArrayLike, masks: npt.ArrayLike) -> float:
    """AUROC over every pixel of every image (maps and masks of the same shape)."""
    return _auroc(np.asarray(masks, bool).ravel(), np.asarray(maps).ravel())


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap vs false-positive rate, for every distinct threshold (MVTec AD's compute_pro).

    maps, masks: [N, H, W]. Each 8-connected ground-truth component is one region; PRO at a
    threshold is the mean over all regions of the fraction of that region above it, so a small
    scratch counts as much as a large stain. FPR is over all defect-free pixels (those of
    defective images included). Starts at (0, 0) and ends at (1, 1).
    """
    masks = np.asarray(masks, bool)
    weight = np.zeros(masks.shape, np.float64)  # 1 / area of the pixel's region, 0 off regions
    n_regions = 0
    for m, w in zip(masks, weight):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        if n > 1:
            w[...] = (1.0 / np.maximum(stats[:, cv2.CC_STAT_AREA], 1))[labels]
            w[labels == 0] = 0.0
        n_regions += n - 1
    n_ok = int((~masks).sum())
    if n_regions == 0 or n_ok == 0:
        return np.array([0.0, 1.0]), np.array([math.nan, math.nan])
    flat = np.asarray(maps).ravel()
    order = np.argsort(flat, kind="stable")[::-1]  # thresholds from high to low
    fpr = np.cumsum(~masks.ravel()[order], dtype=np.float64) / n_ok
    pro = np.cumsum(weight.ravel()[order]) / n_regions
    # Tied scores are one threshold: keep the point after the last of each run of ties.
    sorted_scores = flat[order]
    keep = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fpr, pro = np.clip(fpr[keep], 0, 1), np.clip(pro[keep], 0, 1)
    return np.concatenate(([0.0], fpr, [1.0])), np.concatenate(([0.0], pro, [1.0]))


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) from x[0] to x_max, with y interpolated linearly at the cut.
    x must be non-decreasing and reach x_max."""
    inside = x <= x_max
    area = float(np.trapezoid(y[inside], x[inside]))
    i = int(inside.sum())  # first point past the cut
    if x[i - 1] < x_max:
        y_cut = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y[i - 1] + y_cut) * (x_max - x[i - 1])
    return area


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit` (1.0 is perfect)."""
    fpr, pro = pro_curve(maps, masks)
    if np.isnan(pro).any():
        return math.nan
    return area_up_to(fpr, pro, fpr_limit) / fpr_limit


def f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best image-level F1 and a threshold that gives it with the line's rule (NG ⇔ score > threshold).

    scikit-learn flags score >= t; the threshold returned sits halfway between the lowest score
    flagged and the next lower score, so the same F1 holds on the line and ties do not matter.
    """
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    if labels.all() or not labels.any():
        return math.nan, math.nan
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)[:-1]
    best = int(np.argmax(f1))
    lowest_flagged = thresholds[best]
    below = scores[scores < lowest_flagged]
    threshold = (lowest_flagged + below.max()) / 2 if below.size else float(np.nextafter(lowest_flagged, -np.inf))
    return float(f1[best]), float(threshold)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (z = 1.96) Wilson score interval of a rate k/n: unlike k/n ± z·SE it stays inside
    [0, 1] and says something useful when k = 0 (0 of 20 false rejects is still up to 16%)."""
    if n == 0:
        return math.nan, math.nan
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k = 0 or k = n the bound is exactly 0 or 1; the formula's rounding would say 1e-17.
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


@dataclass(frozen=True, slots=True)
class Confusion:
    """Image-level counts at one threshold; positive = defect, predicted positive = NG."""

    threshold: float
    tp: int  # defects rejected
    fp: int  # good parts rejected (false rejects)
    tn: int  # good parts passed
    fn: int  # defects passed (false accepts, the costly kind)

    @property
    def false_reject_rate(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else math.nan

    @property
    def false_accept_rate(self) -> float:
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else math.nan

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "false_reject_rate": self.false_reject_rate,
            "false_reject_rate_95": list(wilson_interval(self.fp, self.fp + self.tn)),
            "false_accept_rate": self.false_accept_rate,
            "false_accept_rate_95": list(wilson_interval(self.fn, self.fn + self.tp)),
        }


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Confusion:
    ng = np.asarray(scores).ravel() > threshold
    labels = np.asarray(labels, bool).ravel()
    return Confusion(
        threshold=float(threshold),
        tp=int((ng & labels).sum()),
        fp=int((ng & ~labels).sum()),
        tn=int((~ng & ~labels).sum()),
        fn=int((~ng & labels).sum()),
    )
