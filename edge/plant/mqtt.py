"""MQTT beside ZeroMQ (paho-mqtt, the ``plant`` extra): verdicts, retained status, a last will,
and part announcements as commands.

Topics, under ``<prefix>/<line>/``: ``<station>/verdict`` (every verdict), ``<station>/status``
(retained heartbeat), ``state`` (retained ``online``; the broker sends the will ``offline`` when
the line goes away unannounced), ``<station>/cmd/announce`` (``{"part_id": ..., "deadline_ms": ...}``
from the PLC) answered on ``<station>/cmd/announce/ack``.

A broker outage never slows judging: verdicts wait in a bounded buffer (the oldest dropped and
counted beyond ``mqtt.buffer``), statuses keep only the latest per topic, and a thread of its own
hands them to paho, which reconnects with back-off. The status's ``links.mqtt`` says how it goes.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho

from edge.config import LineConfig, MqttConfig
from edge.plant.hub import PlantLinkError
from edge.plant.tracking import Announced
from edge.plcsim import Reply

log = logging.getLogger(__name__)


def read_password(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as e:
        raise PlantLinkError(f"{key} {path}: cannot read a password from its first line ({e})") from None


def make_client(cfg: MqttConfig, client_id: str) -> tuple[paho.Client, str, int]:
    """A paho client set up for the broker at ``cfg.url`` (TLS for mqtts://, user and password);
    returns it with the broker's host and port."""
    url = urlsplit(cfg.url or "")
    tls = url.scheme == "mqtts"
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    if tls:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
        )
    if cfg.username is not None and cfg.password_file is not None:
        client.username_pw_set(cfg.username, read_password(cfg.password_file, "mqtt.password_file"))
    client.reconnect_delay_set(max(1, round(cfg.reconnect.initial_s)), max(1, round(cfg.reconnect.max_s)))
    return client, url.hostname or "localhost", url.port or (8883 if tls else 1883)


