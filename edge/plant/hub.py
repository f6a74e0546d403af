"""The daemon's side of the plant: announcements in (ZeroMQ, MQTT, OPC UA), answers out.

An outlet of the daemon (edge/outlets.py) in place of the ZeroMQ one, which it sends through:
``verdict`` for each verdict (its part is answered, on ZeroMQ and every link), ``status`` for
each heartbeat; besides, ``claim`` for each grabbed frame (it gets its part) and ``finish`` at the end (parts still open are answered ERROR ``stopped``). A thread of its own
answers parts ERROR ``deadline`` at their deadlines, whatever the judging loop is doing (a
runtime that hangs must not leave the PLC waiting). The ZeroMQ verdict of a part and its deadline
ERROR are sent under the tracker's lock, so a PLC always gets a part's answer before its late
verdict. MQTT and OPC UA (the ``plant`` extra) are imported only when configured.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from edge.config import LineConfig
from edge.outlets import ZmqOutlet
from edge.plant.tracking import Announced, Part, PartTracker, Target
from edge.plant.trigger import TriggerServer
from edge.publish import verdict_message
from edge.status import StreamStatus
from edge.stream import Stream
from edge.types import Frame, Verdict

log = logging.getLogger(__name__)

Send = Callable[[str, dict], bool]  # (ZeroMQ topic, message) → sent


class PlantLinkError(OSError):
    """A configured PLC link that cannot run here (its package missing, its port taken, bad keys):
    refused at start-up with the fix, like a ZeroMQ port that is taken."""


class Link(Protocol):
    """A PLC protocol beside ZeroMQ. Its methods never block the caller (the judging loop)."""

    def start(self) -> None: ...
    def verdict(self, msg: dict) -> None: ...
    def status(self, msg: dict) -> None: ...
    def describe(self) -> dict: ...
    def close(self) -> None: ...


def _needs(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise PlantLinkError(
            f"{what} is configured but {module} is not installed: pip install 'edge-inspect[plant]' "
            f"(or pip install {module.split('.')[0]})"
        ) from None


def open_links(cfg: LineConfig, announce: Callable[..., Announced]) -> dict[str, Link]:
    links: dict[str, Link] = {}
    if cfg.mqtt.url:
        _needs("paho.mqtt", "mqtt.url")
        from edge.plant.mqtt import MqttLink

        links["mqtt"] = MqttLink(cfg.mqtt, cfg.line, announce, {s.station: s.source.name for s in cfg.streams})
    if cfg.opcua.endpoint:
        _needs("asyncua", "opcua.endpoint")
        from edge.plant.opcua import OpcuaLink

        links["opcua"] = OpcuaLink(cfg.opcua, cfg.line, [cfg.topic(s) for s in cfg.streams], announce)
    return links


class Plant:
    def __init__(self, config: Callable[[], LineConfig], targets: Callable[[str], Target | None], zmq: ZmqOutlet):
        """``config``: the running config (a reload replaces it); ``targets``: a stream's Target by
        source name; ``zmq``: the ZeroMQ outlet it sends through (and closes)."""
        cfg = config()
        self._zmq = zmq
        self._send: Send = zmq.publisher.send
        self.tracking = cfg.tracks_parts
        self.tracker = PartTracker(targets, lambda: config().trigger.max_pending)
        self.trigger = TriggerServer(cfg.trigger.bind, self.tracker.announce) if cfg.trigger.bind else None
        try:
            self.links = open_links(cfg, self.tracker.announce)
        except BaseException:
            if self.trigger is not None:
                self.trigger.close()
            raise
        self._stop = threading.Event()
        self._deadlines = threading.Thread(target=self._watch_deadlines, name="deadlines", daemon=True)

    def start(self) -> None:
        if self.trigger is not None:
            self.trigger.start()
        for link in self.links.values():
            link.start()
        if self.tracking:
            self._deadlines.start()

    def claim(self, frame: Frame) -> bool:
        """Called by a grab thread for each frame: False when the frame is no part's and its stream skips those."""
        return self.tracker.claim(frame) if self.tracking else True

    def verdict(self, stream: Stream, v: Verdict, t_publish: float) -> None:
        msg = verdict_message(v, stream.line, stream.cfg.station, stream.model.bundle.name, t_publish)
        if not self.publish(stream.topic, v, msg):
            stream.stats.publish_failed += 1

    def status(self, stream: Stream, status: StreamStatus) -> None:
        self.publish_status(stream.topic, {**status.to_message(), **self.status_fields(stream.source.name)})

    def publish(self, topic: str, v: Verdict, msg: dict) -> bool:
        """Sends a verdict on ZeroMQ and every link, with its part's fields (``late`` when its part
        was answered at its deadline already). False when ZeroMQ refused it."""
        with self.tracker.lock:
            outcome, part = self.tracker.answer(v.frame)
            if part is not None:
                msg.update(part.fields(), late=outcome == "late")
            return self._send_everywhere(topic, msg)

    def _send_everywhere(self, topic: str, msg: dict) -> bool:
        sent = self._send(topic, msg)
        for link in self.links.values():
            link.verdict(msg)
        return sent

    def publish_status(self, topic: str, status: dict) -> None:
        self._send(f"{topic}/status", status)
        for link in self.links.values():
            link.status(status)

    def status_fields(self, stream: str) -> dict:
        """What a stream's status carries about parts and links (nothing without them)."""
        fields: dict = {}
        if self.tracking:
            fields["parts"] = self.tracker.counters(stream)
        links = {name: link.describe() for name, link in self.links.items()}
        if self.trigger is not None:
            links["trigger"] = self.trigger.status()
        if links:
            fields["links"] = links
        return fields

    def _watch_deadlines(self) -> None:
        while not self._stop.is_set():
            self.tracker.wait_for_due(self._stop)
            self._answer_open(time.monotonic(), "deadline")

    def _answer_open(self, now: float, why: str) -> None:
        with self.tracker.lock:
            for part in self.tracker.expire(now, why):
                self._send_everywhere(part.target.topic, part_error(part, why))

    def finish(self) -> None:
        """The line stops: no more announcements, and every part still open is answered ERROR
        ``stopped`` now (no frame of it will be judged any more)."""
        self.tracker.refusing = "the line is stopping"
        self._stop.set()
        self.tracker.wake()
        if self._deadlines.is_alive():
            self._deadlines.join(5)
        self._answer_open(float("inf"), "stopped")

    def close(self) -> None:
        """After the final status: the links say goodbye (MQTT: offline) and close."""
        if self.trigger is not None:
            self.trigger.close()
        for link in self.links.values():
            link.close()
        self._zmq.close()


def part_error(part: Part, why: str) -> dict:
    """The ERROR that answers a part the line did not judge in time (``why``: deadline, stopped)."""
    target = part.target
    frame = Frame(target.stream, -1, "", 0.0, None, why, part_id=part.part_id)
    if part.frame is not None:
        frame.seq, frame.frame_id, frame.t_grab = part.frame
    msg = verdict_message(
        Verdict(frame, "ERROR", None, target.threshold, error=why),
        target.line,
        target.station,
        target.model,
        time.time(),
    )
    if part.frame is None:  # never photographed: no frame to name
        msg.update(seq=None, frame_id=None, t_grab=None)
    msg.update(part.fields(), late=False)
    return msg
