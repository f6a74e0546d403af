"""edge-plc-sim: plays the PLC against a running edge-run. Announces parts at a steady rate over
ZeroMQ, MQTT or OPC UA, collects their verdicts over the same protocol, prints each part's verdict
and latency against its deadline, and a summary. Exit 1 when a part went unanswered."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import zmq

from edge.cli import Parser
from edge.config import ConfigError, LineConfig, load_config
from edge.listen import Listener
from edge.stats import percentiles

Outcome = Literal["in_time", "late", "missing", "refused"]


@dataclass(slots=True)
class Reply:
    part_id: str
    accepted: bool
    error: str | None = None


class Via(Protocol):
    """One announce path and the verdicts that come back over the same protocol."""

    def ready(self, timeout_s: float) -> bool: ...  # hearing the line (its heartbeats)
    def announce(self, stream: str, station: str, part_id: str, deadline_ms: float | None) -> None: ...
    def poll(self, timeout_s: float) -> Iterator[Reply | dict]: ...  # replies and verdict messages
    def close(self) -> None: ...


def connect_address(bind: str, host: str) -> str:
    """Where a client reaches a socket bound at ``bind`` ("tcp://0.0.0.0:5557" → host:5557)."""
    scheme, _, rest = bind.partition("://")
    address, _, port = rest.rpartition(":")
    return f"{scheme}://{host}:{port}" if scheme == "tcp" and address in ("0.0.0.0", "*", "[::]", "::") else bind


class ZmqVia:
    def __init__(self, cfg: LineConfig, host: str):
        if not cfg.trigger.bind:
            raise ConfigError(f"{cfg.path}: trigger.bind: not set, so the line takes no announcements over ZeroMQ")
        self._ctx = zmq.Context()
        self._endpoint = connect_address(cfg.trigger.bind, host)
        self._req = self._request_socket()
        self._listener = Listener(connect_address(cfg.publish.bind, host), f"{cfg.line}/")
        self._replies: list[Reply] = []

    def _request_socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self._endpoint)
        return sock

    def ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self._listener.recv(0.2)
            if msg is not None and msg.is_status:
                return True
        return False

    def announce(self, stream: str, station: str, part_id: str, deadline_ms: float | None) -> None:
        request: dict = {"stream": stream, "part_id": part_id}
        if deadline_ms is not None:
            request["deadline_ms"] = deadline_ms
        self._req.send(json.dumps(request).encode())
        if not self._req.poll(2000, zmq.POLLIN):
            self._req.close(0)  # a REQ socket that lost its reply can send no more
            self._req = self._request_socket()
            self._replies.append(Reply(part_id, False, f"no reply from {self._endpoint} within 2 s"))
            return
        reply = json.loads(self._req.recv())
        self._replies.append(Reply(part_id, bool(reply.get("accepted")), reply.get("error")))

    def poll(self, timeout_s: float) -> Iterator[Reply | dict]:
        yield from self._replies
        self._replies.clear()
        deadline = time.monotonic() + timeout_s
        while True:
            msg = self._listener.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return
            if not msg.is_status:
                yield msg.data

    def close(self) -> None:
        self._listener.close()
        self._req.close(0)
        self._ctx.term()


def open_via(via: str, cfg: LineConfig, host: str, cert: Path | None = None, key: Path | None = None) -> Via:
    """``cert``, ``key``: OPC UA's client certificate (edge-keys --opcua), which the line must trust."""
    if via == "mqtt":
        from edge.plant.mqtt import MqttVia

        return MqttVia(cfg, host)
    if via == "opcua":
        from edge.plant.opcua import OpcuaVia

        return OpcuaVia(cfg, host, cert, key)
    return ZmqVia(cfg, host)


@dataclass(slots=True)
class PartResult:
    part_id: str
    stream: str
    deadline_ms: float
    t_sent: float  # time.monotonic() when announced
    outcome: Outcome = "missing"
    verdict: str | None = None
    error: str | None = None
    latency_ms: float | None = None  # announced → answer received, on this machine's clock
    late_verdicts: int = 0  # verdicts flagged late that came after the answer

    def take(self, msg: dict, now: float) -> None:
        if msg.get("late"):
            self.late_verdicts += 1
            return
        if self.verdict is not None or self.outcome == "refused":
            return
        self.verdict, self.error = msg["verdict"], msg.get("error")
        self.latency_ms = (now - self.t_sent) * 1000
        judged = self.error not in ("deadline", "stopped")
        self.outcome = "in_time" if judged and self.latency_ms <= self.deadline_ms else "late"

    def line(self) -> str:
        latency = "-" if self.latency_ms is None else f"{self.latency_ms:8.1f}"
        text = f"{self.part_id:<20} {self.stream:<10} {self.verdict or '-':<5} {latency} ms / {self.deadline_ms:.0f} ms"
        return text + f"  {self.outcome.replace('_', ' ')}" + (f" ({self.error})" if self.error else "")


