"""Frame sources: a video file, a folder of images, a live camera (device index or URL), or
a GenICam camera through its vendor's GenTL producer (edge/genicam.py).

Every source turns what OpenCV reads (BGR) into the RGB frames the engine contract wants,
numbers its frames per stream from 0, and stops promptly when the caller's ``stop`` event
is set. A camera never raises: a failed open or read is a dropout, retried with back-off.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.config import ReconnectConfig, RoiConfig, SourceConfig
from edge.preprocess import IMAGE_SUFFIXES, decode_image, read_image
from edge.types import Frame

log = logging.getLogger(__name__)

# Bounds how long an unreachable or silent network camera can block an open or a read, and so
# how late a stop request can be noticed (OpenCV's FFmpeg default is 30 s).
_NETWORK_TIMEOUTS_MS = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]

_WHOLE_FRAME = RoiConfig()
_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def crop_and_rotate(rgb: np.ndarray, roi: RoiConfig, rotate: int) -> np.ndarray:
    """The part of a frame the line judges: ``roi`` in the camera's own pixels, then turned
    clockwise by ``rotate`` degrees. ValueError when the frame does not contain the roi: judging
    some other crop of the part would be a guess."""
    height, width = rgb.shape[:2]
    right = width if roi.width is None else roi.x + roi.width
    bottom = height if roi.height is None else roi.y + roi.height
    if right > width or bottom > height or roi.x >= width or roi.y >= height:
        raise ValueError(
            f"the {width}×{height} frame does not contain source.roi (x {roi.x}, y {roi.y}, width "
            f"{roi.width}, height {roi.height}): fix the roi or the camera's resolution"
        )
    crop = rgb[roi.y : bottom, roi.x : right]
    return cv2.rotate(crop, _ROTATIONS[rotate]) if rotate else np.ascontiguousarray(crop)


class SourceError(RuntimeError):
    """A source that cannot run on this machine at all (a driver package missing): refused at
    start-up with the fix, unlike a camera that is merely away (a dropout, retried)."""


class Source:
    """A stream of frames. The status heartbeat reads ``state`` ("connecting", "streaming",
    "reconnecting" or "ended"), ``reconnects`` and ``problem`` (why the last attempt to stream
    failed; None while streaming)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "connecting"
        self.reconnects = 0
        self.problem: str | None = None
        self._seq = 0
        self.roi, self.rotate = RoiConfig(), 0  # the config's view, set by open_source

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yields frames until the stream ends or ``stop`` is set."""
        raise NotImplementedError

    def continue_from(self, previous: Source) -> None:
        """Take over from the source this one replaces (a reload changed the camera's settings):
        its stream goes on numbering and counting reconnects where the old one stopped, so seq
        never repeats within a run. Call once the old source's frames have ended."""
        self._seq, self.reconnects = previous._seq, previous.reconnects

    def _emit(self, frame_id: str, bgr: np.ndarray | None, error: str | None = None) -> Frame:
        """Wraps what OpenCV just read; call it right after the read so t_grab is the grab time."""
        return self._emit_rgb(frame_id, None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), error)

    def _emit_rgb(self, frame_id: str, rgb: np.ndarray | None, error: str | None = None) -> Frame:
        if rgb is not None and (self.rotate or self.roi != _WHOLE_FRAME):
            try:
                rgb = crop_and_rotate(rgb, self.roi, self.rotate)
            except ValueError as e:
                rgb, error = None, str(e)
        frame = Frame(self.name, self._seq, frame_id, time.time(), rgb, error)
        self._seq += 1
        return frame


class _Pacer:
    """Releases one slot every 1/fps seconds on a fixed schedule, so wait overshoots do not add up."""

    def __init__(self, fps: float | None) -> None:
        self._period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def wait(self, stop: threading.Event) -> bool:
        """Waits for the next slot; False when ``stop`` was set instead."""
        if not self._period:
            return not stop.is_set()
        now = time.monotonic()
        # After a stall longer than a period (a slow consumer), start the schedule afresh rather
        # than burst through the missed slots: a camera does not deliver its backlog either.
        if self._next is None or now - self._next > self._period:
            self._next = now
        if stop.wait(max(0.0, self._next - now)):
            return False
        self._next += self._period
        return True


