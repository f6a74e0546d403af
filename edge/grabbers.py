"""The grab threads: one per camera session, each putting its source's frames into the queue.

The queue closes once every grabber has ended (its stream over, or halted) and no hold is left:
the main loop then judges what is queued and stops. A grabber whose source raises (a bug, a
driver, a file OpenCV refuses) never dies in silence: the exception is logged with the stream's
name and counted, and a source meant to go on until stopped (a camera, a looping file) is
started again after a back-off, as a dropout; any other stream is over, marked failed, and
``failed`` tells the daemon not to exit 0.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from edge.batcher import FrameQueue
from edge.config import ReconnectConfig
from edge.sources import ImageFolderSource, ReconnectingSource, Source, VideoFileSource
from edge.types import Frame

log = logging.getLogger(__name__)


def endless(source: Source) -> bool:
    """Whether ``source`` is meant to stream until stopped (a camera, a looping file)."""
    return isinstance(source, ReconnectingSource) or (
        isinstance(source, (VideoFileSource, ImageFolderSource)) and source.loop
    )


class GrabberPool:
    def __init__(self, queue: FrameQueue) -> None:
        self._queue = queue
        self._threads: list[threading.Thread] = []
        self._open = 0  # grabbers not yet ended, and holds; the last to end closes the queue
        self._lock = threading.Lock()
        self.errors: Counter[str] = Counter()  # exceptions in grab threads, by stream
        self.failed: set[str] = set()  # streams whose grabber died for good
        # Gives a frame its announced part (edge/plant); False: no part's, and its stream skips those.
        self.claim: Callable[[Frame], bool] = lambda frame: True

    def hold(self) -> None:
        """Keeps the queue open until ``release``: while several grabbers start, a camera whose
        frames end at once (a folder of one image) must not close it before the next has started."""
        with self._lock:
            self._open += 1

    def release(self) -> None:
        """A grabber ended, or a hold is let go."""
        with self._lock:
            self._open -= 1
            if not self._open:  # the last camera closes the queue: the rest is drained
                self._queue.close()

    def start(
        self, source: Source, halt: threading.Event, after: tuple[threading.Thread | None, Source] | None = None
    ) -> threading.Thread:
        """A grab thread for ``source`` until ``halt``. ``after``: the session it replaces, whose
        thread it waits for first, so that the device is free and seq goes on from there."""
        self.hold()
        self.failed.discard(source.name)
        thread = threading.Thread(target=self._run, args=(source, halt, after), name=f"grab-{source.name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def join(self, timeout_s: float) -> None:
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    def _run(self, source: Source, halt: threading.Event, after: tuple[threading.Thread | None, Source] | None) -> None:
        try:
            if after is not None:
                thread, previous = after
                if thread is not None:
                    thread.join()
                source.continue_from(previous)
            self._grab(source, halt)
        except Exception as e:  # whatever it was, the stream is over: said, counted, and no exit 0
            self._failed(source, e)
        finally:
            self.release()

    def _grab(self, source: Source, halt: threading.Event) -> None:
        """Puts the source's frames into the queue until its stream ends or ``halt``; a source that
        raises goes on after a back-off (doubling, reset by a delivered frame) if it is endless."""
        backoff = source.backoff if isinstance(source, ReconnectingSource) else ReconnectConfig()
        delay = backoff.initial_s
        while True:
            delivered = 0
            try:
                for frame in source.frames(halt):
                    if not self.claim(frame):  # no announced part's, on a stream that judges parts only
                        continue
                    if not self._queue.put(frame, halt):
                        return
                    delivered += 1
                return
            except Exception as e:
                if not endless(source):
                    raise
                failure = e
            delay = backoff.initial_s if delivered else delay
            self._restarting(source, failure, delay)
            if halt.wait(delay):
                return
            delay = min(delay * 2, backoff.max_s)

    def _count(self, source: Source, e: Exception) -> int:
        self.errors[source.name] += 1
        source.problem = f"its grabber failed: {type(e).__name__}: {e}"
        return self.errors[source.name]

    def _restarting(self, source: Source, e: Exception, delay: float) -> None:
        n = self._count(source, e)
        source.state = "reconnecting"
        source.reconnects += 1
        log.log(
            logging.ERROR if n & (n - 1) == 0 else logging.DEBUG,  # 1, 2, 4, 8, ... in full: no flood
            "stream %s: %s (%d so far); starting it again in %.2f s",
            source.name,
            source.problem,
            n,
            delay,
            exc_info=e,
        )

    def _failed(self, source: Source, e: Exception) -> None:
        self._count(source, e)
        self.failed.add(source.name)
        source.state = "failed"
        log.error("stream %s: %s; the line no longer judges this stream", source.name, source.problem, exc_info=e)
