"""Where the daemon's verdicts and statuses go: each outlet gets every verdict and every status,
from the main loop (one thread, in order). ZeroMQ and the evidence folders are two; another
publisher (OPC UA, MQTT, ...) is one more class with these three methods, added to
``Daemon.outlets``. An outlet must not block: the line waits for it."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from edge.config import EvidenceConfig, PublishConfig
from edge.evidence import EvidenceStore
from edge.publish import Curve, Publisher, verdict_message
from edge.status import StreamStatus
from edge.stream import Stream
from edge.types import Verdict

log = logging.getLogger(__name__)


class Outlet(Protocol):
    def verdict(self, stream: Stream, v: Verdict, t_publish: float) -> None:
        """One verdict of ``stream``, already counted in its stats."""

    def status(self, stream: Stream, status: StreamStatus) -> None:
        """A heartbeat of ``stream``, or its last one (``status.state`` 'stopped')."""

    def close(self) -> None:
        """After the final statuses."""


class ZmqOutlet:
    """The PLC's ZeroMQ topics: ``<topic>`` for verdicts, ``<topic>/status`` for statuses."""

    def __init__(self, cfg: PublishConfig) -> None:
        self._cfg = cfg  # as started: a reload cannot change its socket (AT_RESTART)
        curve = None
        if cfg.curve_secret_key and cfg.curve_allowed_clients:  # both or neither: the config checks
            curve = Curve(cfg.curve_secret_key, cfg.curve_allowed_clients)
        self.publisher = Publisher(cfg.bind, sndhwm=cfg.sndhwm, curve=curve)

    def wait_for_subscribers(self, stop: threading.Event) -> None:
        """Up to ``wait_timeout_s`` for ``wait_for_subscribers`` PLCs, so that they get the first part."""
        n, timeout_s = self._cfg.wait_for_subscribers, self._cfg.wait_timeout_s
        if n:
            log.info("waiting up to %.1fs for %d subscriber(s) on %s", timeout_s, n, self.publisher.endpoint)
            if not self.publisher.wait_for_subscribers(n, timeout_s, stop):
                log.warning("starting without the %d subscriber(s) asked for", n)

    def verdict(self, stream: Stream, v: Verdict, t_publish: float) -> None:
        msg = verdict_message(v, stream.line, stream.cfg.station, stream.model.bundle.name, t_publish)
        if not self.publisher.send(stream.topic, msg):
            stream.stats.publish_failed += 1

    def status(self, stream: Stream, status: StreamStatus) -> None:
        self.publisher.send(f"{stream.topic}/status", status.to_message())

    def close(self) -> None:
        self.publisher.close()


class EvidenceOutlet:
    """NG parts into ``evidence.dir``, every ``ok_every``-th OK part of a stream into its ``ok`` folder."""

    def __init__(self, cfg: EvidenceConfig) -> None:
        self.ng = EvidenceStore(cfg.dir, cfg.max_files, raw=cfg.raw) if cfg.dir else None
        self.ok = (
            EvidenceStore(cfg.dir / "ok", cfg.max_files, overlay=False, raw=True) if cfg.dir and cfg.ok_every else None
        )
        self._ok_every = cfg.ok_every  # kept: a reload cannot change it (AT_RESTART)

    def verdict(self, stream: Stream, v: Verdict, t_publish: float) -> None:
        store = None
        if v.verdict == "NG" and self.ng is not None:
            store = self.ng
        elif v.verdict == "OK" and self.ok is not None and not stream.stats.verdicts["OK"] % self._ok_every:
            store = self.ok
        if store is not None:
            store.submit(v, verdict_message(v, stream.line, stream.cfg.station, stream.model.bundle.name, t_publish))

    def status(self, stream: Stream, status: StreamStatus) -> None:
        pass  # the counts are in every stream's status already

    def counts(self) -> tuple[int | None, int | None, int | None, int | None]:
        """Saved and skipped, NG parts then OK samples; None where that writer is off."""
        ng, ok = self.ng, self.ok
        return (*((ng.saved, ng.skipped) if ng else (None, None)), *((ok.saved, ok.skipped) if ok else (None, None)))

    def close(self) -> None:
        """Waits for what is queued to be written; again is harmless."""
        for store in (self.ng, self.ok):
            if store is not None:
                store.close()
