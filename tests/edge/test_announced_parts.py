"""Parts announced by the PLC over ZeroMQ: each gets the verdict of the frame its camera takes
next, with its part id, by its deadline, or an ERROR "deadline" at it. The real daemon, the real
edge-plc-sim, real sockets."""

from __future__ import annotations

import json
import signal

import zmq

from edge.listen import Listener

from .harness import collect, start
from .plant_harness import camera_line, plc_sim


def _request(endpoint: str, payload: bytes) -> dict:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(payload)
        assert sock.poll(10_000, zmq.POLLIN), "no reply"
        return json.loads(sock.recv())
    finally:
        sock.close()
        ctx.term()


def _stop(proc, listener) -> tuple[list[dict], dict]:
    proc.send_signal(signal.SIGTERM)
    verdicts, final, _ = collect(listener, proc)
    assert proc.wait(20) == 0
    return verdicts, final


def test_200_parts_at_a_rate_the_line_takes_all_get_their_verdict_in_time(tmp_path):
    config, endpoint, _ = camera_line(tmp_path, fps=40, deadline_ms=2000)
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        code, out, results = plc_sim(config, tmp_path / "sim.json", "--rate", "20", "--parts", "200", "--prefix", "P")
        verdicts, final = _stop(proc, listener)
    assert code == 0, out
    assert len(results) == 200 and all(r["outcome"] == "in_time" for r in results), out
    assert all(r["latency_ms"] <= r["deadline_ms"] and r["verdict"] in ("OK", "NG") for r in results)
    assert "200 answered in time, 0 late" in out
    parts = [v for v in verdicts if "part_id" in v]
    # The frame the camera takes next after each announcement, in the order they were announced.
    assert [v["part_id"] for v in parts] == [f"P-{i:05d}" for i in range(200)]
    assert all(v["t_grab"] >= v["t_announce"] and not v["late"] for v in parts)
    assert [v["seq"] for v in parts] == sorted({v["seq"] for v in parts})
    assert len(verdicts) == len(parts), "unannounced frames are skipped on this line"
    c = final["parts"]
    assert (c["announced"], c["in_time"], c["deadline"], c["late"], c["pending"]) == (200, 200, 0, 0, 0)
    assert c["skipped_frames"] > 0


def test_parts_faster_than_the_camera_are_all_answered_the_late_ones_error_deadline(tmp_path):
    # 100 parts a second for a camera that takes 25 frames a second: the line cannot keep up.
    config, endpoint, _ = camera_line(tmp_path, fps=25, deadline_ms=400)
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        code, out, results = plc_sim(config, tmp_path / "sim.json", "--rate", "100", "--parts", "200", "--prefix", "F")
        verdicts, final = _stop(proc, listener)
    assert code == 0, out  # every part answered, none missing
    outcomes = [r["outcome"] for r in results]
    assert len(results) == 200 and outcomes.count("missing") == 0 and outcomes.count("refused") == 0
    errors = [r for r in results if r["error"] == "deadline"]
    assert errors and all(r["verdict"] == "ERROR" and r["outcome"] == "late" for r in errors), out
    # Late by this side's clock only, not at the line's: sent before the deadline, received just after it.
    late_judged = [r for r in results if r["outcome"] == "late" and r["error"] != "deadline"]
    assert all(r["latency_ms"] < r["deadline_ms"] + 100 for r in late_judged), out
    assert outcomes.count("in_time") > 0
    # Each part's first message is its answer; a verdict that came after its deadline ERROR is flagged late.
    first: dict[str, dict] = {}
    for v in verdicts:
        if "part_id" in v:
            if v["part_id"] in first:
                assert v["late"] and first[v["part_id"]]["error"] == "deadline"
            first.setdefault(v["part_id"], v)
    assert len(first) == 200
    c = final["parts"]
    assert c["announced"] == 200 == c["in_time"] + c["deadline"] and c["pending"] == 0
    assert c["deadline"] == len(errors) and c["late"] == sum(v.get("late", False) for v in verdicts)


