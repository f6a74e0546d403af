"""Verdicts and status out over ZeroMQ: multipart [topic, json], schema in README.md.

An XPUB socket (a PUB that also hears subscriptions) so the daemon can wait for its PLC
subscribers before the first part; sends never block: a slow subscriber loses messages at
its high-water mark (counted), inference never waits for it.
"""
from __future__ import annotations

import json
import logging
import time

import zmq

from edge.types import Verdict

log = logging.getLogger(__name__)

MESSAGE_SCHEMA = 1


def verdict_message(v: Verdict, line: str, station: str, model: str, t_publish: float) -> dict:
    f = v.frame
    msg = {"schema": MESSAGE_SCHEMA, "line": line, "station": station, "stream": f.stream, "seq": f.seq,
           "frame_id": f.frame_id, "t_grab": f.t_grab, "t_publish": t_publish, "verdict": v.verdict,
           "score": None if v.score is None else round(v.score, 6), "threshold": round(v.threshold, 6),
           "regions": [r.to_json() for r in v.regions], "model": model}
    if v.error is not None:
        msg["error"] = v.error
    return msg


class Publisher:
    def __init__(self, bind: str, topic: str, sndhwm: int = 1000, linger_ms: int = 2000):
        self.topic = topic
        self.status_topic = f"{topic}/status"
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        # Verbose: every subscription reaches us, so subscriber counting sees repeats of a topic too.
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        try:
            self._sock.bind(bind)
        except zmq.ZMQError as e:
            self._sock.close(0)
            self._ctx.term()
            raise OSError(f"publish.bind {bind!r}: {e}; is another edge-run using this port?") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscriptions = 0
        self.failed = 0

    def poll_subscriptions(self) -> int:
        while True:
            try:
                event = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if event[:1] == b"\x01":
                self.subscriptions += 1
            elif event[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def wait_for_subscribers(self, n: int, timeout_s: float, stop) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.poll_subscriptions() < n:
            if stop.is_set() or time.monotonic() > deadline:
                return False
            self._sock.poll(50, zmq.POLLIN)
        return True

    def send(self, topic: str, payload: dict) -> bool:
        try:
            self._sock.send_multipart([topic.encode(), json.dumps(payload, separators=(",", ":")).encode()],
                                      flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.failed += 1
            return False

    def close(self) -> None:
        self._sock.close()   # LINGER lets the last verdicts and the final status reach subscribers
        self._ctx.term()
