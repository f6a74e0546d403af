"""GenICam cameras (GigE Vision, USB3 Vision, CoaXPress, ...) through their vendor's GenTL
producer, with harvesters (the `genicam` extra, imported when such a source is opened).

A GenTL producer is the vendor's driver as a ``.cti`` file (Basler, Teledyne, Allied Vision,
Matrix Vision, ... ship one); the source loads it, opens the configured camera, writes the
configured GenICam features (PixelFormat, ExposureTime, TriggerMode, ...) before acquisition
starts, and converts each buffer to the RGB frame the engine contract wants.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from edge.config import GENTL_PATH_VARIABLE, ReconnectConfig
from edge.sources import ReconnectingSource
from edge.types import Frame

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 0.5  # a wait for a buffer: no trigger (no part) is no dropout, but stop is checked

# The depths (suffixes) each family comes in. harvesters hands a packed buffer (PFNC's "p",
# GigE Vision's "Packed") over already unpacked into uint16, one value per pixel and channel, so
# a packed format differs from its unpacked twin only on the wire. Not Mono14p: harvesters
# (1.4.3) unpacks it wrong (it passes a third term to numpy.bitwise_or, whose third argument is
# the output), which tests/edge/test_genicam.py showed against a packer written from the standard.
_MONO = ("8", "10", "12", "14", "16", "10p", "12p", "10Packed", "12Packed")
_BAYER = ("8", "10", "12", "16", "10p", "12p", "10Packed", "12Packed")
_COLOUR = ("8", "10", "12", "14", "16", "10p", "12p")
# family: (channels, conversion to RGB, depths). GenICam's Bayer names give the first row's first
# two pixels; OpenCV's the second row's second and third: the same mosaic under another name.
_FAMILIES = {
    "Mono": (1, cv2.COLOR_GRAY2RGB, _MONO),
    "RGB": (3, None, _COLOUR),
    "BGR": (3, cv2.COLOR_BGR2RGB, _COLOUR),
    "RGBa": (4, cv2.COLOR_RGBA2RGB, _COLOUR),
    "BGRa": (4, cv2.COLOR_BGRA2RGB, _COLOUR),
    "BayerRG": (1, cv2.COLOR_BayerBG2RGB, _BAYER),
    "BayerGR": (1, cv2.COLOR_BayerGB2RGB, _BAYER),
    "BayerGB": (1, cv2.COLOR_BayerGR2RGB, _BAYER),
    "BayerBG": (1, cv2.COLOR_BayerRG2RGB, _BAYER),
}
# name: (channels, conversion, significant bits)
_FORMATS = {
    family + depth: (channels, code, int(depth.rstrip("pPacked")))
    for family, (channels, code, depths) in _FAMILIES.items()
    for depth in depths
}
SUPPORTED_PIXEL_FORMATS = tuple(_FORMATS)
_OFFERED = "; ".join(
    f"{' '.join(f for f, (_, _, d) in _FAMILIES.items() if d is depths)} with {' '.join(depths)}"
    for depths in (_MONO, _COLOUR, _BAYER)
)


class GenICamError(RuntimeError):
    """The camera cannot stream as configured; the message names what and how to fix it."""


def to_rgb(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """One buffer's pixels (the component's flat array) as ``uint8 [height, width, 3]`` RGB, a
    copy the camera's buffer does not share. Deeper formats keep their 8 most significant bits."""
    if pixel_format not in _FORMATS:
        raise GenICamError(
            f"pixel format {pixel_format} is not supported; set features.PixelFormat to one of: {_OFFERED}"
        )
    channels, code, bits = _FORMATS[pixel_format]
    # A packed buffer's last byte group can unpack to one value more than the image has.
    pixels = data[: height * width * channels].reshape(height, width, channels)
    if bits > 8:
        # Shifted before demosaicing: OpenCV's Bayer conversion wants 8 (or full 16) bits.
        pixels = (pixels >> (bits - 8)).astype(np.uint8)
    return pixels.copy() if code is None else cv2.cvtColor(pixels, code)


