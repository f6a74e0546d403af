"""The operator screen's images: a small JPEG of judged parts (the heatmap overlay of
edge.evidence) on the topic ``img/<line>/<station>``, on a ZeroMQ socket of its own
(``hmi_images.bind``).

Outside the verdict namespace on purpose: a PLC subscribed to ``line3/`` never gets a JPEG it
cannot parse. Its own socket, because it is the only way to count what a slow screen misses:
the image socket refuses a message when a subscriber's queue is full (ZMQ_XPUB_NODROP) and
that refusal is counted, where the verdict socket drops silently (a PLC must never slow the
line, and neither may a screen). Encoding takes milliseconds, so it happens on a worker thread
behind a small queue, which also owns the socket; a full queue is a counted drop: judging never
waits for the screen.

Message: multipart [topic, JSON meta, JPEG bytes]; the meta is the verdict message's fields
(edge.publish.verdict_message) plus ``width`` and ``height`` of the JPEG.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import cv2

from edge.config import HmiImagesConfig, PublishConfig
from edge.evidence import overlay
from edge.publish import Curve, Publisher, verdict_message
from edge.status import StreamStatus
from edge.stream import Stream
from edge.types import Verdict

log = logging.getLogger(__name__)

IMAGE_TOPIC_PREFIX = "img/"
SNDBUF = 256 * 1024


def image_topic(verdict_topic: str) -> str:
    """``line3/st1`` → ``img/line3/st1``."""
    return IMAGE_TOPIC_PREFIX + verdict_topic


def encode(v: Verdict, max_side: int, quality: int) -> tuple[bytes, int, int]:
    """The verdict's overlay as a JPEG whose longer side is at most ``max_side``: bytes, width, height."""
    image = overlay(v)
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cv2.imencode could not encode the overlay of {v.frame.frame_id}")
    return data.tobytes(), image.shape[1], image.shape[0]


class ImageOutlet:
    """Every NG part (``every_ng``) and at most ``ok_per_s`` OK parts per camera, as JPEGs."""

    def __init__(self, cfg: HmiImagesConfig, publish: PublishConfig) -> None:
        assert cfg.bind is not None
        self._cfg = cfg  # as started: a reload cannot change it (AT_RESTART)
        curve = None
        if publish.curve_secret_key and publish.curve_allowed_clients:  # the screen is let in as a PLC is
            curve = Curve(publish.curve_secret_key, publish.curve_allowed_clients)
        # A small kernel buffer too: images a stalled screen has not read are then refused (and
        # counted) after ~sndhwm of them plus 256 KiB, not after megabytes of silent buffering.
        self.publisher = Publisher(cfg.bind, sndhwm=cfg.sndhwm, linger_ms=0, curve=curve, sndbuf=SNDBUF)
        self.publisher.refuse_when_full()
        self.sent = 0
        self.dropped = 0  # the queue was full (encoding too slow) or a subscriber's was (the screen too slow)
        self._last_ok: dict[str, float] = {}  # stream → when its last OK image was queued
        self._queue: queue.Queue[tuple[Verdict, dict] | None] = queue.Queue(maxsize=cfg.queue)
        # The worker owns the socket from here on (a ZeroMQ socket is used by one thread at a time).
        self._thread = threading.Thread(target=self._run, name="hmi-images", daemon=True)
        self._thread.start()

    def wants(self, stream: Stream, v: Verdict) -> bool:
        if v.verdict == "NG":
            return self._cfg.every_ng
        if v.verdict != "OK" or not self._cfg.ok_per_s or v.anomaly_map is None:
            return False
        now = time.monotonic()
        if now - self._last_ok.get(stream.cfg.source.name, -1e9) < 1 / self._cfg.ok_per_s:
            return False
        self._last_ok[stream.cfg.source.name] = now
        return True

    def verdict(self, stream: Stream, v: Verdict, t_publish: float) -> None:
        if not self.wants(stream, v):
            return
        meta = verdict_message(v, stream.line, stream.cfg.station, stream.model.bundle.name, t_publish)
        meta["topic"] = image_topic(stream.topic)
        try:
            self._queue.put_nowait((v, meta))
        except queue.Full:
            self.dropped += 1

    def status(self, stream: Stream, status: StreamStatus) -> None:
        pass  # the counts are in every stream's status already

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            v, meta = item
            try:
                jpeg, meta["width"], meta["height"] = encode(v, self._cfg.max_side, self._cfg.quality)
            except (cv2.error, ValueError) as e:  # one image that cannot be made must not end the others
                log.warning("no screen image of %s: %s", v.frame.frame_id, e)
                self.dropped += 1
                continue
            header = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
            if self.publisher.send_parts([meta["topic"].encode(), header, jpeg]):
                self.sent += 1
            else:
                self.dropped += 1
            self.publisher.poll_subscriptions()  # reads the subscription events XPUB queues up
        self.publisher.close()

    def counts(self) -> tuple[int, int]:
        return self.sent, self.dropped

    def close(self) -> None:
        """Sends what is queued (a stalled screen: dropped at once), then closes the socket; again is harmless."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
