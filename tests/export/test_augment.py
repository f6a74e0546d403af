"""Synthetic anomalies: what they change, how large they are, and that a seed repeats them."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from export.augment import (
    SCAR_LENGTH,
    SCAR_WIDTH,
    STAIN_AXES,
    colour_jitter,
    cutpaste,
    scar_cutpaste,
    stain,
    stain_outline,
)

AUGMENTATIONS = [cutpaste, scar_cutpaste, stain]


def textured(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Distinct pixels almost everywhere, so a pasted patch shows wherever it lands."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_shape_dtype_input_untouched_and_mask_is_what_changed(augment) -> None:
    image = textured()
    before = image.copy()
    for seed in range(20):
        out, mask = augment(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert mask.shape == image.shape[:2] and mask.dtype == bool and mask.any()
        assert np.array_equal(image, before)
        # Outside the mask nothing moved; inside, (almost) every pixel is new.
        assert np.array_equal(out[~mask], image[~mask])
        changed = (out != image).any(axis=-1)
        assert changed[mask].mean() > 0.9


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_same_seed_same_draw_other_seed_other_draw(augment) -> None:
    image = textured()
    out_a, mask_a = augment(image, np.random.default_rng(7))
    out_b, mask_b = augment(image, np.random.default_rng(7))
    assert np.array_equal(out_a, out_b) and np.array_equal(mask_a, mask_b)
    out_c, mask_c = augment(image, np.random.default_rng(8))
    assert not np.array_equal(mask_a, mask_c) or not np.array_equal(out_a, out_c)


def test_cutpaste_area_is_2_to_15_percent_and_the_patch_is_the_images_own() -> None:
    image = textured(120, 160)
    areas = []
    for seed in range(200):
        out, mask = cutpaste(image, np.random.default_rng(seed), jitter=0.0)
        ys, xs = np.nonzero(mask)
        assert mask.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # one axis-aligned rectangle
        areas.append(mask.mean())
        pasted = out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        match = cv2.matchTemplate(image, pasted, cv2.TM_SQDIFF)
        y, x = np.unravel_index(match.argmin(), match.shape)
        assert np.array_equal(image[y : y + len(pasted), x : x + pasted.shape[1]], pasted)  # cut from the same image
    # Rounding the sides to whole pixels moves the area a little past the nominal range.
    assert 0.018 < min(areas) < 0.03 and 0.13 < max(areas) < 0.16


def test_scar_is_a_thin_rotated_strip_of_the_stated_size() -> None:
    image = textured(256, 256)
    angles = []
    for seed in range(200):
        _, mask = scar_cutpaste(image, np.random.default_rng(seed), jitter=0.0)
        (_, _), (w, h), angle = cv2.minAreaRect(np.argwhere(mask)[:, ::-1].astype(np.float32))
        short, long_ = sorted((w, h))
        assert SCAR_WIDTH[0] * 256 - 1.5 <= short + 1 <= SCAR_WIDTH[1] * 256 + 2.5
        assert SCAR_LENGTH[0] * 256 - 1.5 <= long_ + 1 <= SCAR_LENGTH[1] * 256 + 2.5
        angles.append(angle % 90)
    assert np.ptp(angles) > 60  # rotated, not all axis-aligned


def semi_axes(mask: np.ndarray) -> tuple[float, float]:
    """(major, minor) semi-axes of the ellipse with the mask's second moments: for a filled
    ellipse of semi-axes a ≥ b the covariance eigenvalues are a²/4 and b²/4."""
    moments = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    cov = np.array([[moments["mu20"], moments["mu11"]], [moments["mu11"], moments["mu02"]]]) / moments["m00"]
    small, large = np.linalg.eigvalsh(cov)
    return 2 * math.sqrt(large), 2 * math.sqrt(small)


def test_stain_sizes_follow_1_to_12_percent_of_the_smaller_side() -> None:
    height, width = 200, 300
    side = min(height, width)
    image = textured(height, width)
    majors, minors, ratios = [], [], []
    for seed in range(300):
        out, mask = stain(image, np.random.default_rng(seed))
        major, minor = semi_axes(mask)
        majors.append(major / side)
        minors.append(minor / side)
        ratios.append(minor / major)
        n_parts, _ = cv2.connectedComponents(mask.astype(np.uint8))
        assert n_parts == 2  # one blob (and the background)
        assert len(np.unique(out[mask], axis=0)) == 1  # one fill colour
        ys, xs = np.nonzero(mask)
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < height - 1 and xs.max() < width - 1
    # Jitter (±10% of the mean semi-axis) and rasterisation (≈ ±1 px) widen the nominal range.
    low, high = STAIN_AXES
    assert low * 0.8 - 1.5 / side < min(minors) and max(majors) < high * 1.2 + 1.5 / side
    assert min(minors) < 0.03 and max(majors) > 0.10  # the whole range is drawn
    assert min(ratios) < 0.3 and max(ratios) > 0.9  # round and elongated ones


def test_stain_outline_is_a_closed_smooth_curve_through_jittered_ellipse_points() -> None:
    rng = np.random.default_rng(3)
    outline = stain_outline(rng, (50.0, 40.0), (20.0, 10.0), n_points=20, irregularity=0.1)
    radius = np.hypot(outline[:, 0] - 50.0, outline[:, 1] - 40.0)
    assert radius.min() > 10 * 0.75 and radius.max() < 20 * 1.25
    step = np.hypot(*np.diff(np.vstack([outline, outline[:1]]), axis=0).T)
    assert step.max() < 3 * np.median(step)  # no jump, closing segment included
    angles = np.unwrap(np.arctan2(outline[:, 1] - 40.0, outline[:, 0] - 50.0))
    assert abs(abs(angles[-1] - angles[0]) - 2 * math.pi) < 0.5  # goes once around


def test_grey_stains_are_grey_and_colour_range_holds() -> None:
    image = textured()
    for seed in range(30):
        out, mask = stain(image, np.random.default_rng(seed), grey=True, colour=(40, 60))
        r, g, b = out[mask][0]
        assert r == g == b and 40 <= r <= 60


def test_colour_jitter_zero_is_identity_and_small_jitter_stays_close() -> None:
    image = textured()
    rng = np.random.default_rng(0)
    assert np.array_equal(colour_jitter(image, rng, 0.0), image)
    smooth = cv2.GaussianBlur(image, (9, 9), 3)
    jittered = colour_jitter(smooth, rng, 0.1)
    assert jittered.shape == smooth.shape and jittered.dtype == np.uint8
    assert 0 < np.abs(jittered.astype(int) - smooth).mean() < 40


def test_rejects_non_rgb_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        stain(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        cutpaste(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
