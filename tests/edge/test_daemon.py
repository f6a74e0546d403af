"""The daemon as users run it: a real `edge-run` process on a real video file, a real ZeroMQ
subscriber on loopback. Every frame grabbed must end as one published verdict or a counted drop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.listen import Listener

from .conftest import make_bundle, part

EDGE_RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main; sys.exit(run_main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def pattern(n: int) -> list[np.ndarray]:
    """Every 3rd part has a bright defect (NG under the brightness model), the rest are dark (OK)."""
    return [part(40, (48, 64), spot=(10, 10, 12) if i % 3 == 0 else None) for i in range(n)]


def start_daemon(tmp_path: Path, video: Path, **overrides) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = {"line": "line3", "station": "st1", "bundle": str(make_bundle(tmp_path / "bundle")),
           "source": {"kind": "video", "path": str(video)},
           "batch": {"max_batch": 4, "max_wait_ms": 5},
           "queue": {"size": 64, "overflow": "block"},
           "publish": {"bind": f"tcp://127.0.0.1:{port}", "heartbeat_s": 0.2, "wait_for_subscribers": 1,
                       "wait_timeout_s": 20}}
    for key, value in overrides.items():
        cfg[key].update(value)
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(EDGE_RUN + ["--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "EDGE_ORT_THREADS": "1"})
    return proc, f"tcp://127.0.0.1:{port}"


def collect(listener: Listener, proc: subprocess.Popen, on_verdict=None, timeout_s: float = 60):
    """Verdicts until the daemon's final status (state 'stopped')."""
    verdicts, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = listener.recv(1.0)
        if msg is None:
            assert proc.poll() is None, f"daemon exited without a final status:\n{proc.stdout.read()}"
            continue
        if msg.is_status:
            if msg.data["state"] == "stopped":
                return verdicts, msg.data
            continue
        verdicts.append(msg.data)
        if on_verdict:
            on_verdict(len(verdicts))
    raise AssertionError("no final status in time")


def test_every_frame_of_a_video_gets_its_verdict(tmp_path):
    video = write_video(tmp_path / "parts.avi", pattern(45))
    proc, endpoint = start_daemon(tmp_path, video)
    with Listener(endpoint, "line3/") as listener:
        verdicts, final = collect(listener, proc)
    assert proc.wait(20) == 0
    assert len(verdicts) == 45 == final["counters"]["frames_in"]
    assert [v["seq"] for v in verdicts] == list(range(45))
    expected = ["NG" if i % 3 == 0 else "OK" for i in range(45)]
    assert [v["verdict"] for v in verdicts] == expected
    ng = verdicts[0]
    assert ng["regions"] and ng["score"] > ng["threshold"] and ng["model"].startswith("bundle@")
    x, y, w, h = ng["regions"][0]["bbox"]       # the 12x12 spot at (10,10) in the 64x48 frame
    assert abs(x - 10) <= 3 and abs(y - 10) <= 3 and abs(w - 12) <= 4 and abs(h - 12) <= 4
    c = final["counters"]
    assert (c["ok"], c["ng"], c["error"], c["dropped"], c["in_flight"]) == (30, 15, 0, 0, 0)
    assert final["latency_ms"]["n"] == 45 and final["latency_ms"]["p99"] is not None


def test_sigterm_mid_stream_loses_nothing(tmp_path):
    video = write_video(tmp_path / "parts.avi", pattern(30))
    # A looping video paced like a camera, and a drop-oldest queue: the live configuration.
    proc, endpoint = start_daemon(tmp_path, video, source={"loop": True, "fps": 200},
                                  queue={"size": 8, "overflow": "drop_oldest"})
    sent = []

    def terminate_after_50(n):
        if n == 50 and not sent:
            proc.send_signal(signal.SIGTERM)
            sent.append(time.monotonic())

    with Listener(endpoint, "line3/") as listener:
        verdicts, final = collect(listener, proc, on_verdict=terminate_after_50)
    assert sent, "SIGTERM was never sent"
    assert proc.wait(20) == 0
    c = final["counters"]
    assert len(verdicts) == c["ok"] + c["ng"] + c["error"]
    assert c["frames_in"] == len(verdicts) + c["dropped"] and c["in_flight"] == 0
    assert len(verdicts) >= 50 and c["error"] == 0
    seqs = [v["seq"] for v in verdicts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] + 1 == c["frames_in"], "seq gaps are exactly the dropped frames"


def test_bad_config_is_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("line: line3\nstation: st1\nbundle: nowhere\nsource: {kind: video, path: x.avi}\n")
    r = subprocess.run(EDGE_RUN + ["--config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "bundle" in r.stderr


def test_uncalibrated_bundle_is_refused_with_the_fix(tmp_path):
    video = write_video(tmp_path / "parts.avi", pattern(3))
    bundle = make_bundle(tmp_path / "raw", threshold=None)
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump({"line": "l", "station": "s", "bundle": str(bundle),
                                    "source": {"kind": "video", "path": str(video)}}))
    r = subprocess.run(EDGE_RUN + ["--config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "edge-calibrate --bundle" in r.stderr
