"""edge-run --check: commission a line without judging it for the PLC.

Everything the daemon does at start-up (config, bundle, calibration, backend, cameras opened,
ZeroMQ socket and metrics port bound), then one frame from each camera, judged with the
line's own model and threshold, printed, and nothing published: a check run never sends the
PLC a verdict for a part that happens to be under the camera.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from edge.daemon import Daemon
from edge.sources import Source
from edge.types import Frame, Verdict


@dataclass(frozen=True, slots=True)
class StreamCheck:
    stream: str
    verdict: Verdict | None        # None: no frame came
    grab_s: float
    note: str                      # what happened to a stream that gave no frame


def first_frame(source: Source, timeout_s: float) -> tuple[Frame | None, float, str]:
    """The source's first frame within ``timeout_s`` (a camera retries with back-off meanwhile),
    how long it took, and the source's state then (before it is stopped)."""
    stop, got = threading.Event(), []

    def grab() -> None:
        for frame in source.frames(stop):
            got.append(frame)
            break

    start = time.monotonic()
    grabber = threading.Thread(target=grab, name=f"check-{source.name}", daemon=True)
    grabber.start()
    grabber.join(timeout_s)
    seconds, state = time.monotonic() - start, source.state
    stop.set()
    grabber.join(5)
    return (got[0] if got else None), seconds, state


def check_line(daemon: Daemon, timeout_s: float) -> list[StreamCheck]:
    """One frame per stream, judged together (the cameras are grabbed one after the other)."""
    grabbed = {name: first_frame(stream.source, timeout_s) for name, stream in daemon.streams.items()}
    frames = [frame for frame, _, _ in grabbed.values() if frame is not None]
    verdicts = {v.frame.stream: v for v in daemon.judge_frames(frames)} if frames else {}
    return [StreamCheck(name, verdicts.get(name), seconds,
                        "" if name in verdicts else
                        f"no frame within {timeout_s:g} s (source {state}, "
                        f"{daemon.streams[name].source.reconnects} reconnects)")
            for name, (_, seconds, state) in grabbed.items()]


def passed(checks: list[StreamCheck]) -> bool:
    """Every stream gave a frame the model judged (OK or NG: either shows the chain works)."""
    return all(c.verdict is not None and c.verdict.verdict != "ERROR" for c in checks)


def describe_verdict(v: Verdict) -> str:
    if v.verdict == "ERROR":
        return f"ERROR: {v.error}"
    size = "×".join(map(str, v.frame.image.shape[1::-1]))
    regions = f", {len(v.regions)} region(s), strongest at bbox {list(v.regions[0].bbox)}" if v.regions else ""
    return f"{size} frame → {v.verdict}, score {v.score:.6g} (threshold {v.threshold:.6g}){regions}"


def report(daemon: Daemon, checks: list[StreamCheck]) -> list[str]:
    cal = daemon.bundle.calibration
    backend = daemon.backend.describe()
    runtime = backend.get("providers") or backend.get("engine")
    lines = [f"bundle   {daemon.bundle.path} ({daemon.bundle.height}×{daemon.bundle.width} input), threshold "
             f"{daemon.judge.threshold:.6g}" + (f" (calibrated on {cal.n} good parts)" if cal else ""),
             f"backend  {backend['backend']} {backend.get('version', '')}: {runtime}",
             f"publish  {daemon.publisher.endpoint} bound"]
    if daemon.cfg.metrics.bind:
        lines.append(f"metrics  {daemon.cfg.metrics.bind} bound")
    infer = f"; inference {daemon.infer_ms[-1]:.1f} ms for {daemon.batch_sizes[-1]}" if daemon.infer_ms else ""
    for c in checks:
        what = describe_verdict(c.verdict) if c.verdict else c.note
        lines.append(f"{c.stream:<8} {what} (grabbed in {c.grab_s:.2f} s)")
    judged = sum(passed([c]) for c in checks)
    lines.append(f"{judged} of {len(checks)} streams judged{infer}; nothing was published")
    return lines