class MqttLink:
    def __init__(self, cfg: MqttConfig, line: str, announce: Callable[..., Announced], streams: dict[str, str]):
        """``streams``: source name by station, for announcements (a topic names its station)."""
        self._cfg = cfg
        self._announce = announce
        self._streams = streams
        self._base = f"{cfg.topic_prefix}/{line}"
        self._client, self._host, self._port = make_client(cfg, cfg.client_id or f"edge-run-{line}")
        self._client.will_set(f"{self._base}/state", "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.max_queued_messages_set(cfg.buffer)
        self._cond = threading.Condition()
        self._verdicts: deque[tuple[str, bytes]] = deque()
        self._statuses: dict[str, bytes] = {}  # the latest per topic: an older one says nothing new
        self._connected = False
        self._closing = False
        # sent: handed to paho, which keeps a QoS 1 message until the broker has it, across reconnects;
        # dropped: beyond the buffer (or paho's queue of as many) while the broker was away.
        self.counters = {"sent": 0, "dropped": 0, "reconnects": 0, "announcements": 0}
        self.last_error: str | None = None
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-send", daemon=True)

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=self._cfg.keepalive_s)
        self._client.loop_start()
        self._sender.start()

    # -- out ------------------------------------------------------------------------------
    def verdict(self, msg: dict) -> None:
        with self._cond:
            if len(self._verdicts) >= self._cfg.buffer:
                self._verdicts.popleft()
                self.counters["dropped"] += 1
            self._verdicts.append((f"{self._base}/{msg['station']}/verdict", _json(msg)))
            self._cond.notify()

    def status(self, msg: dict) -> None:
        with self._cond:
            self._statuses[f"{self._base}/{msg['station']}/status"] = _json(msg)
            self._cond.notify()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or (self._connected and self._pending()))
                if not self._connected:
                    return  # closing with no broker: what is left is counted as unsent
                if not self._pending():
                    return
                if self._statuses:
                    topic, payload, retain = *self._statuses.popitem(), True
                else:
                    (topic, payload), retain = self._verdicts.popleft(), False
            self._publish(topic, payload, retain)

    def _pending(self) -> int:
        return len(self._verdicts) + len(self._statuses)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self._cfg.qos, retain=retain)
        if info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):  # NO_CONN: paho keeps it for the reconnect
            self.counters["sent"] += 1
        else:
            self.counters["dropped"] += 1
            self.last_error = paho.error_string(info.rc)

    # -- paho's thread ----------------------------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason, _properties) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.warning("mqtt %s:%d: %s", self._host, self._port, self.last_error)
            return
        client.publish(f"{self._base}/state", "online", qos=1, retain=True)
        client.subscribe(f"{self._base}/+/cmd/announce", qos=1)
        log.info("mqtt: connected to %s:%d, publishing under %s/", self._host, self._port, self._base)
        with self._cond:
            self._connected, self.last_error = True, None
            self._cond.notify()

    def _on_disconnect(self, _client, _userdata, _flags, reason, _properties) -> None:
        with self._cond:
            if self._connected:
                self.counters["reconnects"] += 1
                log.warning("mqtt %s:%d: connection lost (%s); reconnecting", self._host, self._port, reason)
            self._connected = False
            self.last_error = f"disconnected: {reason}"

    def _on_message(self, client, _userdata, message) -> None:
        station = message.topic[len(self._base) + 1 :].split("/")[0]
        try:
            request = json.loads(message.payload)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            reply = Announced(False, None, 'a command is one JSON object: {"part_id": ID} (optionally deadline_ms)')
        else:
            stream = self._streams.get(station, station)
            reply = self._announce(stream, request.get("part_id"), request.get("deadline_ms"))
        self.counters["announcements"] += 1
        ack = {"part_id": request.get("part_id") if isinstance(request, dict) else None, **reply.to_json()}
        client.publish(f"{message.topic}/ack", _json(ack), qos=1)

    def describe(self) -> dict:
        with self._cond:
            return {
                "broker": f"{self._host}:{self._port}",
                "connected": self._connected,
                **self.counters,
                "buffered": len(self._verdicts),
                "last_error": self.last_error,
            }

    def close(self, flush_s: float = 2.0) -> None:
        """Sends what it can within ``flush_s`` (the final statuses among it), then ``offline``."""
        deadline = time.monotonic() + flush_s
        with self._cond:
            self._cond.wait_for(lambda: not self._connected or not self._pending(), flush_s)
            self._closing = True
            self._cond.notify_all()
        if self._sender.is_alive():
            self._sender.join(max(0.1, deadline - time.monotonic()))
        if self._connected:
            self._client.publish(f"{self._base}/state", "offline", qos=1, retain=True).wait_for_publish(
                max(0.1, deadline - time.monotonic())
            )
        self._client.disconnect()
        self._client.loop_stop()
        if self._pending():
            log.warning("mqtt: %d message(s) not sent, the broker was away", self._pending())


def _json(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()


class MqttVia:
    """edge-plc-sim's MQTT side: announces on ``cmd/announce``, hears acks and verdicts."""

    def __init__(self, cfg: LineConfig, host: str):
        if not cfg.mqtt.url:
            raise PlantLinkError(f"{cfg.path}: mqtt.url: not set, so the line is not on MQTT")
        self._base = f"{cfg.mqtt.topic_prefix}/{cfg.line}"
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._client, broker, port = make_client(cfg.mqtt, f"edge-plc-sim-{time.time_ns() % 10**9}")
        self._client.on_message = lambda _c, _u, m: self._inbox.put((m.topic, bytes(m.payload)))
        self._client.on_connect = lambda c, *_: c.subscribe(
            [(f"{self._base}/+/verdict", 1), (f"{self._base}/+/status", 1), (f"{self._base}/+/cmd/announce/ack", 1)]
        )
        self._client.connect(host if broker in ("0.0.0.0", "::") else broker, port)
        self._client.loop_start()

    def ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                topic, payload = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            # A retained status may be an old run's: the line is up when it says so now.
            if topic.endswith("/status") and abs(json.loads(payload).get("t", 0) - time.time()) < 10:
                return True
        return False

    def announce(self, stream: str, station: str, part_id: str, deadline_ms: float | None) -> None:
        request: dict = {"part_id": part_id}
        if deadline_ms is not None:
            request["deadline_ms"] = deadline_ms
        self._client.publish(f"{self._base}/{station}/cmd/announce", _json(request), qos=1)

    def poll(self, timeout_s: float) -> Iterator[Reply | dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                topic, payload = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            msg = json.loads(payload)
            if topic.endswith("/ack"):
                yield Reply(str(msg.get("part_id")), bool(msg.get("accepted")), msg.get("error"))
            elif topic.endswith("/verdict"):
                yield msg

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
