"""Fault injection on the real daemon: a real `edge-run` process, real sockets on loopback,
each fault bounded in time. In every case: frames in = verdicts out + counted drops, nothing
judged OK that was not judged, and the daemon keeps running (or exits 0 when told to stop)."""

from __future__ import annotations

import signal

import cv2
import yaml
import zmq

from edge.listen import Listener

from .conftest import folder_with_an_oversized_image, make_bundle, part
from .harness import assert_accounted, collect, pattern, run_to_the_end, start, write_config, write_video


def test_inference_exception_gives_error_never_ok(tmp_path):
    # Saturated spots make this model fail inside ONNX Runtime; dark parts run normally.
    bundle = make_bundle(tmp_path / "bundle", fail_on_saturated=True)
    frames = [part(40, (48, 64), spot=(5, 5, 4) if i in (7, 20, 21) else None) for i in range(40)]
    video = write_video(tmp_path / "v.avi", frames)
    config, endpoint = write_config(tmp_path, bundle, {"kind": "video", "path": str(video)}, batch={"max_batch": 1})
    verdicts, _, _ = run_to_the_end(start(config), endpoint)
    by_seq = {v["seq"]: v for v in verdicts}
    assert [s for s, v in by_seq.items() if v["verdict"] == "ERROR"] == [7, 20, 21]
    assert all(v["verdict"] == "OK" for s, v in by_seq.items() if s not in (7, 20, 21))
    assert "inference failed" in by_seq[7]["error"] and by_seq[7]["score"] is None


def test_bad_files_in_an_image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "00_ok.png"), part(40))
    (folder / "01_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cv2.imwrite(str(folder / "02_gray.png"), part(40)[:, :, 0])
    cv2.imwrite(str(folder / "03_big.png"), part(40, (480, 640), spot=(100, 100, 120)))
    cv2.imwrite(str(folder / "04_tiny.png"), part(40, (4, 4)))
    config, endpoint = write_config(tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "images", "path": str(folder)})
    verdicts, _, _ = run_to_the_end(start(config), endpoint)
    got = {v["frame_id"]: v for v in verdicts}
    assert [got[n]["verdict"] for n in sorted(got)] == ["OK", "ERROR", "OK", "NG", "ERROR"]
    assert "01_corrupt.png" in got["01_corrupt.png"]["error"] and "too small" in got["04_tiny.png"]["error"]
    x, y, w, h = got["03_big.png"]["regions"][0]["bbox"]  # found in the 640x480 frame's own pixels
    assert abs(x - 100) <= 12 and abs(y - 100) <= 12 and abs(w - 120) <= 25 and abs(h - 120) <= 25


def test_camera_drop_and_return(tmp_path):
    # OpenCV opens a file path as a camera URL; its end is a drop-out, and it comes back.
    video = write_video(tmp_path / "cam.avi", pattern(10))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "camera", "url": str(video), "reconnect": {"initial_s": 0.05, "max_s": 0.2}},
        queue={"overflow": "drop_oldest"},
    )
    proc = start(config)
    _, final, statuses = run_to_the_end(
        proc, endpoint, on_verdict=lambda n, _m: n == 35 and proc.send_signal(signal.SIGTERM)
    )
    assert final["source"]["reconnects"] >= 3, "35 frames from a 10-frame camera means it came back 3 times"
    assert final["counters"]["error"] == 0 and {s["source"]["state"] for s in statuses} <= {
        "connecting",
        "streaming",
        "reconnecting",
        "ended",
    }


