"""Bounded frame queue and the batcher that drains it.

Cameras do not wait for inference: when the queue is full the oldest frame is dropped and
counted (a live line wants the newest part judged). Files can ask to block instead, so every
frame of a recording is judged.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from edge.types import Batch, Frame


class FrameQueue:
    def __init__(self, size: int, overflow: str = "drop_oldest"):
        if overflow not in ("drop_oldest", "block"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'block', got {overflow!r}")
        self.size = size
        self.overflow = overflow
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.frames_in: Counter[str] = Counter()  # per stream
        self.dropped: Counter[str] = Counter()

    def put(self, frame: Frame, stop: threading.Event | None = None) -> bool:
        """Enqueue a frame; False if the queue was closed before it got in (it is then not counted)."""
        with self._cond:
            while self.overflow == "block" and len(self._items) >= self.size and not self._closed:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.05)
            if self._closed:
                return False
            self.frames_in[frame.stream] += 1
            if len(self._items) >= self.size:
                self.dropped[self._items.popleft().stream] += 1
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """No more frames will come in; what is queued can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def forget(self, stream: str) -> None:
        """Drop the counters of a stream that was removed once its last frame was judged, so a
        camera added again later under its name counts from 0, as its new statistics do."""
        with self._cond:
            self.frames_in.pop(stream, None)
            self.dropped.pop(stream, None)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def next_batch(self, max_batch: int, max_wait_s: float, idle_timeout_s: float) -> Batch | None:
        """Up to max_batch frames, waiting at most max_wait_s after the first one arrived.

        Returns None when nothing came within idle_timeout_s (the caller gets to send a
        heartbeat) or when the queue is closed and empty.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, idle_timeout_s) or not self._items:
                return None
            deadline = time.monotonic() + max_wait_s
            while len(self._items) < max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            frames = [self._items.popleft() for _ in range(min(max_batch, len(self._items)))]
            self._cond.notify_all()
        return Batch(frames=frames, t_formed=time.time())
