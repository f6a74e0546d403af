"""edge-run --check: the line started up as the daemon would, one frame per camera judged and
printed, nothing published; its exit status says whether every camera's frame was judged."""

from __future__ import annotations

import subprocess
import threading

import cv2
import numpy as np

from edge.check import check_line, first_frames
from edge.config import load_config
from edge.daemon import Daemon
from edge.listen import Listener
from edge.sources import Source

from .conftest import make_bundle, part
from .harness import EDGE_RUN, pattern, write_config, write_video


def run_check(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EDGE_RUN, "--config", str(config), "--check", *args], capture_output=True, text=True, timeout=120
    )


def test_check_judges_one_frame_per_camera_and_says_what_it_saw(tmp_path):
    ok_video = write_video(tmp_path / "ok.avi", [part(40)] * 5)
    ng_video = write_video(tmp_path / "ng.avi", [part(40, spot=(10, 10, 12))] * 5)
    streams = [
        {"station": "top", "source": {"kind": "video", "name": "top", "path": str(ok_video)}},
        {"station": "side", "source": {"kind": "video", "name": "side", "path": str(ng_video)}},
    ]
    config, endpoint = write_config(tmp_path, make_bundle(tmp_path / "bundle"), None, streams=streams)

    result = run_check(config, "--check-out", str(tmp_path / "heatmaps"))

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # The frames under their heatmaps, OK and NG alike, at the frames' own size.
    assert lines[-2:] == [f"heatmap  {tmp_path / 'heatmaps' / name}.png" for name in ("top", "side")]
    for name in ("top", "side"):
        assert cv2.imread(str(tmp_path / "heatmaps" / f"{name}.png")).shape == (48, 64, 3)
    lines = lines[:-2]
    assert lines[0].startswith(f"bundle   {tmp_path / 'bundle'} (32×32 input), threshold 0.5 (calibrated on 20")
    assert lines[1].startswith("backend  onnxruntime") and "CPUExecutionProvider" in lines[1]
    assert lines[2:4] == ["history  none: unsigned (no manifest.json)", "trust    not checked: trust.keys is not set"]
    assert lines[4] == f"publish  {endpoint} bound"
    top, side = (next(line for line in lines if line.startswith(name)) for name in ("top ", "side "))
    assert "64×48 frame → OK, score" in top
    assert "64×48 frame → NG, score" in side and "1 region(s), strongest at bbox" in side
    assert lines[-1].startswith("2 of 2 streams judged; inference") and lines[-1].endswith("nothing was published")


def test_a_camera_that_gives_no_frame_fails_the_check(tmp_path):
    good = write_video(tmp_path / "good.avi", pattern(3))
    streams = [
        {"station": "top", "source": {"kind": "video", "name": "top", "path": str(good)}},
        {
            "station": "side",
            "source": {
                "kind": "camera",
                "name": "side",
                "url": str(tmp_path / "absent.avi"),
                "reconnect": {"initial_s": 0.05, "max_s": 0.1},
            },
        },
    ]
    config, _ = write_config(tmp_path, make_bundle(tmp_path / "bundle"), None, streams=streams)

    result = run_check(config, "--check-timeout", "1")

    assert result.returncode == 1, result.stdout + result.stderr
    side = next(line for line in result.stdout.splitlines() if line.startswith("side "))
    assert "no frame within 1 s (source reconnecting" in side
    assert result.stdout.splitlines()[-1].startswith("1 of 2 streams judged")


def test_a_start_up_error_is_exit_2_with_the_reason(tmp_path):
    config, _ = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle", threshold=None),
        {"kind": "video", "path": str(write_video(tmp_path / "v.avi", pattern(2)))},
    )
    result = run_check(config)
    assert result.returncode == 2 and "no calibration.yaml" in result.stderr and result.stdout == ""


def test_a_subscriber_gets_nothing_from_a_check(tmp_path):
    video = write_video(tmp_path / "v.avi", pattern(6))
    config, endpoint = write_config(tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "video", "path": str(video)})
    daemon = Daemon(load_config(config))
    try:
        with Listener(endpoint, "") as listener:
            # Subscribed for sure before the check starts: a published verdict would arrive.
            assert daemon.publisher.wait_for_subscribers(1, 10.0, threading.Event())
            checks = check_line(daemon, 10.0)
            assert [c.verdict.verdict for c in checks] == ["NG"]  # pattern(6)'s first part has the defect
            assert listener.recv(0.5) is None
    finally:
        daemon.close()


class LateCamera(Source):
    """Open and silent until the check gives up, then a frame arrives while it stops: a 1 frame/s
    camera whose first frame lands in the fetch that is still waiting at the deadline."""

    def frames(self, stop: threading.Event):
        self.state = "streaming"
        stop.wait()
        yield self._emit_rgb("late", np.zeros((8, 8, 3), np.uint8))


def test_a_frame_that_comes_after_the_deadline_does_not_count():
    ((frame, seconds, state),) = first_frames([LateCamera("slow")], 0.2).values()
    assert (frame, seconds, state) == (None, 0.2, "streaming")
