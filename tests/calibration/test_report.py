"""The report's heatmaps on the scale of the line's NG evidence, whatever the sign of the scores."""

from __future__ import annotations

import warnings

import numpy as np

from edge.evidence import heat_overlay

GREY = np.full((64, 64, 3), 128, np.uint8)
RED, BLUE = 2, 0  # BGR channels


def spot_map(background: float, spot: float) -> np.ndarray:
    amap = np.full((32, 32), background, np.float32)
    amap[10:16, 10:16] = spot
    return amap


def test_negative_maps_and_thresholds_are_coloured():
    # SimpleNet / GLASS score −D(x): good areas are negative, and so can the threshold be.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = heat_overlay(GREY, spot_map(-0.8, -0.1), threshold=-0.3)
    background, spot = out[0, 0].astype(int), out[26, 26].astype(int)
    assert background[BLUE] > background[RED] and spot[RED] > spot[BLUE]
    # Only where the scores lie matters, not their sign.
    np.testing.assert_array_equal(out, heat_overlay(GREY, spot_map(0.2, 0.9), threshold=0.7))


def test_a_part_below_the_threshold_stays_short_of_red():
    out = heat_overlay(GREY, spot_map(-0.8, -0.5), threshold=-0.2).astype(int)
    assert out[26, 26][RED] < heat_overlay(GREY, spot_map(-0.8, -0.2), threshold=-0.2)[26, 26][RED]