def test_stalled_subscriber_does_not_stop_the_line(tmp_path):
    """One subscriber stops reading: its messages are dropped at the high-water mark; the line and
    the subscriber that keeps reading lose nothing."""
    n = 30000  # enough to overflow the stalled peer's pipe and the kernel's socket buffers on loopback
    video = write_video(tmp_path / "v.avi", pattern(30))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "loop": True, "fps": 10000},
        batch={"max_batch": 16},
        publish={"sndhwm": 1000, "wait_for_subscribers": 2},
    )
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)  # connects, subscribes, then never reads
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.setsockopt_string(zmq.SUBSCRIBE, "line3/st1")
    stalled.connect(endpoint)
    proc = start(config)
    try:
        with Listener(endpoint, "line3/") as listener:
            # 30000 parts are CPU-bound work: some 15 s on an idle 2-core machine, three times that
            # on a busy one; collect's default 60 s would fail a line that is only slow.
            verdicts, final, _ = collect(
                listener, proc, timeout_s=300, on_verdict=lambda k, _m: k == n and proc.send_signal(signal.SIGTERM)
            )
        stalled_got = 0
        while stalled.poll(200):
            stalled.recv_multipart()
            stalled_got += 1
    finally:
        stalled.close(0)
        ctx.term()
    assert proc.wait(20) == 0
    assert_accounted(verdicts, final)
    assert len(verdicts) >= n and final["counters"]["dropped"] == 0
    assert stalled_got < len(verdicts), "the stalled subscriber's messages were dropped, not waited for"


def test_sighup_swaps_a_good_bundle_and_refuses_a_broken_one(tmp_path):
    video = write_video(tmp_path / "v.avi", pattern(30))
    first = make_bundle(tmp_path / "first")
    config, endpoint = write_config(
        tmp_path,
        first,
        {"kind": "video", "path": str(video), "loop": True, "fps": 100},
        queue={"overflow": "drop_oldest"},
    )
    second = make_bundle(tmp_path / "second", height=16, width=16)  # another model: another hash
    broken = make_bundle(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"garbage")

    def point_to(bundle):
        cfg = yaml.safe_load(config.read_text())
        cfg["bundle"] = str(bundle)
        config.write_text(yaml.safe_dump(cfg))

    proc = start(config)
    models, phase = [], {"n": 0}

    def drive(n, msg):
        models.append(msg["model"])
        if n == 20:
            point_to(second)
            proc.send_signal(signal.SIGHUP)
        elif phase["n"] == 0 and msg["model"].startswith("second@"):
            phase["n"] = n
            point_to(broken)
            proc.send_signal(signal.SIGHUP)
        elif phase["n"] and n == phase["n"] + 40:
            proc.send_signal(signal.SIGTERM)

    _, final, _ = run_to_the_end(proc, endpoint, on_verdict=drive)
    names = [m.split("@")[0] for m in models]
    switch = names.index("second")
    assert set(names[:switch]) == {"first"} and set(names[switch:]) == {"second"}, "one clean switch, never back"
    assert final["reloads"]["ok"] == 1 and final["reloads"]["refused"] == 1
    assert "broken" in final["reloads"]["last_error"] and final["model"].startswith("second@")
    assert final["counters"]["error"] == 0


def test_a_grabber_that_dies_is_logged_counted_and_fails_the_run(tmp_path):
    """Before the fix the grab thread died, the line ended 'cleanly' and the daemon exited 0."""
    folder = folder_with_an_oversized_image(tmp_path)
    config, endpoint = write_config(tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "images", "path": str(folder)})
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        verdicts, final, _ = collect(listener, proc)
    assert proc.wait(20) == 1, "a stream the line stopped judging is no success"
    log = proc.stdout.read()
    assert_accounted(verdicts, final)
    assert [v["frame_id"] for v in verdicts] == ["00_ok.png"]
    assert final["counters"]["grab_errors"] == 1 and final["source"]["state"] == "failed"
    assert "error" in final["source"]["problem"] and "stream cam0: its grabber failed" in log


def test_a_grabber_of_an_endless_source_that_raises_starts_again(tmp_path):
    """A looping folder stands in for a camera: each exception is a dropout, retried after a back-off."""
    folder = folder_with_an_oversized_image(tmp_path)
    config, endpoint = write_config(
        tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "images", "path": str(folder), "loop": True}
    )
    proc = start(config)
    _, final, statuses = run_to_the_end(
        proc, endpoint, on_verdict=lambda n, _m: n == 4 and proc.send_signal(signal.SIGTERM)
    )
    assert final["counters"]["grab_errors"] >= 1 and final["source"]["reconnects"] >= 1
    assert final["counters"]["ok"] >= 4, "judging went on across the restarts"
    assert "reconnecting" in {s["source"]["state"] for s in statuses}
