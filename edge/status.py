"""One stream's status, typed: what the status topic, the Prometheus endpoint, systemd's status
line and the final log line read, by attribute. ``to_message`` is the status topic's JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge.stats import Drift, Percentiles


@dataclass(frozen=True, slots=True)
class Counters:
    """Accounting: ``frames_in = ok + ng + error + dropped + in_flight``."""

    frames_in: int
    ok: int
    ng: int
    error: int
    dropped: int
    publish_failed: int
    in_flight: int
    grab_errors: int  # exceptions in the stream's grab thread (each one a dropout, or its end)
    # The evidence writers' counts (daemon-wide), None where that writer is off.
    evidence_saved: int | None = None
    evidence_skipped: int | None = None
    ok_samples_saved: int | None = None
    ok_samples_skipped: int | None = None
    # The operator screen's images (edge.images, daemon-wide), None where hmi_images is off.
    images_sent: int | None = None
    images_dropped: int | None = None

    def to_message(self) -> dict[str, int]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str
    state: str  # connecting, streaming, reconnecting, ended, or failed (its grabber died for good)
    reconnects: int
    problem: str | None


@dataclass(frozen=True, slots=True)
class Reloads:
    """What the reloads so far came to (one record for the daemon, replaced by each reload)."""

    ok: int = 0
    refused: int = 0
    last_error: str | None = None
    at_restart: tuple[str, ...] = ()  # keys the last reload changed that only a restart applies


@dataclass(frozen=True, slots=True)
class StreamStatus:
    schema: int
    line: str
    station: str
    t: float
    state: str  # starting, running, stopping or stopped
    uptime_s: float
    counters: Counters
    latency_ms: Percentiles  # grab to publish, per frame
    infer_ms: Percentiles  # the backend, per batch (daemon-wide)
    mean_batch: float | None
    queue_depth: int
    streams: int
    source: SourceStatus
    score_drift: Drift
    threshold: float
    model: str
    reloads: Reloads
    backend: dict[str, Any]

    def to_message(self) -> dict[str, Any]:
        message = asdict(self)
        message["counters"] = self.counters.to_message()
        message["reloads"]["at_restart"] = list(self.reloads.at_restart)
        return message

    def totals(self) -> str:
        """What the stream came to, for the log."""
        c, latency = self.counters, self.latency_ms
        errors = f", {c.grab_errors} grab error(s)" if c.grab_errors else ""
        return (
            f"{c.frames_in} frames in, {c.ok} OK, {c.ng} NG, {c.error} ERROR, {c.dropped} dropped{errors}; "
            f"latency p50 {latency.p50} ms p99 {latency.p99} ms"
        )
