"""A reload (SIGHUP) in three steps: prepare it on a thread of its own (the config read again,
bundles and TensorRT engines loaded, which can take seconds while the line judges on), apply it
between two batches (every camera at once), or abandon it (the daemon stopped meanwhile)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.backends import BackendError
from edge.bundle import BundleError
from edge.config import ConfigError, LineConfig, StreamConfig, load_config
from edge.models import Model, close_models, close_unused, load_models
from edge.sources import Source, SourceError, open_source
from edge.status import Reloads
from edge.stream import Stream
from edge.verdict import Judge

if TYPE_CHECKING:
    from edge.daemon import Daemon

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
    *(f"hmi_images.{key}" for key in ("bind", "every_ng", "ok_per_s", "max_side", "quality", "queue", "sndhwm")),
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


@dataclass(slots=True)
class PreparedReload:
    """What a reload loaded and checked, ready to switch to."""

    cfg: LineConfig
    assigned: dict[str, tuple[Model, Judge]]  # by source name
    sources: dict[str, Source]  # new sources for the cameras that need one

    def close(self) -> None:
        close_models(model for model, _ in self.assigned.values())


class Reloader:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._asked = threading.Event()
        self._preparing: threading.Thread | None = None  # a reload loading on its own thread
        self._prepared: PreparedReload | Exception | None = None
        self._lock = threading.Lock()
        self._abandoned = False  # stopped while a reload loaded: it will not be applied
        self.record = Reloads()

    def request(self) -> None:
        """Read the config again and apply it between two batches (``when_ready``). From any thread."""
        self._asked.set()

    def now(self) -> None:
        """Read the config file again and apply it now (the running daemon does the loading on a
        thread of its own instead, see ``when_ready``)."""
        self._daemon.systemd.reloading()
        self._apply(self._prepare())

    def when_ready(self) -> None:
        """Between two batches: starts loading an asked-for reload on its own thread, and switches
        to it once it is loaded. A SIGHUP during the loading is one more reload after it."""
        if self._preparing is None and self._asked.is_set():
            self._asked.clear()
            self._daemon.systemd.reloading()
            self._preparing = threading.Thread(target=self._prepare_in_background, name="reload", daemon=True)
            self._preparing.start()
        elif self._preparing is not None and not self._preparing.is_alive():
            prepared, self._preparing, self._prepared = self._prepared, None, None
            if prepared is not None:
                self._apply(prepared)

    def abandon(self, wait_s: float = 20) -> None:
        """Stopped while a reload loads: it is not applied, and what it loaded is closed, now or
        when it is done. Called after the final status, so that is never held up by it; the exit
        then waits up to ``wait_s`` for the loading (inside a runtime's native code as the process
        ends, it can abort the exit), but less than systemd's 30 s to stop."""
        with self._lock:
            self._abandoned = True
            prepared, self._prepared = self._prepared, None
        if isinstance(prepared, PreparedReload):
            prepared.close()
        if self._preparing is not None:
            self._preparing.join(wait_s)

    def _prepare(self) -> PreparedReload | Exception:
        """The slow half, which touches nothing the line uses: the config read again, every bundle
        loaded and checked completely (files, hashes, calibration, backend), and a new source made
        for each camera that needs one. Returns what went wrong instead of raising."""
        assigned: dict[str, tuple[Model, Judge]] = {}
        running = self._daemon.cfg
        try:
            cfg = load_config(running.path) if running.path else running
            assigned = load_models(cfg)
            sources = {s.source.name: open_source(s.source) for s in cfg.streams if self._reopens(s)}
            return PreparedReload(cfg, assigned, sources)
        except Exception as e:  # whatever the new files hold, the running line must not die of it
            close_models(model for model, _ in assigned.values())
            return e

    def _prepare_in_background(self) -> None:
        prepared = self._prepare()
        with self._lock:
            if not self._abandoned:
                self._prepared = prepared
                return
        if isinstance(prepared, PreparedReload):  # the daemon stopped meanwhile
            prepared.close()

    def _reopens(self, new: StreamConfig) -> bool:
        """Whether a reload to ``new`` needs a new source for that camera."""
        stream = self._daemon.streams.get(new.source.name)
        return stream is None or stream.removed or stream.cfg.source != new.source

    def _refuse(self, e: Exception) -> None:
        daemon = self._daemon
        running = daemon.judging()
        self.record = dataclasses.replace(self.record, refused=self.record.refused + 1, last_error=str(e))
        expected = isinstance(e, (ConfigError, BundleError, BackendError, SourceError, OSError))
        log.error("reload refused, still judging %s: %s", running, e, exc_info=e if not expected else None)
        daemon.systemd.ready(f"reload refused, still judging {running}: {e}")

    def _apply(self, prepared: PreparedReload | Exception) -> None:
        """Switches every camera at once to what ``_prepare`` made, between two batches; a failed
        one is refused, and the line goes on judging as it was. What only a restart can change
        (AT_RESTART) keeps its running value and is reported."""
        if isinstance(prepared, Exception):
            self._refuse(prepared)
            return
        daemon, cfg = self._daemon, prepared.cfg
        at_restart = keep_for_restart(daemon.cfg, cfg)
        old = daemon.loaded()
        live = daemon.state == "running"  # grabbers run (not before run(), as in --check)
        if live:
            daemon.grabbers.hold()
        changes = self._switch_all(prepared, live) + self._remove_others(cfg)
        if live:
            daemon.grabbers.release()  # the hold: every new grabber is counted by now
        daemon.cfg = cfg
        close_unused(old, daemon.loaded())
        daemon.retire_removed()
        self.record = Reloads(self.record.ok + 1, self.record.refused, None, tuple(at_restart))
        log.info("reloaded: now judging %s%s", daemon.judging(), "".join(f"; {c}" for c in changes if c))
        if at_restart:
            log.warning(
                "reload: %s changed in %s but only take(s) effect when edge-run restarts; still running "
                "with the old value(s)",
                ", ".join(at_restart),
                cfg.path,
            )
        daemon.systemd.ready(f"reloaded: judging {daemon.judging()}")

    def _switch_all(self, prepared: PreparedReload, live: bool) -> list[str]:
        cfg, streams = prepared.cfg, self._daemon.streams
        topics = {cfg.topic(new) for new in cfg.streams}
        changes = []
        for new in cfg.streams:
            name = new.source.name
            model, judge = prepared.assigned[name]
            if name in streams:
                changes.append(self._switch(new, model, judge, cfg, prepared.sources.get(name), live, topics))
            else:
                stream = streams[name] = Stream.of(new, cfg, prepared.sources[name], model, judge)
                if live:
                    self._daemon.start_grabber(stream)
                changes.append(f"{name} added")
        return changes

    def _remove_others(self, cfg: LineConfig) -> list[str]:
        """A removed camera stops grabbing and goes after its last queued frame is judged."""
        changes = []
        streams = self._daemon.streams
        for name in sorted(set(streams) - {s.source.name for s in cfg.streams}):
            stream = streams[name]
            if not stream.removed:
                stream.removed = True
                stream.halt.set()
                changes.append(f"{name} removed (goes once its queued frames are judged)")
        return changes

    def _switch(
        self,
        new: StreamConfig,
        model: Model,
        judge: Judge,
        cfg: LineConfig,
        source: Source | None,
        live: bool,
        topics: set[str],
    ) -> str:
        """Switches one camera to its new config (``source``: its new source, when its source
        settings changed; ``topics``: every topic of the new config); returns what changed besides
        the model, for the log. A new station or line moves it to its new topic; a new source is
        opened once the old session has ended (seq goes on)."""
        name, topic = new.source.name, cfg.topic(new)
        daemon = self._daemon
        stream = daemon.streams[name]
        changes = []
        if model.bundle.name != stream.model.bundle.name:
            stream.stats.new_model()
        if topic != stream.topic:
            # Subscribers of the old topic hear that it ends, unless another camera takes it over.
            daemon.final_status(name, publish=stream.topic not in topics)
            changes.append(f"{name} moved from {stream.topic} to {topic}")
            stream.line, stream.topic = cfg.line, topic
        stream.cfg, stream.model, stream.judge = new, model, judge
        if source is not None:
            old_session = stream.grabber, stream.source
            old_halt, stream.source, stream.removed = stream.halt, source, False
            if live:
                daemon.start_grabber(stream, after=old_session)
            old_halt.set()
            changes.append(f"{name} reopened with its new source settings")
        return "; ".join(changes)
