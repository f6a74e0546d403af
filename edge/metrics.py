"""Optional Prometheus endpoint: the status heartbeat in Prometheus' text format.

The main loop hands over a finished snapshot at every heartbeat; the HTTP thread only renders
the latest one, so it never reads the daemon's live counters while they change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from edge.stats import Percentiles
from edge.status import Counters, StreamStatus

log = logging.getLogger(__name__)

# (metric, type, help, how to read it from one stream's status)
_METRICS: list[tuple[str, str, str, Callable[[StreamStatus], object]]] = [
    ("edge_frames_in_total", "counter", "Frames that entered the daemon", lambda s: s.counters.frames_in),
    ("edge_dropped_total", "counter", "Frames dropped by the full queue", lambda s: s.counters.dropped),
    ("edge_in_flight", "gauge", "Frames in the daemon without a verdict yet", lambda s: s.counters.in_flight),
    ("edge_queue_depth", "gauge", "Frames waiting in the queue", lambda s: s.queue_depth),
    ("edge_source_up", "gauge", "1 while the source is streaming", lambda s: int(s.source.state == "streaming")),
    ("edge_source_reconnects_total", "counter", "Source reconnects", lambda s: s.source.reconnects),
    ("edge_grab_errors_total", "counter", "Exceptions in the stream's grab thread", lambda s: s.counters.grab_errors),
    ("edge_threshold", "gauge", "Image threshold in use", lambda s: s.threshold),
    ("edge_score_drift_z", "gauge", "Mean OK score minus calibration mu, in sigma", lambda s: s.score_drift.z),
]


def _label(name: str, value: object) -> str:
    """One label as the text exposition format wants it: inside the quotes, backslash, double
    quote and newline are escaped (a station or bundle name may hold any of them)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{text}"'


Family = Callable[[str, str, str, list[tuple[str, object]]], None]

# Daemon-wide writers beside the line: (metric key, its two outcomes, what it writes, their counts).
_WRITERS: list[tuple[str, tuple[str, str], str, Callable[[Counters], tuple[int | None, int | None]]]] = [
    (
        "evidence",
        ("saved", "skipped"),
        "NG parts {} by the evidence writer",
        lambda c: (c.evidence_saved, c.evidence_skipped),
    ),
    (
        "ok_samples",
        ("saved", "skipped"),
        "OK samples {} by the evidence writer",
        lambda c: (c.ok_samples_saved, c.ok_samples_skipped),
    ),
    ("images", ("sent", "dropped"), "Operator screen images {}", lambda c: (c.images_sent, c.images_dropped)),
]


def _writers(family: Family, base: list[str], statuses: list[StreamStatus]) -> None:
    for key, outcomes, text, counts in _WRITERS:
        for i, outcome in enumerate(outcomes):
            family(
                f"edge_{key}_{outcome}_total",
                "counter",
                f"{text.format(outcome)} (daemon-wide)",
                [(b, counts(s.counters)[i]) for b, s in zip(base, statuses)],
            )


def render(statuses: list[StreamStatus]) -> str:
    lines = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, object]]) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{{{labels}}} {value}" for labels, value in samples if value is not None)

    base = [f"{_label('line', s.line)},{_label('station', s.station)}" for s in statuses]
    for name, kind, text, read in _METRICS:
        family(name, kind, text, [(b, read(s)) for b, s in zip(base, statuses)])
    # The model as a label of its own series (value 1), the Prometheus way to carry a name: a
    # reload to another bundle starts a new series instead of renaming every other metric's.
    family(
        "edge_model_info",
        "gauge",
        "The bundle judging this stream",
        [(f"{b},{_label('model', s.model)}", 1) for b, s in zip(base, statuses)],
    )
    _writers(family, base, statuses)
    family(
        "edge_verdicts_total",
        "counter",
        "Verdicts published, by kind",
        [
            (f'{b},verdict="{v}"', n)
            for b, s in zip(base, statuses)
            for v, n in (("OK", s.counters.ok), ("NG", s.counters.ng), ("ERROR", s.counters.error))
        ],
    )
    timings: list[tuple[str, str, Callable[[StreamStatus], Percentiles]]] = [
        ("latency_ms", "Grab to publish latency, ms", lambda s: s.latency_ms),
        ("infer_ms", "Backend time per batch, ms", lambda s: s.infer_ms),
    ]
    for key, text, timing in timings:
        family(
            f"edge_{key}",
            "summary",
            text,
            [
                (f'{b},quantile="{q}"', value)
                for b, s in zip(base, statuses)
                for q, value in (("0.5", timing(s).p50), ("0.99", timing(s).p99))
            ],
        )
    return "\n".join(lines) + "\n"


# A scraper needs one connection at a time; idle or slow clients beyond these are not served
# (a thread each would otherwise be held for as long as the client keeps its socket open).
MAX_CONNECTIONS = 8
IDLE_TIMEOUT_S = 10.0


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most MAX_CONNECTIONS handler threads: a connection beyond
    them is closed at once."""

    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    @classmethod
    def at(cls, bind: str) -> MetricsServer:
        """The server for a metrics.bind of HOST:PORT."""
        host, port = bind.rsplit(":", 1)
        return cls(host, int(port))

    def __init__(self, host: str, port: int):
        self._snapshot: list[StreamStatus] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT_S  # a client that sends nothing gives its thread back

            def do_GET(self) -> None:
                if urlsplit(self.path).path != "/metrics":  # a query (?x=1) is still /metrics
                    self.send_error(404, "only /metrics here")
                    return
                body = render(server._snapshot).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds would flood the log
                pass

        try:
            self._httpd = _BoundedServer((host, port), Handler)
        except OSError as e:
            raise OSError(f"metrics.bind {host}:{port}: {e.strerror or e}; is the port in use?") from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def update(self, statuses: list[StreamStatus]) -> None:
        self._snapshot = statuses

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
