"""One camera as the daemon runs it: its config, source, topic, counters, model and grab thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from edge.config import LineConfig, StreamConfig
from edge.models import Model
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