def producer_files(cti: Path | None) -> list[Path]:
    """The GenTL producers to load: ``cti``, or every .cti in the folders GENICAM_GENTL64_PATH lists."""
    if cti is not None:
        return [Path(cti)]
    folders = [f for f in os.environ.get(GENTL_PATH_VARIABLE, "").split(os.pathsep) if f]
    return sorted(p for folder in folders for p in Path(folder).glob("*.cti"))


def device_index(devices: Sequence[Any], wanted: str | None) -> int:
    """Which of the producers' ``devices`` (harvesters DeviceInfo) to open: the first when
    ``wanted`` is None, else the one whose serial number, id or user-defined name it is."""
    if not devices:
        raise GenICamError(
            "no camera found by the GenTL producer (check the cable, power and the camera's IP configuration)"
        )
    if wanted is None:
        return 0
    for i, info in enumerate(devices):
        if wanted in (_info(info, "serial_number"), _info(info, "id_"), _info(info, "user_defined_name")):
            return i
    found = "; ".join(
        f"{_info(info, 'display_name')} (serial {_info(info, 'serial_number')}, id {_info(info, 'id_')})"
        for info in devices
    )
    raise GenICamError(
        f"device {wanted!r} not found; set source.device to a serial number, id or user-defined name of one of: {found}"
    )


def _info(info: Any, name: str) -> str | None:
    """A DeviceInfo field as text; None where the producer does not offer it (GenTL's
    NotAvailable, e.g. a user-defined name on a camera without one)."""
    try:
        value = getattr(info, name)
    except Exception:
        return None
    return None if value is None else str(value)


