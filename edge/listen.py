"""The reference PLC-side subscriber: what an integrator's gateway does, in a few lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


@dataclass(slots=True)
class Message:
    topic: str
    data: dict

    @property
    def is_status(self) -> bool:
        # "<line>/<station>/status"; a verdict's "<line>/<station>" has one '/' (names hold none),
        # so a station named "status" (refused since, maybe still on an older daemon) is no status.
        return self.topic.count("/") == 2 and self.topic.endswith("/status")


class Listener:
    def __init__(
        self, connect: str, topic: str = "", *, server_key: Path | None = None, client_secret_key: Path | None = None
    ):
        """server_key / client_secret_key: for a CURVE publisher, the server's public .key and
        this subscriber's own .key_secret (whose public half the publisher must allow)."""
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None:
            if client_secret_key is None:
                raise ValueError("a CURVE subscriber needs its own client_secret_key beside the server_key")
            public, secret = zmq.auth.load_certificate(client_secret_key)
            self._sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
            self._sock.curve_publickey = public
            self._sock.curve_secretkey = secret
        self._sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        self._sock.connect(connect)

    def recv(self, timeout_s: float | None) -> Message | None:
        """The next message, or None if none came within timeout_s (None: wait for ever)."""
        if not self._sock.poll(None if timeout_s is None else int(timeout_s * 1000), zmq.POLLIN):
            return None
        topic, payload = self._sock.recv_multipart()
        return Message(topic.decode(), json.loads(payload))

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_verdict(d: dict) -> str:
    score = "-" if d.get("score") is None else f"{d['score']:.4f}"
    latency = (d["t_publish"] - (d["t_grab"] or d.get("t_announce") or d["t_publish"])) * 1000
    line = (
        f"{d['line']}/{d['station']} #{d['seq'] if d['seq'] is not None else '-':<6} {d['frame_id'] or '-':<24} "
        f"{d['verdict']:<5} "
        f"score {score} thr {d['threshold']:.4f} {latency:7.1f} ms"
    )
    if d.get("regions"):
        line += "  regions " + " ".join(
            f"[{r['bbox'][0]},{r['bbox'][1]} {r['bbox'][2]}x{r['bbox'][3]}]" for r in d["regions"][:4]
        )
    if d.get("error"):
        line += f"  error: {d['error']}"
    if d.get("part_id") is not None:
        # A part's answer or its late verdict (edge/plant); seq and frame_id are null for a part never photographed.
        line += f"  part {d['part_id']}" + ("  LATE (answered at its deadline)" if d.get("late") else "")
    return line


def format_status(d: dict) -> str:
    c = d["counters"]
    lat = d["latency_ms"]
    return (
        f"[status {d['state']}] in {c['frames_in']} ok {c['ok']} ng {c['ng']} error {c['error']} "
        f"dropped {c['dropped']} queue {d['queue_depth']} latency p50 {lat['p50']} p99 {lat['p99']} ms "
        f"source {d['source']['state']}" + (f" ({d['source']['problem']})" if d["source"].get("problem") else "")
        # A status from before the problem field (schema 1 allows it) has none.
    )
