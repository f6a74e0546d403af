"""Parts the PLC announced, matched to the frames that photograph them, each with a deadline.

A part announced on a stream is photographed by the next frame that camera takes after the
announcement (parts are taken in the order they were announced). Its verdict carries its
``part_id``. A part whose verdict is not out by its deadline is answered ERROR ``deadline`` at the
deadline (``expire``); its real verdict, if it comes later, goes out flagged ``late`` and is never
the part's answer. Every announced part thus gets exactly one answer: in time, or ERROR.

Thread-safe: announcements come from the ZeroMQ, MQTT and OPC UA threads, frames from the grab
threads, verdicts from the judging loop and deadlines from the deadline thread.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from edge.types import Frame

MAX_PART_ID = 200  # characters: a PLC string is 254 at most
MAX_DEADLINE_MS = 3_600_000
_LATE_MEMORY = 4096  # expired parts whose frame was taken, remembered to flag their late verdict

Unannounced = Literal["judge", "skip"]
Outcome = Literal["in_time", "late", "untracked"]
PART_COUNTERS = ("announced", "refused", "in_time", "deadline", "late", "stopped", "skipped_frames")


@dataclass(frozen=True, slots=True)
class Target:
    """What a part needs to know about its stream, taken when it is announced (a reload may
    change or remove the stream before the part is answered)."""

    stream: str
    line: str
    station: str
    topic: str
    threshold: float
    model: str
    deadline_ms: float
    unannounced: Unannounced


@dataclass(slots=True)
class Part:
    part_id: str
    seq: int  # the announcement's number on its stream, from 0
    target: Target
    t_announce: float  # time.time()
    due: float  # time.monotonic() of the deadline
    deadline_ms: float
    frame: tuple[int, str, float] | None = None  # seq, frame_id, t_grab of the frame that photographed it

    def fields(self) -> dict:
        """What every message about this part carries besides the verdict."""
        return {"part_id": self.part_id, "t_announce": self.t_announce, "deadline_ms": self.deadline_ms}


@dataclass(frozen=True, slots=True)
class Announced:
    """The reply to an announcement."""

    accepted: bool
    seq: int | None
    error: str | None = None

    def to_json(self) -> dict:
        reply: dict = {"accepted": self.accepted, "seq": self.seq}
        if self.error is not None:
            reply["error"] = self.error
        return reply


@dataclass(slots=True)
class _StreamParts:
    waiting: deque[Part] = field(default_factory=deque)  # announced, not photographed yet
    counters: Counter[str] = field(default_factory=Counter)
    next_seq: int = 0


class PartTracker:
    def __init__(self, targets: Callable[[str], Target | None], max_pending: Callable[[], int]):
        """``targets``: a stream's Target by its name (None: no such stream); ``max_pending``: how
        many unanswered parts a stream may have (read at each announcement: a reload may change it)."""
        self._targets = targets
        self._max_pending = max_pending
        self.lock = threading.RLock()  # also held by the caller around sending an answer: see Plant
        self._changed = threading.Condition(self.lock)
        self._streams: dict[str, _StreamParts] = {}
        self._open: dict[tuple[str, str], Part] = {}  # (stream, part_id): announced, not answered
        self._by_frame: dict[tuple[str, int], Part] = {}  # (stream, frame seq): photographed, verdict to come
        self._expired: OrderedDict[tuple[str, int], Part] = OrderedDict()  # photographed, answered at deadline
        self._due: list[tuple[float, int, Part]] = []
        self._order = itertools.count()
        self.refusing: str | None = None  # why announcements are refused (the line is stopping)

    def _parts(self, stream: str) -> _StreamParts:
        return self._streams.setdefault(stream, _StreamParts())

    def announce(self, stream: object, part_id: object, deadline_ms: object = None) -> Announced:
        """A part is coming to ``stream``'s camera; ``deadline_ms`` overrides the stream's deadline."""
        target = self._targets(stream) if isinstance(stream, str) else None
        problem = _problem(stream, part_id, deadline_ms, target)
        with self.lock:
            problem = problem or self.refusing
            if target is not None and problem is None:
                pending = sum(1 for s, _ in self._open if s == target.stream)
                if (target.stream, part_id) in self._open:
                    problem = f"part_id {part_id!r} is already announced on {target.stream} and not answered yet"
                elif pending >= self._max_pending():
                    problem = f"{target.stream} has {pending} parts without an answer (trigger.max_pending)"
            if problem is not None or target is None or not isinstance(part_id, str):
                if target is not None:
                    self._parts(target.stream).counters["refused"] += 1
                return Announced(False, None, problem)
            return Announced(True, self._add(target, part_id, deadline_ms))

    def _add(self, target: Target, part_id: str, deadline_ms: object) -> int:
        parts = self._parts(target.stream)
        ms = float(deadline_ms) if isinstance(deadline_ms, (int, float)) else target.deadline_ms
        part = Part(part_id, parts.next_seq, target, time.time(), time.monotonic() + ms / 1000, ms)
        parts.next_seq += 1
        parts.waiting.append(part)
        parts.counters["announced"] += 1
        self._open[(target.stream, part_id)] = part
        heapq.heappush(self._due, (part.due, next(self._order), part))
        self._changed.notify_all()
        return part.seq

    def claim(self, frame: Frame) -> bool:
        """At grab time: the oldest part announced before this frame and not photographed yet
        is this frame's (``frame.part_id``). False when the frame is no part's and its stream
        skips such frames."""
        with self.lock:
            parts = self._streams.get(frame.stream)
            waiting = parts.waiting if parts else deque()
            while waiting and self._open.get((frame.stream, waiting[0].part_id)) is not waiting[0]:
                waiting.popleft()  # answered at its deadline before a frame came
            if waiting and waiting[0].t_announce <= frame.t_grab:
                part = waiting.popleft()
                part.frame = (frame.seq, frame.frame_id, frame.t_grab)
                self._by_frame[(frame.stream, frame.seq)] = part
                frame.part_id = part.part_id
                return True
            target = self._targets(frame.stream)
            if target is not None and target.unannounced == "skip":
                self._parts(frame.stream).counters["skipped_frames"] += 1
                return False
            return True

    def answer(self, frame: Frame) -> tuple[Outcome, Part | None]:
        """The verdict of ``frame`` is going out: whether it answers its part in time, comes too
        late (the part was answered ERROR at its deadline), or belongs to no tracked part."""
        if frame.part_id is None:
            return "untracked", None
        key = (frame.stream, frame.seq)
        with self.lock:
            part = self._by_frame.pop(key, None)
            if part is not None and self._open.get((frame.stream, part.part_id)) is part:
                del self._open[(frame.stream, part.part_id)]
                self._parts(frame.stream).counters["in_time"] += 1
                return "in_time", part
            part = self._expired.pop(key, None)
            if part is not None:
                self._parts(frame.stream).counters["late"] += 1
                return "late", part
            return "untracked", None

    def expire(self, now: float, why: str = "deadline") -> list[Part]:
        """Parts due by ``now`` (monotonic) without an answer, now answered (the caller sends their
        ERROR while it holds ``lock``); ``now`` = inf: every open part."""
        due = []
        with self.lock:
            while self._due and self._due[0][0] <= now:
                _, _, part = heapq.heappop(self._due)
                key = (part.target.stream, part.part_id)
                if self._open.get(key) is not part:
                    continue  # answered in time
                del self._open[key]
                self._parts(part.target.stream).counters[why] += 1
                if part.frame is not None:
                    frame_key = (part.target.stream, part.frame[0])
                    self._by_frame.pop(frame_key, None)
                    self._expired[frame_key] = part
                    while len(self._expired) > _LATE_MEMORY:
                        self._expired.popitem(last=False)
                due.append(part)
        return due

    def wait_for_due(self, stop: threading.Event, longest_s: float = 0.5) -> None:
        """Sleeps until the next deadline, a new part, or ``longest_s`` (so ``stop`` is noticed)."""
        with self._changed:
            if stop.is_set():
                return
            left = (self._due[0][0] - time.monotonic()) if self._due else longest_s
            if left > 0:
                self._changed.wait(min(left, longest_s))

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def counters(self, stream: str) -> dict:
        with self.lock:
            parts = self._streams.get(stream, _StreamParts())
            pending = sum(1 for s, _ in self._open if s == stream)
            return {**{key: parts.counters[key] for key in PART_COUNTERS}, "pending": pending}


def _problem(stream: object, part_id: object, deadline_ms: object, target: Target | None) -> str | None:
    if not isinstance(stream, str) or target is None:
        return f"unknown stream {stream!r}: give a source name of the line's config"
    if not isinstance(part_id, str) or not part_id.strip() or len(part_id) > MAX_PART_ID:
        return f"part_id must be a non-empty string of at most {MAX_PART_ID} characters (got {part_id!r})"
    if deadline_ms is not None and (
        isinstance(deadline_ms, bool)
        or not isinstance(deadline_ms, (int, float))
        or not 0 < deadline_ms <= MAX_DEADLINE_MS
    ):
        return f"deadline_ms must be a number of milliseconds > 0 and <= {MAX_DEADLINE_MS} (got {deadline_ms!r})"
    return None
