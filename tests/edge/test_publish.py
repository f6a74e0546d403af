"""The verdict message over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from edge.listen import Listener, Message, format_status, format_verdict
from edge.publish import Publisher, verdict_message
from edge.types import Frame, Region, Verdict


def test_verdict_reaches_prefix_subscriber_and_follows_schema():
    pub = Publisher("tcp://127.0.0.1:0")
    try:
        with Listener(pub.endpoint, "line3/") as sub:
            assert pub.wait_for_subscribers(1, 5.0, threading.Event())
            f = Frame("cam0", 7, "cam0:7", time.time(), None)
            v = Verdict(f, "NG", 0.91, 0.5, regions=[Region((1, 2, 3, 4), 12, 0.91)])
            pub.send("line3/st1", verdict_message(v, "line3", "st1", "b@abc", time.time()))
            msg = sub.recv(5.0)
    finally:
        pub.close()
    assert msg.topic == "line3/st1" and not msg.is_status
    d = msg.data
    assert set(d) >= {
        "schema",
        "line",
        "station",
        "seq",
        "frame_id",
        "t_grab",
        "t_publish",
        "verdict",
        "score",
        "threshold",
        "regions",
        "model",
    }
    assert (d["schema"], d["seq"], d["verdict"], d["regions"][0]["bbox"]) == (1, 7, "NG", [1, 2, 3, 4])
    assert "error" not in d
    assert "NG" in format_verdict(d) and "[1,2 3x4]" in format_verdict(d)


def test_other_line_does_not_receive():
    pub = Publisher("tcp://127.0.0.1:0")
    try:
        with Listener(pub.endpoint, "line4/") as sub:
            assert pub.wait_for_subscribers(1, 5.0, threading.Event())
            pub.send("line3/st1", {"x": 1})
            assert sub.recv(0.3) is None
    finally:
        pub.close()


def test_stalled_subscriber_never_blocks_send():
    """A subscriber that never reads: sends stay non-blocking however many verdicts go out."""
    pub = Publisher("tcp://127.0.0.1:0", sndhwm=10)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt_string(zmq.SUBSCRIBE, "")
    stalled.connect(pub.endpoint)
    try:
        assert pub.wait_for_subscribers(1, 5.0, threading.Event())
        t0 = time.monotonic()
        sent = [pub.send("l/s", {"i": i, "pad": "x" * 200}) for i in range(20000)]
        assert time.monotonic() - t0 < 10
        # XPUB drops at the subscriber's high-water mark without a word to the sender: README says
        # these losses are in no counter (publish_failed counts refused sends only).
        assert all(sent) and pub.failed == 0
    finally:
        stalled.close(0)
        ctx.term()
        pub.close()


def test_bind_conflict_is_a_clear_error():
    a = Publisher("tcp://127.0.0.1:0")
    try:
        try:
            Publisher(a.endpoint)
        except OSError as e:
            assert "publish.bind" in str(e) and "another edge-run" in str(e)
        else:
            raise AssertionError("second bind on the same port must fail")
    finally:
        a.close()


def test_status_format():
    d = {
        "state": "running",
        "counters": {"frames_in": 5, "ok": 3, "ng": 1, "error": 0, "dropped": 1},
        "queue_depth": 0,
        "latency_ms": {"p50": 1.0, "p99": 2.0},
        "source": {"state": "streaming"},
    }
    assert format_status(d).startswith("[status running] in 5 ok 3 ng 1 error 0 dropped 1")
    assert format_status(d).endswith("source streaming")
    d["source"] = {"state": "reconnecting", "problem": "device 'cam-42' not found"}
    assert format_status(d).endswith("source reconnecting (device 'cam-42' not found)")


def test_nan_is_never_sent_as_json():
    """NaN is not JSON: a PLC parser may drop the whole message. Nothing legitimate is non-finite
    (an ERROR's score is null), so a NaN reaching the socket is a bug that must not go out."""
    pub = Publisher("tcp://127.0.0.1:0")
    try:
        with pytest.raises(ValueError):
            pub.send("l/s", {"score": float("nan")})
        error = Verdict(Frame("cam0", 0, "cam0:0", 0.0, None, "no image"), "ERROR", None, 0.5, error="no image")
        assert pub.send("l/s", verdict_message(error, "l", "s", "m@0", 1.0))
    finally:
        pub.close()


def test_a_verdict_of_a_station_named_status_is_not_a_status():
    """The status topic is "<line>/<station>/status"; a verdict of a station named "status"
    (refused by the config now) on "<line>/status" must still print as a verdict."""
    assert not Message("line3/status", {"verdict": "NG"}).is_status
    assert Message("line3/status/status", {}).is_status and Message("line3/st1/status", {}).is_status