def test_parts_for_a_dead_camera_are_answered_error_at_their_deadlines(tmp_path):
    config, endpoint, _ = camera_line(tmp_path, deadline_ms=300, dead=True)
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        code, out, results = plc_sim(config, tmp_path / "sim.json", "--rate", "20", "--parts", "20")
        verdicts, final = _stop(proc, listener)
    assert code == 0, out
    assert len(results) == 20 and all(r["verdict"] == "ERROR" and r["error"] == "deadline" for r in results), out
    assert all(300 <= r["latency_ms"] < 300 + 1000 for r in results), [r["latency_ms"] for r in results]
    assert all(v["seq"] is None and v["frame_id"] is None for v in verdicts), "never photographed"
    assert final["parts"]["deadline"] == 20 and final["counters"]["frames_in"] == 0


def test_a_bad_announcement_is_refused_with_the_reason_and_the_line_goes_on(tmp_path):
    config, endpoint, trigger = camera_line(tmp_path, fps=20)
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        assert _request(trigger, b"not json")["accepted"] is False
        unknown = _request(trigger, json.dumps({"stream": "cam9", "part_id": "A"}).encode())
        assert unknown["accepted"] is False and "unknown stream 'cam9'" in unknown["error"]
        empty = _request(trigger, json.dumps({"stream": "cam0", "part_id": ""}).encode())
        assert empty["accepted"] is False and "part_id" in empty["error"]
        bad_deadline = _request(trigger, json.dumps({"stream": "cam0", "part_id": "A", "deadline_ms": -1}).encode())
        assert bad_deadline["accepted"] is False and "deadline_ms" in bad_deadline["error"]
        first = _request(trigger, json.dumps({"stream": "cam0", "part_id": "A", "deadline_ms": 60_000}).encode())
        again = _request(trigger, json.dumps({"stream": "cam0", "part_id": "A"}).encode())
        assert first == {"accepted": True, "seq": 0}
        # A second announcement of an id still open is refused, unless the first was answered meanwhile.
        assert (again["accepted"] is False and "already announced" in again["error"]) or again["seq"] == 1
        verdicts, final = _stop(proc, listener)
    assert [v["part_id"] for v in verdicts if v.get("part_id") == "A"][:1] == ["A"]
    assert final["parts"]["refused"] >= 2 and final["parts"]["pending"] == 0
    assert final["links"]["trigger"]["bad_requests"] == 1


def test_a_part_still_open_when_the_line_stops_is_answered_error_stopped(tmp_path):
    config, endpoint, trigger = camera_line(tmp_path, deadline_ms=60_000, dead=True)
    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        assert listener.recv(20) is not None  # the line is up (a heartbeat)
        assert _request(trigger, json.dumps({"stream": "cam0", "part_id": "Z"}).encode())["accepted"]
        verdicts, final = _stop(proc, listener)
    assert [(v["part_id"], v["verdict"], v["error"]) for v in verdicts] == [("Z", "ERROR", "stopped")]
    assert final["parts"]["stopped"] == 1 and final["parts"]["pending"] == 0


def test_edge_listen_shows_the_part_of_a_verdict_and_of_a_deadline_error():
    from edge.listen import format_verdict

    base = {"line": "line3", "station": "st1", "threshold": 0.5, "t_publish": 10.0, "regions": []}
    judged = {**base, "seq": 4, "frame_id": "cam0:4", "t_grab": 9.9, "verdict": "OK", "score": 0.1, "part_id": "P-7"}
    unseen = {**base, "seq": None, "frame_id": None, "t_grab": None, "t_announce": 9.0, "verdict": "ERROR"}
    unseen.update(score=None, error="deadline", part_id="P-8", late=False)
    assert "part P-7" in format_verdict(judged) and "LATE" not in format_verdict(judged)
    assert "part P-8" in format_verdict(unseen) and "1000.0 ms" in format_verdict(unseen)
    assert "LATE" in format_verdict({**judged, "late": True})
