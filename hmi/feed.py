"""The HMI's subscription to the daemon: verdicts and statuses on ``publish.bind`` (topic
``<line>/``), screen images on ``hmi_images.bind`` (topic ``img/<line>/``), CURVE too with the
HMI's own client key. One thread; it only reads, so a slow page never reaches the daemon."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import zmq
import zmq.auth

from edge.config import LineConfig
from edge.images import IMAGE_TOPIC_PREFIX, SNDBUF
from hmi.state import LiveState

log = logging.getLogger(__name__)


def connect_to(bind: str) -> str:
    """Where a subscriber on this box connects for a daemon bound to ``bind`` (any address: localhost)."""
    return re.sub(r"^tcp://(\*|0\.0\.0\.0|\[::\]):", "tcp://127.0.0.1:", bind)


class Feed:
    def __init__(self, cfg: LineConfig, state: LiveState) -> None:
        self._state = state
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._sockets = [self._subscribe(connect_to(cfg.publish.bind), f"{cfg.line}/", cfg)]
        if cfg.hmi_images.bind:
            images = self._subscribe(connect_to(cfg.hmi_images.bind), f"{IMAGE_TOPIC_PREFIX}{cfg.line}/", cfg, SNDBUF)
            self._sockets.append(images)
        else:
            log.warning("hmi_images.bind is not set: the daemon sends no images, the page shows counts only")
        self._thread = threading.Thread(target=self._run, name="hmi-feed", daemon=True)

    def _subscribe(self, endpoint: str, topic: str, cfg: LineConfig, rcvbuf: int = -1) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVBUF, rcvbuf)  # images: the latest ones matter, not a backlog
        if cfg.publish.curve_secret_key:
            if cfg.hmi.curve_secret_key is None:
                raise OSError(
                    "hmi.curve_secret_key: the daemon uses CURVE (publish.curve_secret_key); give the HMI its own "
                    "key pair (edge-keys keys/ hmi) and put hmi.key into publish.curve_allowed_clients"
                )
            public, secret = zmq.auth.load_certificate(cfg.hmi.curve_secret_key)
            if secret is None:
                raise OSError(f"hmi.curve_secret_key {cfg.hmi.curve_secret_key}: holds no secret key")
            sock.curve_serverkey = zmq.auth.load_certificate(Path(cfg.publish.curve_secret_key))[0]
            sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        sock.connect(endpoint)
        return sock

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in self._sockets:
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(200):
                try:
                    self._handle(sock.recv_multipart(zmq.NOBLOCK))
                except (ValueError, KeyError, IndexError, zmq.ZMQError) as e:  # one bad message must not end the screen
                    log.warning("message not understood: %s", e)
        for sock in self._sockets:
            sock.close()
        self._ctx.term()

    def _handle(self, parts: list[bytes]) -> None:
        topic = parts[0].decode()
        if topic.startswith(IMAGE_TOPIC_PREFIX):
            self._state.on_image(topic.removeprefix(IMAGE_TOPIC_PREFIX), json.loads(parts[1]), parts[2])
        elif topic.endswith("/status") and topic.count("/") == 2:
            self._state.on_status(topic.removesuffix("/status"), json.loads(parts[1]))
        else:
            self._state.on_verdict(topic, json.loads(parts[1]))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
