"""Metrics against cases worked out by hand, and against independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import label as sk_label
from sklearn.metrics import f1_score, roc_auc_score

from calibration.metrics import (
    area_up_to,
    aupro,
    confusion,
    f1_max,
    image_auroc,
    pixel_auroc,
    pro_curve,
    wilson_interval,
)


def grid(rows: list[str], values: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """One image from a character grid: upper case = defect pixel, each letter's score from `values`."""
    chars = np.array([list(r) for r in rows])
    scores = np.vectorize(lambda c: values[c.lower()])(chars).astype(np.float32)
    return scores[None], np.char.isupper(chars)[None]


def test_aupro_perfect_and_inverted():
    maps, masks = grid(["AAb.", "AAbb", "bbbb", "bbbb"], {"a": 1.0, "b": 0.0, ".": 0.0})
    assert aupro(maps, masks) == pytest.approx(1.0)
    assert aupro(1 - maps, masks) == pytest.approx(0.0)


def test_aupro_interpolates_at_the_cut():
    # One region of 4 pixels (2 at 0.9, 2 at 0.5); 10 good pixels (2 at 0.7, 8 at 0.1).
    # Curve: (0, .5) → (.2, .5) → (.2, 1) → (1, 1). Area to 0.3 = .2·.5 + .1·1 = 0.2; / 0.3.
    maps, masks = grid(["AABBccd", "ddddddd"], {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.1})
    assert masks.sum() == 4 and (~masks).sum() == 10
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 0.2, 0.2, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1, 1])
    assert aupro(maps, masks) == pytest.approx(0.2 / 0.3)


def test_aupro_averages_regions_not_pixels():
    # Region A: 1 pixel at 0.9. Region B: 3 pixels at 0.2. Good: one pixel at 0.8, nine at 0.
    # PRO is 1/2 (A found, B not) until FPR 0.1, then 1: area .1·.5 + .2·1 = 0.25 → 0.8333.
    # Weighting by pixels instead would give 1/4 at first and 0.75.
    maps, masks = grid(["A.cBBB.", "......."], {"a": 0.9, "b": 0.2, "c": 0.8, ".": 0.0})
    assert (~masks).sum() == 10
    assert aupro(maps, masks) == pytest.approx(0.25 / 0.3)


def test_regions_are_8_connected_and_span_images():
    # Image 1: a diagonal pair (one region with 8-connectivity) at 0.9 and a lone pixel at 0.
    # Image 2: defect-free, its pixels count as good pixels. At 0.9 two regions exist,
    # one found: PRO 1/2 (4-connectivity would give 3 regions, 2 found: 2/3).
    a, ma = grid(["A...", ".A..", "...B", "...."], {"a": 0.9, "b": 0.0, ".": 0.0})
    b, mb = grid(["....", "....", "....", "...."], {".": 0.1})
    maps, masks = np.concatenate([a, b]), np.concatenate([ma, mb])
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[1], pro[1]) == (0.0, 0.5)
    # Then the good image's 16 pixels at 0.1 (FPR 16/29), then everything at 0.
    np.testing.assert_allclose(fpr, [0, 0, 16 / 29, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1])
    assert aupro(maps, masks) == pytest.approx(0.5)


def brute_force_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Straight from the definition: threshold at every distinct score, label regions with
    scikit-image, integrate with the interpolated cut."""
    regions = [sk_label(m, connectivity=2) for m in masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        overlaps = [above[i][lab == r].mean() for i, lab in enumerate(regions) for r in range(1, lab.max() + 1)]
        points.append((above[~masks].mean(), np.mean(overlaps)))
    points.append((1.0, 1.0))
    x, y = np.array(points).T
    return area_up_to(x, y, limit) / limit


def test_aupro_matches_the_definition_on_random_maps():
    rng = np.random.default_rng(7)
    masks = np.zeros((3, 24, 24), bool)
    masks[0, 2:6, 3:9] = True
    masks[0, 15:20, 15:17] = True
    masks[1, 10:12, 1:3] = True
    maps = rng.normal(size=masks.shape).round(1) + 1.5 * masks  # rounded: ties on purpose
    assert aupro(maps, masks) == pytest.approx(brute_force_aupro(maps, masks), abs=1e-12)


def test_aupro_undefined_without_regions():
    assert math.isnan(aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool)))


def test_area_up_to_exact_point_needs_no_interpolation():
    x, y = np.array([0, 0.1, 0.3, 1.0]), np.array([0, 1, 1, 1.0])
    assert area_up_to(x, y, 0.3) == pytest.approx(0.05 + 0.2)


def test_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = rng.normal(size=200) + labels
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    maps = rng.normal(size=(4, 16, 16))
    masks = maps + rng.normal(size=maps.shape) > 1.5
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert math.isnan(image_auroc(scores, np.zeros(200, bool)))


def test_f1_max_hand_case_and_line_rule():
    # scikit-learn's example: P/R at each cut give F1 2/3, 0.8, 0.5, 2/3; the best cut flags
    # {0.35, 0.4, 0.8}, so the line threshold sits between 0.1 and 0.35.
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)
    f1, thr = f1_max(scores, labels)
    assert f1 == pytest.approx(0.8) and thr == pytest.approx(0.225)
    assert f1_score(labels, scores > thr) == pytest.approx(f1)


def test_f1_max_with_ties_holds_under_the_line_rule():
    rng = np.random.default_rng(3)
    labels = rng.random(300) < 0.4
    scores = (rng.normal(size=300) + 1.2 * labels).round(1)
    f1, thr = f1_max(scores, labels)
    assert f1_score(labels, scores > thr) == pytest.approx(f1)
    assert f1 >= max(f1_score(labels, scores > t) for t in np.unique(scores)) - 1e-12


def test_confusion_counts_and_rates():
    c = confusion(np.array([0.1, 0.5, 0.6, 0.2, 0.9, 0.5]), np.array([0, 0, 0, 1, 1, 1], bool), 0.5)
    # NG ⇔ score > 0.5: the good 0.6 is a false reject; defects 0.2 and 0.5 (equal, not above) pass.
    assert (c.tp, c.fp, c.tn, c.fn) == (1, 1, 2, 2)
    assert c.false_reject_rate == pytest.approx(1 / 3) and c.false_accept_rate == pytest.approx(2 / 3)
    assert c.to_json()["false_accept_rate"] == pytest.approx(2 / 3)


def test_wilson_interval_hand_values():
    # 0 of 20: centre = half = (z²/2n)/(1+z²/n) = 0.08056, so [0, 0.1611].
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.16113, abs=1e-4)
    assert wilson_interval(20, 20) == (pytest.approx(1 - 0.16113, abs=1e-4), 1.0)
    lo, hi = wilson_interval(5, 10)  # symmetric around 1/2
    assert lo == pytest.approx(1 - hi) and (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