class _NativeSize:
    """A capture's frames as they were sent. OpenCV scales every frame of a stream to the size of
    its first, so a camera or file that changes resolution mid-stream would be judged at another
    scale (a 20 px defect seen as 16 px). For MJPEG (video files, most HTTP cameras) each packet is
    decoded here at its own size, and a frame whose size is not the stream's first is an ERROR
    frame. Other codecs are decoded by OpenCV, where the change cannot be seen."""

    def __init__(self, capture: cv2.VideoCapture) -> None:
        self._capture = capture
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little", signed=False)
        self._raw = fourcc.upper() == b"MJPG" and bool(capture.set(cv2.CAP_PROP_FORMAT, -1))
        self._size: tuple[int, int] | None = None

    def read(self) -> tuple[bool, np.ndarray | None, str | None]:
        """(whether a frame came, BGR at its own size or None, why it is None)."""
        ok, data = self._capture.read()
        if not ok or not self._raw:
            return ok, data if ok else None, None
        bgr, problem = decode_image(data.reshape(-1).tobytes())
        if bgr is None:
            return True, None, f"a frame of the MJPEG stream: {problem}"
        size = (bgr.shape[1], bgr.shape[0])
        self._size = self._size or size
        if size != self._size:
            return (
                True,
                None,
                (
                    f"the stream changed resolution from {self._size[0]}x{self._size[1]} to {size[0]}x{size[1]} "
                    "mid-stream: not judged at another scale; restart the stream at one resolution"
                ),
            )
        return True, bgr, None


