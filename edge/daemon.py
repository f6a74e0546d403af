"""The line daemon: sources → bounded queue → batcher → backend → verdict → publisher.

One grab thread per camera; the main loop batches frames of all cameras together, infers
them per model (a camera may have its own bundle; cameras of one bundle share it), judges them
and publishes each verdict on its camera's topic (it owns the ZeroMQ socket, which is not
thread-safe). Every frame that enters the queue ends as exactly
one published verdict (OK, NG or ERROR) or a counted drop; each stream's status topic carries
its counters so a PLC integrator can check that for themselves.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.backends import Backend, BackendError, load_backend
from edge.batcher import FrameQueue
from edge.bundle import Bundle, BundleError, load_bundle
from edge.config import ConfigError, LineConfig, StreamConfig, load_config
from edge.evidence import EvidenceStore
from edge.inspector import judge_batch, judge_for
from edge.metrics import MetricsServer
from edge.plant.hub import Plant
from edge.plant.tracking import Target
from edge.publish import MESSAGE_SCHEMA, Curve, Publisher, verdict_message
from edge.sources import Source, SourceError, open_source
from edge.stats import LineStats, percentiles
from edge.systemd import SystemdNotifier
from edge.types import Batch, Frame, Verdict
from edge.verdict import Judge

log = logging.getLogger(__name__)


# What a reload cannot change in a running daemon: its socket, ports, queue, evidence writers and
# logging are set up once. A reload that changes one keeps the running value and says so.
AT_RESTART = (
    "publish.bind",
    "publish.sndhwm",
    "publish.curve_secret_key",
    "publish.curve_allowed_clients",
    "queue.size",
    "queue.overflow",
    "evidence.dir",
    "evidence.max_files",
    "evidence.raw",
    "evidence.ok_every",
    "metrics.bind",
    "trigger.bind",
    "mqtt",
    "opcua",
    "log_level",
    "log_format",
)


def keep_for_restart(running: LineConfig, new: LineConfig) -> list[str]:
    """Puts the running values of the AT_RESTART keys back into ``new``; returns the ones the
    file changed, as ``key (running → in the file)``."""
    changed = []
    for key in AT_RESTART:
        *parents, leaf = key.split(".")
        section, running_section = (functools.reduce(getattr, parents, cfg) for cfg in (new, running))
        if getattr(section, leaf) != getattr(running_section, leaf):
            changed.append(f"{key} ({getattr(running_section, leaf)} → {getattr(section, leaf)})")
            setattr(section, leaf, getattr(running_section, leaf))
    return changed


def summary(state: str, statuses: list[dict]) -> str:
    """One line for ``systemctl status``: the state and what the line judged, all streams together."""
    total = {key: sum(s["counters"][key] for s in statuses) for key in ("ok", "ng", "error", "dropped")}
    models = ", ".join(sorted({s["model"] for s in statuses}))
    return (
        f"{state}: {total['ok']} OK, {total['ng']} NG, {total['error']} ERROR, "
        f"{total['dropped']} dropped ({len(statuses)} stream(s), {models})"
    )


@dataclass(slots=True)
class Model:
    """A bundle on its backend; streams that name the same bundle share one."""

    bundle: Bundle
    backend: Backend


def distinct(models: Iterable[Model]) -> list[Model]:
    return list({id(m): m for m in models}.values())


def close_models(models: Iterable[Model]) -> None:
    for model in distinct(models):
        model.backend.close()


def load_models(cfg: LineConfig) -> dict[str, tuple[Model, Judge]]:
    """Each stream's model and judge, by source name, every bundle loaded and checked once (files,
    hashes, calibration, backend). On any failure, what was loaded is closed and nothing is kept."""
    loaded: dict[Path, Model] = {}
    try:
        assigned = {}
        for stream in cfg.streams:
            if stream.bundle not in loaded:
                bundle = load_bundle(stream.bundle)
                loaded[stream.bundle] = Model(bundle, load_backend(bundle, cfg.backend, cfg.gpu, cfg.batch.max_batch))
            model = loaded[stream.bundle]
            assigned[stream.source.name] = model, judge_for(model.bundle, stream.k)
        return assigned
    except BaseException:
        close_models(loaded.values())
        raise


@dataclass(slots=True)
class PreparedReload:
    """What a reload loaded and checked, ready to switch to."""

    cfg: LineConfig
    assigned: dict[str, tuple[Model, Judge]]  # by source name
    sources: dict[str, Source]  # new sources for the cameras that need one


@dataclass(slots=True)
class Stream:
    cfg: StreamConfig
    source: Source
    line: str  # kept per stream: a removed one drains under the line it ran on
    topic: str
    stats: LineStats
    model: Model
    judge: Judge
    halt: threading.Event = field(default_factory=threading.Event)  # stops this camera's grabber alone
    grabber: threading.Thread | None = None
    removed: bool = False  # by a reload: still judged until its last queued frame, then gone


class Daemon:
    def __init__(self, cfg: LineConfig):
        self.cfg = cfg
        assigned = load_models(cfg)
        self.streams = {
            s.source.name: Stream(
                s, open_source(s.source), cfg.line, cfg.topic(s), LineStats(), *assigned[s.source.name]
            )
            for s in cfg.streams
        }
        self.queue = FrameQueue(cfg.queue.size, cfg.queue.overflow)
        self.infer_ms: deque[float] = deque(maxlen=2048)  # per batch
        self.batch_sizes: deque[int] = deque(maxlen=2048)
        self.stop_event = threading.Event()
        self._reload = threading.Event()
        self._preparing: threading.Thread | None = None  # a reload loading on its own thread
        self._prepared: PreparedReload | Exception | None = None
        self._prepared_lock = threading.Lock()
        self._abandoned = False  # stopped while a reload loaded: it will not be applied
        self.reloads: dict = {"ok": 0, "refused": 0, "last_error": None, "at_restart": []}
        ev = cfg.evidence
        self.evidence = EvidenceStore(ev.dir, ev.max_files, raw=ev.raw) if ev.dir else None
        self.ok_samples = (
            EvidenceStore(ev.dir / "ok", ev.max_files, overlay=False, raw=True) if ev.dir and ev.ok_every else None
        )
        pub = cfg.publish
        curve = Curve(pub.curve_secret_key, pub.curve_allowed_clients) if pub.curve_secret_key else None
        self.publisher = Publisher(pub.bind, sndhwm=pub.sndhwm, curve=curve)
        try:  # -- plant: announced parts, deadlines, MQTT and OPC UA (edge/plant) --
            self.plant = Plant(cfg, self._target, self.publisher.send)
        except BaseException:
            self.publisher.close()
            raise
        self.metrics = None
        if cfg.metrics.bind:
            host, port = cfg.metrics.bind.rsplit(":", 1)
            self.metrics = MetricsServer(host, int(port))
        self._grabbers: list[threading.Thread] = []
        self._grabbing = 0  # grab threads not yet ended; the last one to end closes the queue
        self._grabbing_lock = threading.Lock()
        self._t_start = time.time()
        self._state = "starting"
        self.systemd = SystemdNotifier()
        if self.systemd.watchdog_s is not None and self.systemd.watchdog_s < 3 * cfg.publish.heartbeat_s:
            log.warning(
                "systemd's WatchdogSec (%.1f s) leaves little room over publish.heartbeat_s (%.1f s), which "
                "paces the watchdog pings: a slow batch may get the line restarted; set WatchdogSec to 10 "
                "heartbeats or more",
                self.systemd.watchdog_s,
                cfg.publish.heartbeat_s,
            )

    def stop(self) -> None:
        """Stop grabbing; frames already queued are still judged and published. From any thread."""
        self.stop_event.set()
        for stream in list(self.streams.values()):
            stream.halt.set()

    def request_reload(self) -> None:
        """Read the config again and apply it between two batches (``_reload_when_ready``). From any thread."""
        self._reload.set()

    def _target(self, name: str) -> Target | None:
        """What a part announced on stream ``name`` is answered with (edge/plant); None: no such stream."""
        stream = self.streams.get(name)
        if stream is None or stream.removed:
            return None
        rules = stream.cfg.trigger
        return Target(
            name,
            stream.line,
            stream.cfg.station,
            stream.topic,
            stream.judge.threshold,
            stream.model.bundle.name,
            rules.deadline_ms or self.cfg.trigger.deadline_ms,
            "skip" if rules.unannounced == "skip" else "judge",
        )

    def models(self) -> dict[str, list[str]]:
        """What judges what: each bundle in use, by name, with its streams."""
        by_model: dict[str, list[str]] = {}
        for name, stream in self.streams.items():
            if not stream.removed:
                by_model.setdefault(stream.model.bundle.name, []).append(name)
        return by_model

    def _reload_config(self) -> None:
        """Read the config file again and apply it now (the running daemon does the loading on a
        thread of its own instead, see run: judging goes on meanwhile)."""
        self.systemd.reloading()
        self._apply_reload(self._prepare_reload())

    def _prepare_reload(self) -> PreparedReload | Exception:
        """The slow half of a reload, which touches nothing the line uses: the config read again,
        every bundle loaded and checked completely (files, hashes, calibration, backend), and a new
        source made for each camera that needs one. Returns what went wrong instead of raising."""
        assigned: dict[str, tuple[Model, Judge]] = {}
        try:
            cfg = load_config(self.cfg.path) if self.cfg.path else self.cfg
            assigned = load_models(cfg)
            sources = {s.source.name: open_source(s.source) for s in cfg.streams if self._reopens(s)}
            return PreparedReload(cfg, assigned, sources)
        except Exception as e:  # whatever the new files hold, the running line must not die of it
            close_models(model for model, _ in assigned.values())
            return e

    def _apply_reload(self, prepared: PreparedReload | Exception) -> None:
        """Switches every camera at once to what ``_prepare_reload`` made, between two batches; a
        failed one is refused, and the line goes on judging as it was. A camera whose source
        settings changed is reopened (once its old session has ended; seq goes on), a new one
        starts, a removed one stops grabbing and goes after its last queued frame is judged, a new
        station or line moves it to its new topic. What only a restart can change (AT_RESTART)
        keeps its running value and is reported."""
        if isinstance(prepared, Exception):
            e = prepared
            running = self._judging()
            self.reloads["refused"] += 1
            self.reloads["last_error"] = str(e)
            expected = isinstance(e, (ConfigError, BundleError, BackendError, SourceError, OSError))
            log.error("reload refused, still judging %s: %s", running, e, exc_info=e if not expected else None)
            self.systemd.ready(f"reload refused, still judging {running}: {e}")
            return
        cfg, assigned, sources = prepared.cfg, prepared.assigned, prepared.sources
        at_restart = keep_for_restart(self.cfg, cfg)
        old = self._loaded()
        live = self._state == "running"  # grabbers run (not before run(), as in --check)
        if live:
            self._hold_queue_open()
        topics = {cfg.topic(new) for new in cfg.streams}
        changes = [
            self._apply(new, *assigned[new.source.name], cfg, sources.get(new.source.name), live, topics)
            for new in cfg.streams
        ]
        for name in sorted(set(self.streams) - {s.source.name for s in cfg.streams}):
            stream = self.streams[name]
            if not stream.removed:
                stream.removed = True
                stream.halt.set()
                changes.append(f"{name} removed (goes once its queued frames are judged)")
        if live:
            self._release_queue()  # the hold: every new grabber is counted by now
        self.cfg = cfg
        self.plant.reconfigure(cfg)
        close_models(m for m in old if not self._in_use(m))
        self._retire_removed()
        self.reloads.update(ok=self.reloads["ok"] + 1, last_error=None, at_restart=at_restart)
        log.info("reloaded: now judging %s%s", self._judging(), "".join(f"; {c}" for c in changes if c))
        if at_restart:
            log.warning(
                "reload: %s changed in %s but only take(s) effect when edge-run restarts; still running "
                "with the old value(s)",
                ", ".join(at_restart),
                cfg.path,
            )
        self.systemd.ready(f"reloaded: judging {self._judging()}")

    def _reopens(self, new: StreamConfig) -> bool:
        """Whether a reload to ``new`` needs a new source for that camera."""
        stream = self.streams.get(new.source.name)
        return stream is None or stream.removed or stream.cfg.source != new.source

    def _apply(
        self,
        new: StreamConfig,
        model: Model,
        judge: Judge,
        cfg: LineConfig,
        source: Source | None,
        live: bool,
        topics: set[str],
    ) -> str:
        """Switches one camera to its new config (``source``: its new source, when it needs one;
        ``topics``: every topic of the new config); returns what changed besides the model, for the log."""
        name, topic = new.source.name, cfg.topic(new)
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(new, source, cfg.line, topic, LineStats(), model, judge)
            if live:
                self._start_grabber(stream)
            return f"{name} added"
        changes = []
        if model.bundle.name != stream.model.bundle.name:
            stream.stats.new_model()
        if topic != stream.topic:
            # Subscribers of the old topic hear that it ends, unless another camera takes it over.
            self._final_status(name, publish=stream.topic not in topics)
            changes.append(f"{name} moved from {stream.topic} to {topic}")
            stream.line, stream.topic = cfg.line, topic
        stream.cfg, stream.model, stream.judge = new, model, judge
        if source is not None:
            old_session = stream.grabber, stream.source
            old_halt, stream.source, stream.removed = stream.halt, source, False
            if live:
                self._start_grabber(stream, after=old_session)
            old_halt.set()
            changes.append(f"{name} reopened with its new source settings")
        return "; ".join(changes)

    def _retire_removed(self) -> None:
        """Streams a reload removed go once their grabber has ended and their last frame is judged:
        their final status, then their counters, and their model when no other camera uses it."""
        for name, stream in list(self.streams.items()):
            if stream.removed and not (stream.grabber and stream.grabber.is_alive()) and not self._in_flight(name):
                # A camera of the new config on the same topic goes on there: no end to announce.
                self._final_status(
                    name, publish=all(s.removed or s.topic != stream.topic for s in self.streams.values())
                )
                del self.streams[name]
                self.queue.forget(name)
                if not self._in_use(stream.model):
                    stream.model.backend.close()

    def _in_use(self, model: Model) -> bool:
        return any(model is s.model for s in self.streams.values())

    def _loaded(self) -> list[Model]:
        return distinct(s.model for s in self.streams.values())

    def _judging(self) -> str:
        return "; ".join(f"{', '.join(names)} with {model}" for model, names in self.models().items())

    # -- the threads ------------------------------------------------------------------------
    def _start_grabber(self, stream: Stream, after: tuple[threading.Thread | None, Source] | None = None) -> None:
        """Starts a grab thread for the stream's source. ``after``: the session it replaces, whose
        thread it waits for first, so that the device is free and seq goes on from there."""
        stream.halt = threading.Event()
        if self.stop_event.is_set():
            stream.halt.set()
        self._hold_queue_open()
        stream.grabber = threading.Thread(
            target=self._grab, args=(stream.source, stream.halt, after), name=f"grab-{stream.source.name}", daemon=True
        )
        self._grabbers = [g for g in self._grabbers if g.is_alive()] + [stream.grabber]
        stream.grabber.start()

    def _grab(
        self, source: Source, halt: threading.Event, after: tuple[threading.Thread | None, Source] | None
    ) -> None:
        try:
            if after is not None:
                thread, previous = after
                if thread is not None:
                    thread.join()
                source.continue_from(previous)
            for frame in source.frames(halt):
                if not self.plant.claim(frame):  # no part's, and its stream judges parts only
                    continue
                if not self.queue.put(frame, halt):
                    break
        except Exception:  # a source bug must not leave the line judging nothing in silence
            log.exception("source %s failed", source.name)
        finally:
            self._release_queue()

    def _hold_queue_open(self) -> None:
        """One more grabber, or a hold while several start: until the last grabber (or hold)
        ends, the queue stays open. Starting them one by one without a hold, a camera whose
        frames end at once (a folder of one image) closed the queue before the next had started."""
        with self._grabbing_lock:
            self._grabbing += 1

    def _release_queue(self) -> None:
        """A grabber ended, or a hold is let go."""
        with self._grabbing_lock:
            self._grabbing -= 1
            if not self._grabbing:  # the last camera closes the queue: the rest is drained
                self.queue.close()

    def run(self) -> int:
        pub = self.cfg.publish
        if pub.wait_for_subscribers:
            log.info(
                "waiting up to %.1fs for %d subscriber(s) on %s",
                pub.wait_timeout_s,
                pub.wait_for_subscribers,
                self.publisher.endpoint,
            )
            if not self.publisher.wait_for_subscribers(pub.wait_for_subscribers, pub.wait_timeout_s, self.stop_event):
                log.warning("starting without the %d subscriber(s) asked for", pub.wait_for_subscribers)
        self._state = "running"
        self.plant.start()
        log.info(
            "judging %s, publishing %s on %s",
            self._judging(),
            ", ".join(s.topic for s in self.streams.values()),
            self.publisher.endpoint,
        )
        self._hold_queue_open()
        for stream in list(self.streams.values()):
            self._start_grabber(stream)
        self._release_queue()
        self.systemd.ready(f"judging {self._judging()}")
        next_heartbeat = time.monotonic()
        try:
            while True:
                # self.cfg, not pub: a reload may change the batching and the heartbeat
                batch = self.queue.next_batch(
                    self.cfg.batch.max_batch,
                    self.cfg.batch.max_wait_ms / 1000,
                    idle_timeout_s=self.cfg.publish.heartbeat_s,
                )
                self._reload_when_ready()
                if batch is not None:
                    self._process(batch)
                elif self.queue.closed and not len(self.queue):
                    break
                self._retire_removed()
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = time.monotonic() + self.cfg.publish.heartbeat_s
        finally:
            self._state = "stopping"
            self.stop()
            for g in self._grabbers:
                g.join(timeout=5)
            self._finish()
            self._drop_pending_reload()
        return 0

    def _reload_when_ready(self) -> None:
        """Between two batches: starts loading an asked-for reload on its own thread (bundles and
        TensorRT engines can take seconds to load, and the line must judge meanwhile), and
        switches to it once it is loaded. A SIGHUP during the loading is one more reload after it."""
        if self._preparing is None and self._reload.is_set():
            self._reload.clear()
            self.systemd.reloading()
            self._preparing = threading.Thread(target=self._prepare_in_background, name="reload", daemon=True)
            self._preparing.start()
        elif self._preparing is not None and not self._preparing.is_alive():
            prepared, self._preparing, self._prepared = self._prepared, None, None
            self._apply_reload(prepared)

    def _prepare_in_background(self) -> None:
        prepared = self._prepare_reload()
        with self._prepared_lock:
            if not self._abandoned:
                self._prepared = prepared
                return
        if isinstance(prepared, PreparedReload):  # the daemon stopped meanwhile
            close_models(model for model, _ in prepared.assigned.values())

    def _drop_pending_reload(self, wait_s: float = 20) -> None:
        """Stopped while a reload loads: it is not applied, and what it loaded is closed, now or
        when it is done. Called after the final status, so that is never held up by it; the exit
        then waits up to ``wait_s`` for the loading (inside a runtime's native code as the process
        ends, it can abort the exit), but less than systemd's 30 s to stop."""
        with self._prepared_lock:
            self._abandoned = True
            prepared, self._prepared = self._prepared, None
        if isinstance(prepared, PreparedReload):
            close_models(model for model, _ in prepared.assigned.values())
        if self._preparing is not None:
            self._preparing.join(wait_s)

    # -- per batch ----------------------------------------------------------------------
    def _process(self, batch: Batch) -> None:
        for v in self.judge_frames(batch.frames):
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
        t_pub = time.time()
        msg = verdict_message(v, stream.line, stream.cfg.station, stream.model.bundle.name, t_pub)
        if not self.plant.publish(stream.topic, v, msg):
            stream.stats.publish_failed += 1
        stream.stats.count(v, (t_pub - v.frame.t_grab) * 1000)
        if v.verdict == "NG" and self.evidence is not None:
            self.evidence.submit(v)
        elif (
            v.verdict == "OK"
            and self.ok_samples is not None
            and not stream.stats.verdicts["OK"] % self.cfg.evidence.ok_every
        ):
            self.ok_samples.submit(v)

    # -- status ---------------------------------------------------------------------------
    def _in_flight(self, name: str) -> int:
        """Frames of the stream that entered and have neither a verdict nor a drop yet."""
        return self.queue.frames_in[name] - self.queue.dropped[name] - self.streams[name].stats.judged()

    def status(self, name: str, state: str | None = None) -> dict:
        stream, q = self.streams[name], self.queue
        cal = stream.model.bundle.calibration
        s = stream.stats
        counters = {
            "frames_in": q.frames_in[name],
            "ok": s.verdicts["OK"],
            "ng": s.verdicts["NG"],
            "error": s.verdicts["ERROR"],
            "dropped": q.dropped[name],
            "publish_failed": s.publish_failed,
            "in_flight": self._in_flight(name),
        }
        if self.evidence is not None:
            counters.update(evidence_saved=self.evidence.saved, evidence_skipped=self.evidence.skipped)
        if self.ok_samples is not None:
            counters.update(ok_samples_saved=self.ok_samples.saved, ok_samples_skipped=self.ok_samples.skipped)
        return {
            "schema": MESSAGE_SCHEMA,
            "line": stream.line,
            "station": stream.cfg.station,
            "t": time.time(),
            "state": state or ("stopping" if stream.removed else self._state),
            "uptime_s": round(time.time() - self._t_start, 3),
            "counters": counters,
            "latency_ms": percentiles(s.latency_ms),
            "infer_ms": percentiles(self.infer_ms),
            "mean_batch": round(float(np.mean(self.batch_sizes)), 2) if self.batch_sizes else None,
            "queue_depth": len(q),
            "streams": len(self.streams),
            "source": {
                "name": name,
                "state": stream.source.state,
                "reconnects": stream.source.reconnects,
                "problem": stream.source.problem,
            },
            "score_drift": s.drift(cal.mu if cal else None, cal.sigma if cal else None),
            "threshold": stream.judge.threshold,
            "model": stream.model.bundle.name,
            "reloads": dict(self.reloads),
            "backend": stream.model.backend.describe(),
            **self.plant.status_fields(name),
        }

    def _heartbeat(self) -> None:
        self.publisher.poll_subscriptions()
        statuses = [self.status(name) for name in self.streams]
        for stream, status in zip(self.streams.values(), statuses):
            self.plant.publish_status(stream.topic, status)
        if self.metrics is not None:
            self.metrics.update(statuses)
        self.systemd.alive(summary(self._state, statuses))

    def _finish(self) -> None:
        self._close_evidence()  # written out before the final status counts it
        self.plant.finish()  # parts still open are answered before the final status counts them
        self._state = "stopped"
        self.systemd.stopping(summary(self._state, [self.status(name) for name in self.streams]))
        for name in self.streams:
            self._final_status(name)
        self.close()

    def _final_status(self, name: str, publish: bool = True) -> None:
        """The last status on the stream's topic, state 'stopped' (``publish``), and its totals in the log."""
        stream = self.streams[name]
        final = self.status(name, state="stopped")
        if publish:
            self.plant.publish_status(stream.topic, final)
        c = final["counters"]
        log.info(
            "%s stopped: %d frames in, %d OK, %d NG, %d ERROR, %d dropped; latency p50 %s ms p99 %s ms",
            stream.topic,
            c["frames_in"],
            c["ok"],
            c["ng"],
            c["error"],
            c["dropped"],
            final["latency_ms"]["p50"],
            final["latency_ms"]["p99"],
        )

    def _close_evidence(self) -> None:
        for store in (self.evidence, self.ok_samples):
            if store is not None:
                store.close()

    def close(self) -> None:
        """Release the socket, the model, the metrics port and the evidence writer (after run,
        or instead of it)."""
        self._close_evidence()
        self.plant.close()
        self.publisher.close()
        for model in self._loaded():
            model.backend.close()
        self.systemd.close()
        if self.metrics is not None:
            self.metrics.close()