def simulate(
    via: Via,
    streams: list[tuple[str, str, float]],
    parts: int,
    rate: float,
    prefix: str,
    deadline_ms: float | None = None,
    grace_s: float = 2.0,
) -> list[PartResult]:
    """Announces ``parts`` parts, ``rate`` a second, round robin over ``streams`` (name, station,
    deadline ms); returns each part's result once all are answered or past deadline + grace."""
    results: dict[str, PartResult] = {}
    t0 = time.monotonic()
    for i in range(parts):
        stream, station, stream_deadline = streams[i % len(streams)]
        _collect(via, results, t0 + i / rate)
        part_id = f"{prefix}-{i:05d}"
        results[part_id] = PartResult(part_id, stream, deadline_ms or stream_deadline, time.monotonic())
        via.announce(stream, station, part_id, deadline_ms)
    last = max((r.t_sent + r.deadline_ms / 1000 for r in results.values()), default=t0) + grace_s
    while time.monotonic() < last and any(r.outcome == "missing" for r in results.values()):
        _collect(via, results, min(last, time.monotonic() + 0.2))
    return list(results.values())


def _collect(via: Via, results: dict[str, PartResult], until: float) -> None:
    while True:
        for item in via.poll(max(0.0, until - time.monotonic())):
            result = results.get(item.part_id if isinstance(item, Reply) else str(item.get("part_id")))
            if result is None:
                continue  # another PLC's part, or a frame no part claimed
            if isinstance(item, Reply):
                if not item.accepted:
                    result.outcome, result.error = "refused", item.error
            else:
                result.take(item, time.monotonic())
        if time.monotonic() >= until:
            return


def summary(results: list[PartResult]) -> str:
    count = {o: sum(r.outcome == o for r in results) for o in ("in_time", "late", "missing", "refused")}
    deadline_errors = sum(r.error == "deadline" for r in results)
    lat = percentiles(r.latency_ms for r in results if r.latency_ms is not None)
    return (
        f"{len(results)} parts: {count['in_time']} answered in time, {count['late']} late "
        f"({deadline_errors} of them ERROR deadline), {count['missing']} missing, {count['refused']} refused; "
        f"announce → verdict p50 {lat['p50']} ms, p99 {lat['p99']} ms"
    )


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="edge-plc-sim",
        description="Play the PLC against a running edge-run: announce parts, collect their verdicts over the "
        "same protocol, print each part's verdict and latency against its deadline, then a summary "
        "(answered in time / late / missing). Exit 1 when a part went unanswered or was refused.",
        epilog="Example: edge-plc-sim --config configs/line3.yaml --rate 5 --parts 200 --via mqtt",
    )
    p.add_argument("--config", required=True, help="the line's config (edge-run's), for its endpoints and streams")
    p.add_argument("--rate", type=float, default=5.0, help="parts per second (default %(default)s)")
    p.add_argument("--parts", type=int, default=200, help="how many parts (default %(default)s)")
    p.add_argument("--via", choices=("zmq", "opcua", "mqtt"), default="zmq", help="announce path (default zmq)")
    p.add_argument("--stream", action="append", help="announce on this stream (repeat; default: every stream)")
    p.add_argument("--deadline-ms", type=float, help="each part's own deadline (default: its stream's)")
    p.add_argument("--host", default="127.0.0.1", help="where the line runs, for endpoints bound to 0.0.0.0")
    p.add_argument("--prefix", default=f"sim{int(time.time()) % 100000}", help="part ids are PREFIX-00000, ...")
    p.add_argument("--ready-timeout", type=float, default=20.0, help="wait this long for the line's first heartbeat")
    p.add_argument("--cert", type=Path, help="--via opcua: this client's certificate (NAME.der from edge-keys --opcua)")
    p.add_argument("--key", type=Path, help="--via opcua: its private key (NAME.key.pem)")
    p.add_argument("--quiet", action="store_true", help="the summary only")
    p.add_argument("--json-out", type=Path, help="also write every part's result to this JSON file")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.parts < 1:
        p.error("--rate must be > 0 and --parts >= 1")
    try:
        cfg = load_config(args.config)
        streams = [(s.source.name, s.station, s.trigger.deadline_ms or 0.0) for s in cfg.streams]
        unknown = set(args.stream or ()) - {name for name, _, _ in streams}
        if unknown:
            raise ConfigError(f"--stream {sorted(unknown)}: not a stream of {args.config}")
        streams = [s for s in streams if not args.stream or s[0] in args.stream]
        via = open_via(args.via, cfg, args.host, args.cert, args.key)
    except (ConfigError, OSError, RuntimeError) as e:
        print(f"edge-plc-sim: {e}", file=sys.stderr)
        return 2
    try:
        if not via.ready(args.ready_timeout):
            print(
                f"edge-plc-sim: no heartbeat from the line over {args.via} in {args.ready_timeout} s", file=sys.stderr
            )
            return 1
        results = simulate(via, streams, args.parts, args.rate, args.prefix, args.deadline_ms)
    finally:
        via.close()
    for r in results if not args.quiet else ():
        print(r.line())
    print(summary(results), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if any(r.outcome in ("missing", "refused") for r in results) else 0
