"""edge-capture: a line's cameras recorded to image files, with no model yet: real video files
and the genicam package's virtual GenTL camera, through the edge-capture command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from export.data import split_training_data

from .harness import decoded_bgr, pattern, write_video

EDGE_CAPTURE = [sys.executable, "-c", "import sys; from edge.capture import main; sys.exit(main())"]


def write_line(tmp_path: Path, streams: list[dict]) -> Path:
    """A line config with no bundle key at all: the line has no model yet."""
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump({"line": "line3", "streams": streams}))
    return path


def run_capture(config: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EDGE_CAPTURE, "--config", str(config), "--out", str(out), *args], capture_output=True, text=True, timeout=120
    )


def video_stream(name: str, path: Path) -> dict:
    return {"station": name, "source": {"kind": "video", "name": name, "path": str(path)}}


def test_frames_are_saved_losslessly_and_a_later_capture_adds_to_them(tmp_path: Path) -> None:
    frames = pattern(12)
    config = write_line(tmp_path, [video_stream("top", write_video(tmp_path / "top.avi", frames))])
    out = tmp_path / "captures"

    first = run_capture(config, out, "--count", "5")
    second = run_capture(config, out, "--count", "5")

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == f"top: 5 of 5 frames saved in {out / 'top'}"
    files = sorted(p.name for p in (out / "top").iterdir())
    assert files == [f"{i:06d}.png" for i in range(10)]
    # What the line's video decoder gave, pixel for pixel (RGB frames written back as BGR PNG).
    decoded = decoded_bgr(tmp_path / "top.avi")
    assert all(np.array_equal(cv2.imread(str(out / "top" / f"{i:06d}.png")), decoded[i]) for i in range(5))
    # export-engine takes the folder as it is.
    assert len(split_training_data(out / "top", 0.2, 0).train) == 8


def test_a_short_or_dead_stream_is_reported_and_fails_the_run(tmp_path: Path) -> None:
    config = write_line(
        tmp_path,
        [
            video_stream("short", write_video(tmp_path / "short.avi", pattern(3))),
            {
                "station": "gone",
                "source": {
                    "kind": "camera",
                    "name": "gone",
                    "url": str(tmp_path / "absent.avi"),
                    "reconnect": {"initial_s": 0.05, "max_s": 0.1},
                },
            },
        ],
    )
    result = run_capture(config, tmp_path / "out", "--count", "5", "--timeout", "1")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"short: 3 of 5 frames saved in {tmp_path / 'out' / 'short'} (the source ended)"
    assert lines[1].startswith(
        f"gone: 0 of 5 frames saved in {tmp_path / 'out' / 'gone'} (no usable frame for 1 s "
        f"(source reconnecting; cannot open it))"
    )
    assert not (tmp_path / "out" / "gone").exists()


def test_a_stream_of_only_unusable_frames_times_out_with_the_reason(tmp_path: Path) -> None:
    """Frames keep coming but none can be saved (the roi does not fit them): the stream is dead
    for the capture, after --timeout, with one warning rather than one per frame."""
    stream = video_stream("top", write_video(tmp_path / "top.avi", pattern(5)))
    stream["source"].update(loop=True, fps=50, roi={"x": 0, "y": 0, "width": 640, "height": 480})
    result = run_capture(write_line(tmp_path, [stream]), tmp_path / "out", "--count", "3", "--timeout", "1")
    assert result.returncode == 1
    assert re.fullmatch(
        r"top: 0 of 3 frames saved in \S+ \(\d+ unreadable, no usable frame for 1 s \(source "
        r"streaming; the \d+×\d+ frame does not contain source.roi .*\)\)\n",
        result.stdout,
    )
    assert result.stderr.count("not saved") == 1


def test_only_the_streams_asked_for_and_a_wrong_name_says_the_right_ones(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", pattern(4))
    config = write_line(tmp_path, [video_stream("top", video), video_stream("side", video)])
    result = run_capture(config, tmp_path / "out", "--count", "2", "--stream", "side")
    assert result.returncode == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["side"]
    wrong = run_capture(config, tmp_path / "out", "--stream", "front")
    assert wrong.returncode == 2 and "--stream front: not in the config; its streams are top, side" in wrong.stderr


def test_the_daemon_still_insists_on_a_bundle(tmp_path: Path) -> None:
    config = write_line(tmp_path, [video_stream("top", write_video(tmp_path / "v.avi", pattern(2)))])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from edge.cli import run_main; sys.exit(run_main())",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "bundle: required key is missing" in result.stderr


def test_a_genicam_camera_is_captured_with_its_features(tmp_path: Path) -> None:
    genicam = pytest.importorskip("genicam", reason="needs the genicam extra")
    cti = Path(genicam.__file__).parent / "viky.cti"
    config = write_line(
        tmp_path,
        [
            {
                "station": "green",
                "source": {
                    "kind": "genicam",
                    "name": "green",
                    "cti": str(cti),
                    "device": "1",
                    "features": {"PixelFormat": "Mono8", "Width": 320},
                },
            }
        ],
    )
    result = run_capture(config, tmp_path / "out", "--count", "4", "--interval", "0.1")
    assert result.returncode == 0, result.stderr
    images = [cv2.imread(str(p)) for p in sorted((tmp_path / "out" / "green").glob("*.png"))]
    assert len(images) == 4 and all(i.shape == (400, 320, 3) for i in images)
    assert all(np.array_equal(i[..., 0], i[..., 1]) for i in images)  # Mono8: grey in, grey out
