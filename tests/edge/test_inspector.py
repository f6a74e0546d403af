"""Judging from Python with edge.inspector.Inspector: the line's verdicts (same backend, resize,
threshold and regions) for images and files, ERROR for what cannot be judged, never an exception."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.bundle import BundleError
from edge.config import parse_config
from edge.daemon import Daemon
from edge.inspector import Inspector
from edge.types import Frame

from .conftest import make_bundle, part


@pytest.fixture
def inspector(tmp_path):
    with Inspector(make_bundle(tmp_path / "bundle"), backend="onnxruntime", max_batch=3) as inspector:
        yield inspector


def test_images_get_the_lines_verdicts(inspector, tmp_path) -> None:
    images = [
        part(40, (48, 64)),
        part(40, (48, 64), spot=(10, 10, 12)),
        part(40, (480, 640), spot=(100, 100, 120)),
        np.zeros((48, 64), np.uint8),
        part(40, (4, 4)),
    ]
    verdicts = inspector.judge_images(images, names=["ok", "ng", "big", "grey", "tiny"])
    assert [(v.frame.frame_id, v.verdict) for v in verdicts] == [
        ("ok", "OK"),
        ("ng", "NG"),
        ("big", "NG"),
        ("grey", "ERROR"),
        ("tiny", "ERROR"),
    ]
    x, y, w, h = verdicts[2].regions[0].bbox  # in the 640x480 image's own pixels
    assert abs(x - 100) <= 12 and abs(y - 100) <= 12 and abs(w - 120) <= 25 and abs(h - 120) <= 25
    assert "expected HxWx3 uint8" in verdicts[3].error and "too small" in verdicts[4].error
    assert verdicts[0].score <= inspector.threshold < verdicts[1].score
    # What the daemon judges for the same frames, field by field.
    daemon = Daemon(
        parse_config(
            {
                "line": "l",
                "station": "s",
                "bundle": str(inspector.bundle.path),
                "source": {"kind": "images", "path": str(tmp_path)},
            }
        )
    )
    try:
        frames = [Frame("cam0", i, v.frame.frame_id, 0.0, image) for i, (v, image) in enumerate(zip(verdicts, images))]
        line = daemon.judge_frames(frames)
    finally:
        daemon.close()
    assert [(v.verdict, v.score, [r.bbox for r in v.regions], v.error) for v in line] == [
        (v.verdict, v.score, [r.bbox for r in v.regions], v.error) for v in verdicts
    ]


def test_files_are_read_as_the_line_reads_them(inspector, tmp_path) -> None:
    cv2.imwrite(str(tmp_path / "ng.png"), cv2.cvtColor(part(40, spot=(10, 10, 12)), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "grey.png"), part(40)[:, :, 0])  # grayscale file: three equal channels
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    names = ["ng.png", "grey.png", "corrupt.png", "missing.png"]
    verdicts = inspector.judge_files([tmp_path / n for n in names])
    assert [v.verdict for v in verdicts] == ["NG", "OK", "ERROR", "ERROR"]
    assert "cannot read image" in verdicts[2].error and verdicts[3].frame.frame_id.endswith("missing.png")


def test_more_images_than_a_batch_are_judged_in_batches(inspector) -> None:
    images = [part(40, spot=(10, 10, 12) if i % 2 else None) for i in range(8)]  # max_batch 3: 3 + 3 + 2
    assert [v.verdict for v in inspector.judge_images(images)] == ["OK", "NG"] * 4


def test_k_sets_the_threshold_and_an_uncalibrated_bundle_is_refused(tmp_path) -> None:
    with Inspector(make_bundle(tmp_path / "b"), backend="onnxruntime", k=30) as strict:
        assert strict.threshold == pytest.approx(1.4)  # mu 0.4 + 30 * sigma 0.0333
        assert strict.describe()["threshold"] == strict.threshold
    with pytest.raises(BundleError, match="no calibration.yaml.*edge-calibrate --bundle"):
        Inspector(make_bundle(tmp_path / "raw", threshold=None), backend="onnxruntime")


def test_a_jpeg_cut_short_is_not_judged_where_opencv_would_fill_it_grey(inspector, tmp_path) -> None:
    """A camera still writing into the folder, a copy broken off: OpenCV decodes the half JPEG
    as a whole image with grey rows, which a model may pass as a good part."""
    noise = np.random.default_rng(0).integers(0, 12, (48, 64, 3), dtype=np.uint8)  # so the scan is most of the file
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(cv2.add(part(40, spot=(10, 10, 12)), noise), cv2.COLOR_RGB2BGR))
    whole, half = tmp_path / "whole.jpg", tmp_path / "half.jpg"
    whole.write_bytes(data.tobytes() + b"\0\0trailer after the end is allowed")
    half.write_bytes(data.tobytes()[: len(data) // 2])
    assert cv2.imread(str(half)) is not None, "OpenCV itself reads it"
    verdicts = inspector.judge_files([whole, half])
    assert [v.verdict for v in verdicts] == ["NG", "ERROR"] and "cut short" in verdicts[1].error