def write_features(node_map: Any, features: Mapping[str, object]) -> None:
    """Set each GenICam feature, in the order given (PixelFormat before Width, TriggerMode
    before TriggerSource, as the camera's rules need)."""
    for name, value in features.items():
        node = getattr(node_map, name, None)
        if node is None:
            close = difflib.get_close_matches(name, [n for n in dir(node_map) if not n.startswith("_")], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see the camera's feature list (its GenICam XML)"
            raise GenICamError(f"features.{name}: the camera has no such feature; {hint}")
        if isinstance(value, bool) and set(getattr(node, "symbolics", ()) or ()) >= {"On", "Off"}:
            value = "On" if value else "Off"  # YAML 1.1 reads a bare On / Off as true / false
        try:
            node.value = value
        except Exception as e:  # GenApi's access, range and type errors, all phrased for the config
            # GenApi's text ends in where it was thrown (node, C++ file and line): not for a line config.
            detail = (str(e).splitlines() or [""])[0].split(" thrown in node")[0].rsplit(" : ", 1)[0]
            offers = _offers(node)
            raise GenICamError(
                f"features.{name}: cannot set {value!r} ({type(e).__name__}: {detail})"
                + (f"; the camera offers {offers}" if offers else "")
            ) from None


def _offers(node: Any) -> str:
    """The values a feature takes, as far as GenApi says: an enumeration's names, a number's range."""
    try:
        symbolics = getattr(node, "symbolics", None)
        if symbolics:
            return ", ".join(map(str, symbolics))
        if hasattr(node, "min") and hasattr(node, "max"):
            return f"{node.min} to {node.max}"
    except Exception:  # a feature that cannot say (not readable now): the error above stands alone
        pass
    return ""


class SharedProducers:
    """One harvesters Harvester per set of GenTL producers, shared by every source that uses
    it. A producer is a library with process-wide state: a second Harvester loading the same
    .cti sees no camera, and Harvester.update() (the rescan that finds a camera which came back)
    invalidates every acquirer it made. So cameras are rescanned only while none of the set's
    cameras streams; a camera that drops out while others stream is reopened from the last scan."""

    _lock = threading.Lock()
    _shared: ClassVar[dict[tuple[Path, ...], SharedProducers]] = {}

    def __init__(self, producers: tuple[Path, ...]) -> None:
        from harvesters.core import Harvester

        self.harvester = Harvester()
        for producer in producers:
            self.harvester.add_file(str(producer), check_existence=True)
        self.users = 0  # sources holding this set
        self.streaming = 0  # acquirers open

    @classmethod
    def get(cls, producers: tuple[Path, ...]) -> SharedProducers:
        with cls._lock:
            shared = cls._shared.get(producers)
            if shared is None:
                shared = cls._shared[producers] = cls(producers)
            shared.users += 1
            return shared

    @classmethod
    def release(cls, producers: tuple[Path, ...]) -> None:
        with cls._lock:
            shared = cls._shared[producers]
            shared.users -= 1
            if not shared.users:
                shared.harvester.reset()
                del cls._shared[producers]

    def open(self, device: str | None, features: Mapping[str, object]) -> Any:
        """An image acquirer for ``device``, its ``features`` written."""
        with self._lock:
            if not self.streaming:
                self.harvester.update()
            acquirer = self.harvester.create(device_index(self.harvester.device_info_list, device))
            self.streaming += 1
        try:
            write_features(acquirer.remote_device.node_map, features)
        except Exception:
            self.close(acquirer)
            raise
        return acquirer

    def close(self, acquirer: Any) -> None:
        with self._lock:
            try:
                acquirer.stop()
                acquirer.destroy()
            finally:
                self.streaming -= 1


class GenICamSource(ReconnectingSource):
    """A GenICam camera through a GenTL producer. A dropped camera (unplugged, power cycled,
    network lost), a wrong device or feature is a dropout, retried with back-off, its reason in
    ``problem``; a buffer that does not arrive within FETCH_TIMEOUT_S is no part, not a dropout
    (a triggered camera waits for the next part). Frame ids are ``"<name>:<seq>"``."""

    def __init__(
        self,
        cti: Path | None,
        device: str | None = None,
        features: Mapping[str, object] | None = None,
        name: str = "cam0",
        reconnect: ReconnectConfig | None = None,
    ) -> None:
        super().__init__(name, reconnect)
        self.cti, self.device, self.features = cti, device, dict(features or {})
        producer = cti or f"${GENTL_PATH_VARIABLE}"
        self.target = f"{device!r} via {producer}" if device else f"via {producer}"
        self._producers: tuple[Path, ...] = ()
        self._shared: SharedProducers | None = None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        try:
            yield from super().frames(stop)
        finally:
            if self._shared is not None:
                SharedProducers.release(self._producers)
                self._shared = None

    def _producer_set(self) -> SharedProducers:
        """The producers, loaded at the first session (found later if the folder was empty)."""
        if self._shared is None:
            self._producers = tuple(producer_files(self.cti))
            if not self._producers:
                raise GenICamError(
                    f"no GenTL producer in ${GENTL_PATH_VARIABLE}: set source.cti to the camera "
                    f"vendor's .cti file, or install it there"
                )
            self._shared = SharedProducers.get(self._producers)
        return self._shared

    def _session(self, stop: threading.Event) -> Generator[Frame, None, int]:
        acquirer = None
        delivered = 0
        try:
            acquirer = self._producer_set().open(self.device, self.features)
            acquirer.start()
            self.state, self.problem = "streaming", None
            while not stop.is_set():
                buffer = acquirer.try_fetch(timeout=FETCH_TIMEOUT_S)
                if buffer is None:
                    continue
                try:
                    component = buffer.payload.components[0]
                    # Copied out before the buffer goes back to the producer's pool.
                    image = to_rgb(component.data, component.width, component.height, component.data_format)
                finally:
                    buffer.queue()
                yield self._emit_rgb(f"{self.name}:{self._seq}", image)
                delivered += 1
        except Exception as e:  # the line keeps running; the reason is logged (throttled) and in the status
            self.problem = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.debug("%s: GenICam camera %s", self.name, self.target, exc_info=True)
        finally:
            if acquirer is not None:
                self._producer_set().close(acquirer)
        return delivered
