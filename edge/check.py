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
from pathlib import Path

import cv2

from edge.daemon import Daemon
from edge.evidence import overlay
from edge.sources import Source
from edge.trust import audit_trail
from edge.types import Frame, Verdict

_GRACE_S = 0.5  # for the grabbers to stop after the deadline, all together


@dataclass(frozen=True, slots=True)
class StreamCheck:
    stream: str
    verdict: Verdict | None  # None: no frame came
    grab_s: float
    note: str  # for a stream that gave no frame: what its source said


def first_frames(sources: list[Source], timeout_s: float) -> dict[str, tuple[Frame | None, float, str]]:
    """Each source's first frame within ``timeout_s``, all grabbed at once (a camera retries with
    back-off meanwhile): (frame or None, seconds it took, the source's state at the end, before
    it is stopped), by source name."""
    stop, start = threading.Event(), time.monotonic()
    got: dict[str, tuple[Frame, float]] = {}

    def grab(source: Source) -> None:
        for frame in source.frames(stop):
            got[source.name] = frame, time.monotonic() - start
            break

    grabbers = [threading.Thread(target=grab, args=(s,), name=f"check-{s.name}", daemon=True) for s in sources]
    for grabber in grabbers:
        grabber.start()
    for grabber in grabbers:
        grabber.join(max(0.0, start + timeout_s - time.monotonic()))
    # Taken at the deadline: a grabber still blocked in its camera's fetch can yield a frame while it
    # stops, and that frame did not come within timeout_s.
    in_time = dict(got)
    states = {s.name: s.state for s in sources}
    stop.set()
    # The deadline holds: a grabber still inside a camera's open or read (up to its network timeout)
    # is left to end on its own, a daemon thread, instead of being waited for.
    grace = time.monotonic() + _GRACE_S
    for grabber in grabbers:
        grabber.join(max(0.0, grace - time.monotonic()))
    return {s.name: (*in_time.get(s.name, (None, timeout_s)), states[s.name]) for s in sources}


def check_line(daemon: Daemon, timeout_s: float) -> list[StreamCheck]:
    """One frame per stream, judged together (each verdict keeps its anomaly map)."""
    grabbed = first_frames([stream.source for stream in daemon.streams.values()], timeout_s)
    frames = [frame for frame, _, _ in grabbed.values() if frame is not None]
    verdicts = {v.frame.stream: v for v in daemon.judge_frames(frames, keep_maps=True)} if frames else {}
    checks = []
    for name, (_, seconds, state) in grabbed.items():
        source = daemon.streams[name].source
        why = f"; {source.problem}" if source.problem else ""
        if state == "streaming":  # open and healthy, yet silent: a triggered camera between parts
            why += "; the camera is open but sent nothing: is it waiting for a trigger?"
        checks.append(
            StreamCheck(
                name,
                verdicts.get(name),
                seconds,
                f"no frame within {timeout_s:g} s (source {state}, {source.reconnects} reconnects{why})",
            )
        )
    return checks


def save_overlays(checks: list[StreamCheck], folder: Path) -> list[Path]:
    """``<stream>.png`` per judged frame: the frame under its heatmap, regions boxed, verdict written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c in checks:
        if c.verdict is not None and c.verdict.anomaly_map is not None:
            path = folder / f"{c.stream}.png"
            if not cv2.imwrite(str(path), overlay(c.verdict)):
                raise OSError(f"cannot write {path}")
            written.append(path)
    return written


def passed(checks: list[StreamCheck]) -> bool:
    """Every stream gave a frame the model judged (OK or NG: either shows the chain works)."""
    return all(c.verdict is not None and c.verdict.verdict != "ERROR" for c in checks)


def describe_verdict(v: Verdict) -> str:
    if v.verdict == "ERROR":
        return f"ERROR: {v.error}"
    size = "×".join(map(str, v.frame.pixels.shape[1::-1]))
    regions = f", {len(v.regions)} region(s), strongest at bbox {list(v.regions[0].bbox)}" if v.regions else ""
    return f"{size} frame → {v.verdict}, score {v.score:.6g} (threshold {v.threshold:.6g}){regions}"


def report(daemon: Daemon, checks: list[StreamCheck]) -> list[str]:
    lines = []
    models = daemon.models()
    for names in models.values():
        streams = [daemon.streams[name] for name in names]
        bundle, cal = streams[0].model.bundle, streams[0].model.bundle.calibration
        backend = streams[0].model.backend.describe()
        runtime = backend.get("providers") or backend.get("engine")
        thresholds = ", ".join(dict.fromkeys(f"{s.judge.threshold:.6g}" for s in streams))
        judged_by = f" for {', '.join(names)}" if len(models) > 1 else ""
        lines += [
            f"bundle   {bundle.path} ({bundle.height}×{bundle.width} input){judged_by}, threshold {thresholds}"
            + (f" (calibrated on {cal.n} good parts)" if cal else ""),
            f"backend  {backend['backend']} {backend.get('version', '')}: {runtime}",
        ]
        history, checked = audit_trail(bundle.path, daemon.cfg.trust.keys)
        lines += [*(f"history  {entry}" for entry in history), f"trust    {checked}"]
    lines.append(f"publish  {daemon.publisher.endpoint} bound")
    if daemon.cfg.metrics.bind:
        lines.append(f"metrics  {daemon.cfg.metrics.bind} bound")
    infer = f"; inference {daemon.infer_ms[-1]:.1f} ms for {daemon.batch_sizes[-1]}" if daemon.infer_ms else ""
    for c in checks:
        what = f"{describe_verdict(c.verdict)} (grabbed in {c.grab_s:.2f} s)" if c.verdict else c.note
        lines.append(f"{c.stream:<8} {what}")
    judged = sum(passed([c]) for c in checks)
    lines.append(f"{judged} of {len(checks)} streams judged{infer}; nothing was published")
    return lines
