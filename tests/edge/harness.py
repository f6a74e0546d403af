"""Running the real daemon in tests: a config on disk, an `edge-run` process, a subscriber."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from edge.listen import Listener

from .conftest import part

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


def decoded_bgr(path: Path) -> list[np.ndarray]:
    """A video's frames as the line's own source decodes them (MJPEG: by libjpeg, each frame at
    its own size; OpenCV's FFmpeg decoder may differ by a grey level), in BGR."""
    from edge.sources import VideoFileSource

    return [cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR) for f in VideoFileSource(path).frames(threading.Event())]


def pattern(n: int) -> list[np.ndarray]:
    """Every 3rd part has a bright defect (NG under the brightness model), the rest are dark (OK)."""
    return [part(40, (48, 64), spot=(10, 10, 12) if i % 3 == 0 else None) for i in range(n)]


def write_config(tmp_path: Path, bundle: Path, source: dict | None, **sections) -> tuple[Path, str]:
    """A line config judging `source` with `bundle` (source None: pass streams=[...] instead);
    sections override/extend the defaults here."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    camera = {"station": "st1", "source": source} if source is not None else {}
    cfg = {
        "line": "line3",
        **camera,
        "bundle": str(bundle),
        "batch": {"max_batch": 4, "max_wait_ms": 5},
        "queue": {"size": 64, "overflow": "block"},
        "publish": {"bind": endpoint, "heartbeat_s": 0.2, "wait_for_subscribers": 1, "wait_timeout_s": 20},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) else value
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, endpoint


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*EDGE_RUN, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "EDGE_ORT_THREADS": "1"},
    )


def collect(
    listener: Listener, proc: subprocess.Popen, on_verdict=None, timeout_s: float = 60, streams: int = 1, on_status=None
):
    """Verdicts and statuses until the daemon's final status (state 'stopped') for every stream;
    on_verdict(n, verdict) after the n-th verdict, on_status(n, status) after every status but
    the final ones, n being the verdicts so far."""
    verdicts, statuses, stopped, deadline = [], [], 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = listener.recv(1.0)
        if msg is None:
            assert proc.poll() is None, f"daemon exited without a final status:\n{proc.stdout.read()}"
            continue
        if msg.is_status:
            statuses.append(msg.data)
            stopped += msg.data["state"] == "stopped"
            if stopped == streams:
                return verdicts, msg.data, statuses
            if on_status and msg.data["state"] != "stopped":
                on_status(len(verdicts), msg.data)
            continue
        verdicts.append(msg.data)
        if on_verdict:
            on_verdict(len(verdicts), msg.data)
    proc.kill()
    raise AssertionError(f"no final status in time:\n{proc.stdout.read()}")


def assert_accounted(verdicts: list[dict], final: dict) -> None:
    """The daemon's promise: every frame in is one verdict out or one counted drop."""
    c = final["counters"]
    assert c["in_flight"] == 0
    assert len(verdicts) == c["ok"] + c["ng"] + c["error"]
    assert c["frames_in"] == len(verdicts) + c["dropped"]


def run_to_the_end(
    proc: subprocess.Popen, endpoint: str, on_verdict: Callable[[int, dict], object] | None = None
) -> tuple[list[dict], dict, list[dict]]:
    """Listen to a started daemon until its final status (``collect``); it must then exit 0
    with every frame accounted for. Returns the verdicts, the final status and all statuses."""
    with Listener(endpoint, "line3/") as listener:
        verdicts, final, statuses = collect(listener, proc, on_verdict)
    assert proc.wait(20) == 0
    assert_accounted(verdicts, final)
    return verdicts, final, statuses
