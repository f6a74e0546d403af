"""The daemon as users run it: a real `edge-run` process on a real video file, a real ZeroMQ
subscriber on loopback. Every frame grabbed must end as one published verdict or a counted drop."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import yaml

from edge.listen import Listener

from .conftest import make_bundle
from .harness import EDGE_RUN, assert_accounted, collect, pattern, start, write_config, write_video


def test_every_frame_of_a_video_gets_its_verdict(tmp_path):
    video = write_video(tmp_path / "parts.avi", pattern(45))
    config, endpoint = write_config(tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "video", "path": str(video)})
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        verdicts, final, _ = collect(listener, proc)
    assert proc.wait(20) == 0
    assert len(verdicts) == 45 == final["counters"]["frames_in"]
    assert [v["seq"] for v in verdicts] == list(range(45))
    assert [v["verdict"] for v in verdicts] == ["NG" if i % 3 == 0 else "OK" for i in range(45)]
    ng = verdicts[0]
    assert ng["regions"] and ng["score"] > ng["threshold"] and ng["model"].startswith("bundle@")
    x, y, w, h = ng["regions"][0]["bbox"]  # the 12x12 spot at (10,10) in the 64x48 frame
    assert abs(x - 10) <= 3 and abs(y - 10) <= 3 and abs(w - 12) <= 4 and abs(h - 12) <= 4
    c = final["counters"]
    assert (c["ok"], c["ng"], c["error"], c["dropped"], c["in_flight"]) == (30, 15, 0, 0, 0)
    assert final["latency_ms"]["n"] == 45 and final["latency_ms"]["p99"] is not None


def test_sigterm_mid_stream_loses_nothing(tmp_path):
    video = write_video(tmp_path / "parts.avi", pattern(30))
    # A looping video paced like a camera, and a drop-oldest queue: the live configuration.
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "loop": True, "fps": 200},
        queue={"size": 8, "overflow": "drop_oldest"},
    )
    proc = start(config)
    sent = []

    def terminate_after_50(n, _msg):
        if n == 50 and not sent:
            proc.send_signal(signal.SIGTERM)
            sent.append(n)

    with Listener(endpoint, "line3/") as listener:
        verdicts, final, _ = collect(listener, proc, on_verdict=terminate_after_50)
    assert sent, "SIGTERM was never sent"
    assert proc.wait(20) == 0
    assert_accounted(verdicts, final)
    assert len(verdicts) >= 50 and final["counters"]["error"] == 0
    seqs = [v["seq"] for v in verdicts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] + 1 == final["counters"]["frames_in"], "seq gaps are exactly the dropped frames"


def test_bad_config_is_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("line: line3\nstation: st1\nbundle: nowhere\nsource: {kind: video, path: x.avi}\n")
    r = subprocess.run([*EDGE_RUN, "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "bundle" in r.stderr


def test_uncalibrated_bundle_is_refused_with_the_fix(tmp_path):
    video = write_video(tmp_path / "parts.avi", pattern(3))
    bundle = make_bundle(tmp_path / "raw", threshold=None)
    path = tmp_path / "line.yaml"
    path.write_text(
        yaml.safe_dump(
            {"line": "l", "station": "s", "bundle": str(bundle), "source": {"kind": "video", "path": str(video)}}
        )
    )
    r = subprocess.run([*EDGE_RUN, "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "edge-calibrate --bundle" in r.stderr


def test_a_burst_of_signals_never_hangs_the_line(tmp_path):
    """Signals come in bursts (Ctrl-C pressed twice, systemd's SIGTERM after a reload, a script that
    reloads in a loop). Each is taken in turn: none may catch the daemon halfway through handling
    another (a signal handler that sets an Event while the code it interrupted holds that Event's
    lock hangs the process for good)."""
    video = write_video(tmp_path / "parts.avi", pattern(30))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "loop": True, "fps": 200},
        queue={"overflow": "drop_oldest"},
        log_level="WARNING",
    )  # thousands of reload lines would fill start()'s pipe
    proc = start(config)

    def signals() -> None:
        for signum, seconds in ((signal.SIGHUP, 3.0), (signal.SIGTERM, 1.0)):
            end = time.monotonic() + seconds
            while time.monotonic() < end and proc.poll() is None:
                proc.send_signal(signum)
                time.sleep(0.0005)

    sender = threading.Thread(target=signals)
    with Listener(endpoint, "line3/") as listener:
        verdicts, final, _ = collect(listener, proc, on_verdict=lambda n, _m: n == 20 and sender.start(), timeout_s=60)
    sender.join()
    assert proc.wait(20) == 0
    assert_accounted(verdicts, final)
    assert final["reloads"]["ok"] >= 1
