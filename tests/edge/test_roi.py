"""source.roi and source.rotate: the line judges the part of the frame the config names, turned
as it says, in every source kind and in every tool that opens the line's sources (edge-run,
--check, edge-capture); a frame that does not contain the roi is an ERROR, never a guess."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, RoiConfig, parse_config
from edge.sources import crop_and_rotate

from .conftest import make_bundle, part
from .harness import decoded_bgr, pattern, run_to_the_end, start, write_config, write_video
from .test_capture import run_capture, write_line

FRAME = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)  # every pixel tells where it was


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_the_roi_is_cut_then_turned_clockwise(rotate: int) -> None:
    got = crop_and_rotate(FRAME, RoiConfig(x=1, y=2, width=5, height=3), rotate)
    assert np.array_equal(got, np.rot90(FRAME[2:5, 1:6], k=-rotate // 90))
    assert got.flags.c_contiguous


def test_an_open_roi_reaches_the_frame_edges() -> None:
    assert np.array_equal(crop_and_rotate(FRAME, RoiConfig(x=3, y=1), 0), FRAME[1:, 3:])
    assert np.array_equal(crop_and_rotate(FRAME, RoiConfig(), 0), FRAME)


@pytest.mark.parametrize("roi", [RoiConfig(x=4, width=5), RoiConfig(y=6), RoiConfig(height=7)])
def test_a_frame_that_does_not_contain_the_roi_is_refused(roi: RoiConfig) -> None:
    with pytest.raises(ValueError, match="the 8×6 frame does not contain source.roi .*: fix the roi or the camera's"):
        crop_and_rotate(FRAME, roi, 0)


@pytest.mark.parametrize(
    "source, key, says",
    [
        ({"rotate": 45}, "source.rotate", "must be 0, 90, 180 or 270 (degrees clockwise) (got 45)"),
        ({"rotate": 360}, "source.rotate", "must be 0, 90, 180 or 270 (degrees clockwise) (got 360)"),
        ({"roi": {"width": 0}}, "source.roi.width", "must be an integer from 1 to 65535 or null"),
        ({"roi": {"x": -5}}, "source.roi.x", "must be an integer from 0 to 65535"),
        ({"roi": {"widht": 100}}, "source.roi.widht", "did you mean 'width'?"),
        ({"roi": {"w": 100}}, "source.roi.w", "allowed keys: x, y, width, height"),
        ({"roi": [0, 0, 100, 100]}, "source.roi", "must be a mapping of keys"),
    ],
)
def test_roi_and_rotate_mistakes_name_the_key(tmp_path, source: dict, key: str, says: str) -> None:
    (tmp_path / "parts.mp4").write_bytes(b"")
    data = {
        "line": "l",
        "station": "s",
        "bundle": str(make_bundle(tmp_path / "b")),
        "source": {"kind": "video", "path": "parts.mp4", **source},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path / "line.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'line.yaml'}: {key}: ") and says in str(caught.value)


def run_line(tmp_path, frames: list[np.ndarray], **view) -> tuple[list[dict], dict]:
    tmp_path.mkdir(exist_ok=True)
    video = write_video(tmp_path / "v.avi", frames)
    config, endpoint = write_config(
        tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "video", "path": str(video), **view}
    )
    verdicts, final, _ = run_to_the_end(start(config), endpoint)
    return verdicts, final


def test_a_defect_outside_the_roi_is_not_judged_and_regions_are_in_the_turned_roi(tmp_path) -> None:
    # Every 3rd 64×48 part has a bright 12×12 spot at x 10, y 10 (NG on the whole frame).
    frames = pattern(9)
    right_half, _ = run_line(tmp_path / "right", frames, roi={"x": 32})
    assert [v["verdict"] for v in right_half] == ["OK"] * 9

    left_turned, _ = run_line(tmp_path / "left", frames, roi={"width": 32}, rotate=90)
    assert [v["verdict"] for v in left_turned] == ["NG", "OK", "OK"] * 3
    # The 32×48 crop turned clockwise is 48 wide and 32 high: the spot's rows 10-21 become
    # columns 47-21 = 26 to 47-10 = 37, its columns 10-21 its rows.
    x, y, w, h = left_turned[0]["regions"][0]["bbox"]
    assert abs(x - 26) <= 3 and abs(y - 10) <= 3 and abs(w - 12) <= 4 and abs(h - 12) <= 4


def test_frames_too_small_for_the_roi_are_errors_never_ok(tmp_path) -> None:
    verdicts, final = run_line(tmp_path, [part(40)] * 4, roi={"x": 40, "width": 40})
    assert [v["verdict"] for v in verdicts] == ["ERROR"] * 4 and final["counters"]["ok"] == 0
    assert "the 64×48 frame does not contain source.roi (x 40, y 0, width 40, height None)" in verdicts[0]["error"]


def test_edge_capture_records_what_the_line_judges(tmp_path) -> None:
    video = write_video(tmp_path / "top.avi", pattern(3))
    config = write_line(
        tmp_path,
        [
            {
                "station": "top",
                "source": {
                    "kind": "video",
                    "name": "top",
                    "path": str(video),
                    "roi": {"x": 8, "y": 4, "width": 40, "height": 30},
                    "rotate": 270,
                },
            }
        ],
    )
    result = run_capture(config, tmp_path / "captures", "--count", "3")
    assert result.returncode == 0, result.stderr
    saved = cv2.imread(str(tmp_path / "captures" / "top" / "000000.png"))
    assert saved.shape == (40, 30, 3)
    decoded = decoded_bgr(video)[0]
    assert np.array_equal(saved, cv2.rotate(decoded[4:34, 8:48], cv2.ROTATE_90_COUNTERCLOCKWISE))