class _FileSource(Source):
    """A finite sequence read in passes: once, or again and again with ``loop``."""

    def __init__(self, path: Path, name: str = "cam0", loop: bool = False, fps: float | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.loop = loop
        self._pacer = _Pacer(fps)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        self.state = "streaming"
        try:
            while not stop.is_set():
                good = yield from self._one_pass(stop)
                # A pass with no readable frame would loop forever without producing anything.
                if not (self.loop and good):
                    break
        finally:
            self.state = "ended"

    def _one_pass(self, stop: threading.Event) -> Generator[Frame, None, int]:
        """Yields one pass over the files; returns how many frames had an image."""
        raise NotImplementedError


class VideoFileSource(_FileSource):
    """A video file; frame ids are ``"<name>:<index in the file>"``."""

    def _one_pass(self, stop: threading.Event) -> Generator[Frame, None, int]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                log.error("%s: cannot open video %s", self.name, self.path)
                yield self._emit(self.path.name, None, f"cannot open video {self.path}")
                return 0
            reader, index, good = _NativeSize(capture), 0, 0
            while self._pacer.wait(stop):
                ok, bgr, problem = reader.read()
                if not ok:
                    break
                yield self._emit(f"{self.name}:{index}", bgr, problem)
                index, good = index + 1, good + (bgr is not None)
            self._count_missing(capture, index, stop)
            return good
        finally:
            capture.release()

    def _count_missing(self, capture: cv2.VideoCapture, read: int, stop: threading.Event) -> None:
        """A file that ends before the frames its header announces (cut short in a copy, a
        recording broken off) says so: in the log and in the status's source.problem."""
        announced = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        if not stop.is_set() and 0 < announced < 2**31 and read < int(announced):
            self.problem = (
                f"the video ended after {read} of the {int(announced)} frames its header announces (cut short?)"
            )
            log.warning("%s: %s: %s", self.name, self.path, self.problem)


class ImageFolderSource(_FileSource):
    """The images of one folder in file-name order; frame ids are the file names.

    An image that cannot be decoded becomes a frame with ``image=None`` (judged ERROR down the
    line) and the stream goes on.
    """

    def _one_pass(self, stop: threading.Event) -> Generator[Frame, None, int]:
        files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            log.warning("%s: no images (%s) in %s", self.name, ", ".join(sorted(IMAGE_SUFFIXES)), self.path)
        good = 0
        for file in files:
            if not self._pacer.wait(stop):
                break
            bgr, problem = read_image(file)
            yield self._emit(file.name, bgr, problem and f"cannot read image {file.name}: {problem}")
            good += bgr is not None
        return good


class ReconnectingSource(Source):
    """A live camera: ``_session`` streams until the camera drops out (a failed open or read,
    the end of the stream), then the source waits (back-off doubling from ``initial_s`` to
    ``max_s``, cut short by ``stop``) and starts a new session. seq goes on counting across
    reconnects."""

    target: object  # what the logs call the camera

    def __init__(self, name: str, reconnect: ReconnectConfig | None) -> None:
        super().__init__(name)
        self.backoff = reconnect or ReconnectConfig()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        delay = self.backoff.initial_s
        failed = 0  # attempts since the camera last delivered a frame
        try:
            while not stop.is_set():
                delivered = yield from self._session(stop)
                if stop.is_set():
                    break
                if delivered:
                    delay, failed = self.backoff.initial_s, 0
                self.state = "reconnecting"
                self.reconnects += 1
                failed += 1
                # A camera that stays away must not flood the log: attempts 1, 2, 4, 8, ... are
                # logged; the status topic carries every reconnect.
                log.log(
                    logging.WARNING if failed & (failed - 1) == 0 else logging.DEBUG,
                    "%s: camera %s dropped out (%s); reconnecting in %.2f s (attempt %d since it last delivered)",
                    self.name,
                    self.target,
                    self.problem,
                    delay,
                    failed,
                )
                if stop.wait(delay):
                    break
                delay = min(delay * 2, self.backoff.max_s)
        finally:
            self.state = "ended"

    def _session(self, stop: threading.Event) -> Generator[Frame, None, int]:
        """Opens the camera and yields frames until it drops out, setting ``problem`` to why;
        returns how many frames it delivered."""
        raise NotImplementedError


class CameraSource(ReconnectingSource):
    """A camera OpenCV opens: a local device index or a URL (RTSP, HTTP, ...). Frame ids are
    ``"<name>:<seq>"``."""

    def __init__(self, target: int | str, name: str = "cam0", reconnect: ReconnectConfig | None = None) -> None:
        super().__init__(name, reconnect)
        self.target = target

    def _session(self, stop: threading.Event) -> Generator[Frame, None, int]:
        capture: cv2.VideoCapture | None = None
        delivered = 0
        try:
            capture = self._open()
            if not capture.isOpened():
                self.problem = "cannot open it"
                return 0
            self.state, self.problem = "streaming", None
            reader = _NativeSize(capture)
            while not stop.is_set():
                ok, bgr, problem = reader.read()
                if not ok:
                    self.problem = "a read failed or the stream ended"
                    break
                yield self._emit(f"{self.name}:{self._seq}", bgr, problem)
                delivered += 1
        except Exception as e:  # a backend that fails loudly is a dropout too: the line must keep running
            log.exception("%s: camera %s failed", self.name, self.target)
            self.problem = f"{type(e).__name__}: {e}"
        finally:
            if capture is not None:
                capture.release()
        return delivered

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.target, int):
            # OpenCV backends refuse to open with parameters they do not use, and local device
            # backends (V4L2) have no network timeouts.
            return cv2.VideoCapture(self.target)
        return cv2.VideoCapture(self.target, cv2.CAP_ANY, _NETWORK_TIMEOUTS_MS)


def open_source(cfg: SourceConfig) -> Source:
    """The source a validated ``SourceConfig`` describes, its frames cropped and turned as it says."""
    source = _source_of_kind(cfg)
    source.roi, source.rotate = cfg.roi, cfg.rotate
    return source


def _source_of_kind(cfg: SourceConfig) -> Source:
    if cfg.kind == "camera":
        return CameraSource(cfg.index if cfg.index is not None else cfg.url, cfg.name, cfg.reconnect)
    if cfg.kind == "genicam":
        if importlib.util.find_spec("harvesters") is None:
            raise SourceError(
                f"source {cfg.name}: GenICam cameras need harvesters, which is not installed: "
                f"pip install 'edge-inspect[genicam]' (or pip install harvesters)"
            )
        from edge.genicam import GenICamSource  # harvesters only where a GenICam camera is configured

        return GenICamSource(cfg.cti, cfg.device, cfg.features, cfg.name, cfg.reconnect)
    if cfg.kind == "video":
        return VideoFileSource(cfg.path, cfg.name, cfg.loop, cfg.fps)
    return ImageFolderSource(cfg.path, cfg.name, cfg.loop, cfg.fps)  # the last kind SourceConfig allows
