"""Announcements over ZeroMQ: a REP socket at ``trigger.bind``.

Request: one JSON object ``{"stream": "cam0", "part_id": "P-1042"}`` (optionally ``"deadline_ms"``);
reply: ``{"accepted": true, "seq": 17}``, or ``{"accepted": false, "seq": null, "error": "..."}``.
A request that is not such an object gets an ``accepted: false`` reply that says why; the socket
goes on serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import zmq

from edge.plant.tracking import Announced

log = logging.getLogger(__name__)

Announce = Callable[[object, object, object], Announced]


class TriggerServer:
    def __init__(self, bind: str, announce: Announce):
        self._announce = announce
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(bind)
        except zmq.ZMQError as e:
            self._sock.close(0)
            self._ctx.term()
            raise OSError(f"trigger.bind {bind!r}: {e}; is another edge-run using this port?") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = 0
        self.bad_requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="trigger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock.poll(100, zmq.POLLIN):
                    self._sock.send(json.dumps(self._reply(self._sock.recv())).encode())
        except zmq.ZMQError as e:  # the socket closed under us: only at the end
            if not self._stop.is_set():
                log.error("trigger socket failed, no more announcements over ZeroMQ: %s", e)
        finally:
            self._sock.close(0)

    def _reply(self, raw: bytes) -> dict:
        self.requests += 1
        try:
            request = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as e:
            request = e
        if not isinstance(request, dict):
            self.bad_requests += 1
            why = 'a request is one JSON object: {"stream": NAME, "part_id": ID} (optionally deadline_ms)'
            return Announced(False, None, why).to_json()
        return self._announce(request.get("stream"), request.get("part_id"), request.get("deadline_ms")).to_json()

    def status(self) -> dict:
        return {"endpoint": self.endpoint, "requests": self.requests, "bad_requests": self.bad_requests}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        else:
            self._sock.close(0)
        self._ctx.term()
