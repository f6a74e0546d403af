"""The line daemon: sources → bounded queue → batcher → backend → verdict → publisher.

One grab thread per camera (edge/grabbers.py); the main loop batches frames of all cameras
together, infers them per model (a camera may have its own bundle; cameras of one bundle share
it, edge/models.py), judges them and publishes each verdict on its camera's topic (it owns the
ZeroMQ socket, which is not thread-safe). A reload loads on a thread of its own and is switched
to between two batches (edge/reloader.py). Every frame that enters the queue ends as exactly
one published verdict (OK, NG or ERROR) or a counted drop; each stream's status topic carries
its counters (edge/status.py) so a PLC integrator can check that for themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from edge.batcher import FrameQueue
from edge.config import LineConfig
from edge.grabbers import GrabberPool
from edge.images import ImageOutlet
from edge.inspector import judge_batch
from edge.metrics import MetricsServer
from edge.models import Model, distinct, load_models
from edge.outlets import EvidenceOutlet, Outlet, ZmqOutlet
from edge.plant.hub import Plant
from edge.plant.tracking import Target
from edge.publish import MESSAGE_SCHEMA
from edge.reloader import Reloader
from edge.sources import Source, open_source
from edge.stats import Percentiles
from edge.status import Counters, Reloads, SourceStatus, StreamStatus
from edge.stream import Stream
from edge.systemd import SystemdNotifier, summary
from edge.types import Batch, Frame, Verdict

log = logging.getLogger(__name__)

# The exit status of a run in which a stream's grabber failed for good (0: every stream ended
# or was stopped as asked; 2, from edge.cli: a config the daemon cannot start with).
EXIT_GRABBER_FAILED = 1


class Daemon:
    def __init__(self, cfg: LineConfig):
        self.cfg = cfg
        assigned = load_models(cfg)
        self.streams = {
            s.source.name: Stream.of(s, cfg, open_source(s.source), *assigned[s.source.name]) for s in cfg.streams
        }
        self.queue = FrameQueue(cfg.queue.size, cfg.queue.overflow)
        self.grabbers = GrabberPool(self.queue)
        self.reloader = Reloader(self)
        self.infer_ms: deque[float] = deque(maxlen=2048)  # per batch
        self.batch_sizes: deque[int] = deque(maxlen=2048)
        self.stop_event = threading.Event()
        self.evidence = EvidenceOutlet(cfg.evidence)
        self.zmq = ZmqOutlet(cfg.publish)
        self.publisher = self.zmq.publisher
        # -- plant: announced parts and their deadlines, MQTT, OPC UA (edge/plant); it sends on ZeroMQ --
        self.plant = Plant(lambda: self.cfg, self._target, self.zmq)
        self.grabbers.claim = self.plant.claim
        self.images = ImageOutlet(cfg.hmi_images, cfg.publish) if cfg.hmi_images.bind else None
        # each gets every verdict and status
        self.outlets: list[Outlet] = [self.plant, self.evidence, *([self.images] if self.images else [])]
        self.metrics = MetricsServer.at(cfg.metrics.bind) if cfg.metrics.bind else None
        self._t_start = time.time()
        self.state = "starting"
        self.systemd = SystemdNotifier()
        self.systemd.check_heartbeat(cfg.publish.heartbeat_s)

    @property
    def reloads(self) -> Reloads:
        return self.reloader.record

    def stop(self) -> None:
        """Stop grabbing; frames already queued are still judged and published. From any thread."""
        self.stop_event.set()
        for stream in list(self.streams.values()):
            stream.halt.set()

    def request_reload(self) -> None:
        """Read the config again and apply it between two batches. From any thread."""
        self.reloader.request()

    def _target(self, name: str) -> Target | None:
        """What a part announced on stream ``name`` is answered with (edge/plant); None: no such stream."""
        stream = self.streams.get(name)
        return None if stream is None or stream.removed else stream.target(self.cfg.trigger.deadline_ms)

    def models(self) -> dict[str, list[str]]:
        """What judges what: each bundle in use, by name, with its streams."""
        by_model: dict[str, list[str]] = {}
        for name, stream in self.streams.items():
            if not stream.removed:
                by_model.setdefault(stream.model.bundle.name, []).append(name)
        return by_model

    def judging(self) -> str:
        return "; ".join(f"{', '.join(names)} with {model}" for model, names in self.models().items())

    def loaded(self) -> list[Model]:
        return distinct(s.model for s in self.streams.values())

    # -- streams come and go ----------------------------------------------------------------
    def start_grabber(self, stream: Stream, after: tuple[threading.Thread | None, Source] | None = None) -> None:
        """Starts a grab thread for the stream's source (``after``: the session it replaces)."""
        stream.halt = threading.Event()
        if self.stop_event.is_set():
            stream.halt.set()
        stream.grabber = self.grabbers.start(stream.source, stream.halt, after)

    def retire_removed(self) -> None:
        """Streams a reload removed go once their grabber has ended and their last frame is judged:
        their final status, then their counters, and their model when no other camera uses it."""
        for name, stream in list(self.streams.items()):
            if stream.removed and not (stream.grabber and stream.grabber.is_alive()) and not self._in_flight(name):
                # A camera of the new config on the same topic goes on there: no end to announce.
                self.final_status(
                    name, publish=all(s.removed or s.topic != stream.topic for s in self.streams.values())
                )
                del self.streams[name]
                self.queue.forget(name)
                if not any(stream.model is s.model for s in self.streams.values()):
                    stream.model.backend.close()

    # -- the main loop ----------------------------------------------------------------------
    def run(self) -> int:
        """Judges until every grabber has ended (the sources ended, or stop); the exit status:
        0, or EXIT_GRABBER_FAILED when a stream's grabber died and the line stopped judging it."""
        self.zmq.wait_for_subscribers(self.stop_event)
        self.state = "running"
        self.plant.start()
        log.info(
            "judging %s, publishing %s on %s",
            self.judging(),
            ", ".join(s.topic for s in self.streams.values()),
            self.publisher.endpoint,
        )
        self.grabbers.hold()
        for stream in list(self.streams.values()):
            self.start_grabber(stream)
        self.grabbers.release()
        self.systemd.ready(f"judging {self.judging()}")
        try:
            self._loop()
        finally:
            self.state = "stopping"
            self.stop()
            self.grabbers.join(timeout_s=5)
            self._finish()
            self.reloader.abandon()
        failed = sorted(self.grabbers.failed & set(self.streams))
        if failed:
            log.error("exiting %d: the grabber of %s failed, see above", EXIT_GRABBER_FAILED, ", ".join(failed))
            return EXIT_GRABBER_FAILED
        return 0

    def _loop(self) -> None:
        next_heartbeat = time.monotonic()
        while True:
            # self.cfg, read anew each time: a reload may change the batching and the heartbeat
            batch = self.queue.next_batch(
                self.cfg.batch.max_batch, self.cfg.batch.max_wait_ms / 1000, idle_timeout_s=self.cfg.publish.heartbeat_s
            )
            self.reloader.when_ready()
            if batch is not None:
                self._process(batch)
            elif self.queue.closed and not len(self.queue):
                return
            self.retire_removed()
            if time.monotonic() >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = time.monotonic() + self.cfg.publish.heartbeat_s

    # -- per batch ----------------------------------------------------------------------
    def _process(self, batch: Batch) -> None:
        # OK parts keep their map only for the screen's images (an NG verdict always has it).
        for v in self.judge_frames(batch.frames, keep_maps=bool(self.images and self.cfg.hmi_images.ok_per_s)):
            self._publish(v)

    def judge_frames(self, frames: list[Frame], keep_maps: bool = False) -> list[Verdict]:
        """One verdict per frame, in order: ERROR for a frame that cannot be judged, the model's
        for the rest, one inference per model over its streams' frames (``keep_maps``: OK
        verdicts keep their anomaly map too). Publishes nothing."""
        verdicts: list[Verdict | None] = [None] * len(frames)
        by_model: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            by_model.setdefault(id(self.streams[f.stream].model), []).append(i)
        for group in by_model.values():
            model = self.streams[frames[group[0]].stream].model
            mine = [frames[i] for i in group]
            judged = judge_batch(
                model.backend, model.bundle, mine, [self.streams[f.stream].judge for f in mine], keep_maps
            )
            if judged.infer_ms is not None:
                self.infer_ms.append(judged.infer_ms)
                self.batch_sizes.append(judged.inferred)
            for i, v in zip(group, judged.verdicts):
                verdicts[i] = v
        return [v for v in verdicts if v is not None]

    def _publish(self, v: Verdict) -> None:
        stream = self.streams[v.frame.stream]
        t_publish = time.time()
        stream.stats.count(v, (t_publish - v.frame.t_grab) * 1000)
        for outlet in self.outlets:
            outlet.verdict(stream, v, t_publish)

    # -- status ---------------------------------------------------------------------------
    def _in_flight(self, name: str) -> int:
        """Frames of the stream that entered and have neither a verdict nor a drop yet."""
        return self.queue.frames_in[name] - self.queue.dropped[name] - self.streams[name].stats.judged()

    def status(self, name: str, state: str | None = None) -> StreamStatus:
        stream, s = self.streams[name], self.streams[name].stats
        cal, source = stream.model.bundle.calibration, stream.source
        now = time.time()
        return StreamStatus(
            schema=MESSAGE_SCHEMA,
            line=stream.line,
            station=stream.cfg.station,
            t=now,
            state=state or ("stopping" if stream.removed else self.state),
            uptime_s=round(now - self._t_start, 3),
            counters=self._counters(name),
            latency_ms=Percentiles.of(s.latency_ms),
            infer_ms=Percentiles.of(self.infer_ms),
            mean_batch=round(float(np.mean(self.batch_sizes)), 2) if self.batch_sizes else None,
            queue_depth=len(self.queue),
            streams=len(self.streams),
            source=SourceStatus(name, source.state, source.reconnects, source.problem),
            score_drift=s.drift(cal.mu if cal else None, cal.sigma if cal else None),
            threshold=stream.judge.threshold,
            model=stream.model.bundle.name,
            reloads=self.reloads,
            backend=stream.model.backend.describe(),
        )

    def _counters(self, name: str) -> Counters:
        s, q = self.streams[name].stats, self.queue
        verdicts = s.verdicts["OK"], s.verdicts["NG"], s.verdicts["ERROR"]
        in_flight, grab_errors = self._in_flight(name), self.grabbers.errors[name]
        return Counters(
            q.frames_in[name],
            *verdicts,
            q.dropped[name],
            s.publish_failed,
            in_flight,
            grab_errors,
            *self.evidence.counts(),
            *(self.images.counts() if self.images else (None, None)),
        )

    def _heartbeat(self) -> None:
        self.publisher.poll_subscriptions()
        statuses = [self.status(name) for name in self.streams]
        for stream, status in zip(self.streams.values(), statuses):
            for outlet in self.outlets:
                outlet.status(stream, status)
        if self.metrics is not None:
            self.metrics.update(statuses)
        self.systemd.alive(summary(self.state, statuses))

    def _finish(self) -> None:
        self.evidence.close()  # written out before the final status counts it
        self.plant.finish()  # parts still open are answered before the final status counts them
        if self.images is not None:
            self.images.close()  # sent or dropped, before the final status counts them
        self.state = "stopped"
        self.systemd.stopping(summary(self.state, [self.status(name) for name in self.streams]))
        for name in self.streams:
            self.final_status(name)
        self.close()

    def final_status(self, name: str, publish: bool = True) -> None:
        """The last status of the stream, state 'stopped', to the outlets (``publish``), and its totals in the log."""
        stream = self.streams[name]
        final = self.status(name, state="stopped")
        for outlet in self.outlets if publish else ():
            outlet.status(stream, final)
        log.info("%s stopped: %s", stream.topic, final.totals())

    def close(self) -> None:
        """Release the outlets, the models and the metrics port (after run, or instead of it)."""
        for outlet in self.outlets:
            outlet.close()
        for model in self.loaded():
            model.backend.close()
        self.systemd.close()
        if self.metrics is not None:
            self.metrics.close()
