"""The page's alarms and counts, from the daemon's messages as they come."""

from __future__ import annotations

import datetime as dt
import time

from edge.config import HmiConfig
from hmi.state import LiveState, shift_start


def status(
    source_state: str = "streaming", z: float | None = 0.1, state: str = "running", ok: int = 3, uptime_s: float = 1.0
) -> dict:
    return {
        "t": time.time(),
        "uptime_s": uptime_s,
        "station": "st1",
        "state": state,
        "source": {"name": "cam0", "state": source_state, "reconnects": 0, "problem": None},
        "counters": {"frames_in": ok + 1, "ok": ok, "ng": 1, "error": 0},
        "latency_ms": {"p50": 5.0, "p99": 9.0, "n": 4},
        "score_drift": {"ok_mean": 0.2, "calib_mu": 0.2, "z": z, "n": 3},
        "threshold": 0.5,
        "model": "m@1",
    }


def verdict(seq: int, kind: str, score: float | None) -> dict:
    now = time.time()
    return {"seq": seq, "frame_id": f"cam0:{seq}", "verdict": kind, "score": score, "threshold": 0.5,
            "t_grab": now - 0.01, "t_publish": now}  # fmt: skip


def alarms(state: LiveState) -> list[str]:
    return state.snapshot()["cameras"][0]["alarms"]


def test_alarms_name_the_camera_down_the_error_rate_and_the_drift_in_words() -> None:
    state = LiveState(HmiConfig(stale_s=0.2, error_rate_limit=0.1, drift_z_limit=3.0))
    state.on_status("line3/st1", status())
    for seq in range(20):
        state.on_verdict("line3/st1", verdict(seq, "OK", 0.1))
    view = state.snapshot()["cameras"][0]
    assert view["alarms"] == [] and view["judged"] == 4 and view["parts_per_s"] == 4.0
    assert view["shift"]["yield"] == 0.75  # a daemon started a second ago: all its parts are this shift's
    state.on_status("line3/st1", status("reconnecting", z=-4.2))
    assert alarms(state) == ["camera down: source reconnecting", "score drift z -4.20 (limit ±3)"]
    for seq in range(20, 23):
        state.on_verdict("line3/st1", verdict(seq, "ERROR", None))
    state.on_status("line3/st1", status())
    assert alarms(state) == ["ERROR rate 13% of the last 23 parts (limit 10%)"]
    time.sleep(0.3)  # the daemon went silent
    assert alarms(state)[0].startswith("camera down: no status from the daemon for")
    state.on_status("line3/st1", status(state="stopped"))
    assert alarms(state)[0] == "camera down: the daemon stopped judging this camera"


def test_ng_images_fill_the_strip_newest_first_and_the_oldest_images_are_let_go() -> None:
    state = LiveState(HmiConfig())
    for seq in range(250):
        kind = "NG" if seq % 2 else "OK"
        state.on_image("line3/st1", {"seq": seq, "verdict": kind, "score": 0.9, "width": 8, "height": 6}, b"jpeg")
    view = state.snapshot()["cameras"][0]
    assert view["image"]["seq"] == 249 and [p["seq"] for p in view["ng_strip"]] == list(range(249, 233, -2))
    assert state.image(view["image"]["id"]) == b"jpeg" and state.image("0") is None  # 200 kept


def test_shift_counts_start_at_the_shift_and_survive_a_daemon_restart() -> None:
    start = shift_start(["06:00", "14:00", "22:00"], dt.datetime(2026, 12, 8, 3, 30))
    assert start == dt.datetime(2026, 12, 7, 22, 0)  # the night shift, begun yesterday
    assert shift_start(["06:00"], dt.datetime(2026, 12, 8, 6, 0)) == dt.datetime(2026, 12, 8, 6, 0)
    state = LiveState(HmiConfig(shifts=["00:00"]))
    state.on_status("line3/st1", status(ok=100, uptime_s=2 * 86400))  # running since before the shift
    state.on_status("line3/st1", status(ok=130, uptime_s=2 * 86400 + 10))
    assert state.snapshot()["cameras"][0]["shift"]["ok"] == 30  # from where the HMI first heard of it
    state.on_status("line3/st1", status(ok=5, uptime_s=3))  # the daemon restarted: its counters fell
    assert state.snapshot()["cameras"][0]["shift"]["ok"] == 35
