"""One camera as the daemon runs it: its config, source, topic, counters, model and grab thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from edge.config import LineConfig, StreamConfig
from edge.models import Model
from edge.plant.tracking import Target, Unannounced
from edge.sources import Source
from edge.stats import LineStats
from edge.verdict import Judge


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

    @classmethod
    def of(cls, new: StreamConfig, cfg: LineConfig, source: Source, model: Model, judge: Judge) -> Stream:
        """The camera ``new`` of the line ``cfg``, about to start."""
        return cls(new, source, cfg.line, cfg.topic(new), LineStats(), model, judge)

    def target(self, default_deadline_ms: float) -> Target:
        """What a part announced on this camera is answered with (edge/plant)."""
        rules = self.cfg.trigger
        deadline_ms = rules.deadline_ms or default_deadline_ms
        unannounced: Unannounced = "skip" if rules.unannounced == "skip" else "judge"
        return Target(
            self.cfg.source.name,
            self.line,
            self.cfg.station,
            self.topic,
            self.judge.threshold,
            self.model.bundle.name,
            deadline_ms,
            unannounced,
        )
