"""What the page shows, per camera, kept from the daemon's messages (hmi.feed writes it,
the server reads snapshots of it; a lock keeps the two apart)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from edge.config import HmiConfig

RECENT = 300  # scores on the chart, and verdicts the ERROR rate is taken over
NG_STRIP = 8
IMAGES_KEPT = 200
MIN_FOR_ERROR_RATE = 10


KINDS = ("ok", "ng", "error")


def shift_start(shifts: list[str], now: dt.datetime) -> dt.datetime:
    """The start of the shift ``now`` is in (``shifts``: "HH:MM" starts, local time)."""
    starts = [
        now.replace(hour=int(h), minute=int(m), second=0, microsecond=0) for h, m in (s.split(":") for s in shifts)
    ]
    past = [t for t in starts if t <= now]
    return max(past) if past else max(starts) - dt.timedelta(days=1)


@dataclass(slots=True)
class ShiftCounts:
    """OK / NG / ERROR since the shift started, from the daemon's run counters: what they were when
    the shift began is subtracted (a daemon that started within the shift: nothing; one that ran
    before the HMI first heard of it: its counts then, so the shift counts start there), and a
    daemon that restarted (its counters fell) adds its new run to what the shift had counted."""

    start: dt.datetime | None = None
    base: dict[str, int] = field(default_factory=dict)
    carried: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    def update(self, counters: dict[str, Any], start: dt.datetime, daemon_started: float) -> None:
        now = {k: int(counters.get(k, 0)) for k in KINDS}
        if start != self.start:
            began_within = self.start is None and daemon_started >= start.timestamp()
            self.base = dict.fromkeys(KINDS, 0) if began_within else now
            self.start, self.carried = start, dict.fromkeys(KINDS, 0)
        elif any(now[k] < self.last.get(k, 0) for k in KINDS):
            self.carried = {k: self.carried[k] + self.last[k] - self.base[k] for k in KINDS}
            self.base = dict.fromkeys(KINDS, 0)
        self.last = now

    def view(self) -> dict[str, Any]:
        counts = {k: self.carried.get(k, 0) + self.last.get(k, 0) - self.base.get(k, 0) for k in KINDS}
        judged = sum(counts.values())
        since = self.start.strftime("%H:%M") if self.start else None
        return {**counts, "since": since, "yield": round(counts["ok"] / judged, 4) if judged else None}


@dataclass(slots=True)
class Camera:
    topic: str
    status: dict[str, Any] | None = None
    status_at: float | None = None  # time.monotonic() of the last status
    last: dict[str, Any] | None = None  # the last verdict
    image: dict[str, Any] | None = None  # the meta of the last image (with its ``id``)
    ng_strip: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=NG_STRIP))
    scores: deque[tuple[int, float | None, str]] = field(default_factory=lambda: deque(maxlen=RECENT))
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    shift: ShiftCounts = field(default_factory=ShiftCounts)

    def parts_per_s(self, now: float, window_s: float = 5.0) -> float:
        recent = [t for t in self.arrivals if now - t <= window_s]
        return round(len(recent) / window_s, 2)

    def alarms(self, cfg: HmiConfig, now: float) -> list[str]:
        out = []
        s = self.status
        if s is None or self.status_at is None:
            return ["no status from the daemon yet"]
        if s["state"] == "stopped":
            out.append("camera down: the daemon stopped judging this camera")
        elif now - self.status_at > cfg.stale_s:
            out.append(f"camera down: no status from the daemon for {now - self.status_at:.0f} s")
        elif s["source"]["state"] != "streaming":
            problem = s["source"].get("problem")
            out.append(f"camera down: source {s['source']['state']}" + (f" ({problem})" if problem else ""))
        kinds = [k for _, _, k in self.scores]
        if len(kinds) >= MIN_FOR_ERROR_RATE:
            rate = kinds.count("ERROR") / len(kinds)
            if rate > cfg.error_rate_limit:
                out.append(f"ERROR rate {rate:.0%} of the last {len(kinds)} parts (limit {cfg.error_rate_limit:.0%})")
        z = s["score_drift"].get("z")
        if z is not None and abs(z) > cfg.drift_z_limit:
            out.append(f"score drift z {z:+.2f} (limit ±{cfg.drift_z_limit:g})")
        return out

    def view(self, cfg: HmiConfig, now: float) -> dict[str, Any]:
        s = self.status or {}
        c = s.get("counters", {})
        judged = c.get("ok", 0) + c.get("ng", 0) + c.get("error", 0)
        return {
            "topic": self.topic,
            "station": s.get("station", self.topic.split("/")[-1]),
            "state": s.get("state", "unknown"),
            "source": s.get("source", {}),
            "model": s.get("model"),
            "threshold": s.get("threshold", (self.last or {}).get("threshold")),
            "counters": c,
            "judged": judged,
            "shift": self.shift.view(),
            "latency_ms": s.get("latency_ms", {}),
            "drift": s.get("score_drift", {}),
            "parts_per_s": self.parts_per_s(now),
            "last": self.last,
            "image": self.image,
            "ng_strip": list(self.ng_strip)[::-1],
            "scores": list(self.scores),
            "alarms": self.alarms(cfg, now),
        }


class LiveState:
    def __init__(self, cfg: HmiConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._cameras: dict[str, Camera] = {}
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._ids = itertools.count()
        self.version = 0  # bumped by every message: the page's stream sends when it moved

    def _camera(self, topic: str) -> Camera:
        return self._cameras.setdefault(topic, Camera(topic))

    def on_verdict(self, topic: str, msg: dict[str, Any]) -> None:
        with self._lock:
            cam = self._camera(topic)
            cam.last = {k: msg.get(k) for k in ("seq", "frame_id", "verdict", "score", "threshold", "t_grab", "error")}
            cam.last["latency_ms"] = round((msg["t_publish"] - msg["t_grab"]) * 1000, 1)
            cam.scores.append((msg["seq"], msg.get("score"), msg["verdict"]))
            cam.arrivals.append(time.monotonic())
            self.version += 1

    def on_status(self, topic: str, msg: dict[str, Any]) -> None:
        with self._lock:
            cam = self._camera(topic)
            cam.status, cam.status_at = msg, time.monotonic()
            daemon_started = msg["t"] - msg["uptime_s"]
            cam.shift.update(msg["counters"], shift_start(self.cfg.shifts, dt.datetime.now()), daemon_started)
            self.version += 1

    def on_image(self, topic: str, meta: dict[str, Any], jpeg: bytes) -> None:
        """``topic``: the verdict topic the image belongs to."""
        with self._lock:
            image_id = f"{next(self._ids)}"
            self._images[image_id] = jpeg
            while len(self._images) > IMAGES_KEPT:
                self._images.popitem(last=False)
            keep = ("seq", "frame_id", "verdict", "score", "threshold", "regions", "width", "height", "t_grab")
            view = {"id": image_id, **{k: meta.get(k) for k in keep}}
            cam = self._camera(topic)
            cam.image = view
            if meta.get("verdict") == "NG":
                cam.ng_strip.append(view)
            self.version += 1

    def image(self, image_id: str) -> bytes | None:
        with self._lock:
            return self._images.get(image_id)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            cameras = [cam.view(self.cfg, now) for _, cam in sorted(self._cameras.items())]
            version = self.version
        return {"version": version, "t": time.time(), "cameras": cameras}
