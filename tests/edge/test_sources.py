"""Frame sources against real files written here: video, image folders and a camera that drops out."""

from __future__ import annotations

import itertools
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.config import CameraConfig, ImagesConfig, ReconnectConfig, VideoConfig
from edge.sources import CameraSource, ImageFolderSource, Source, VideoFileSource, open_source
from edge.types import Frame

from .conftest import make_bundle

N_FRAMES = 10
SIZE = (48, 64)  # h, w
RED_BGR = (0, 0, 255)


def is_red_rgb(image: np.ndarray) -> bool:
    """Pure red after lossy coding: channel 0 (R in RGB) high, the others low."""
    r, g, b = image.reshape(-1, 3).mean(axis=0)
    return r > 200 and g < 60 and b < 60


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N_FRAMES pure-red frames, in the first container/codec this OpenCV build can both write and read."""
    folder = tmp_path_factory.mktemp("video")
    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        path = folder / f"parts{suffix}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, SIZE[::-1])
        if not writer.isOpened():
            continue
        for _ in range(N_FRAMES):
            writer.write(np.full((*SIZE, 3), RED_BGR, np.uint8))
        writer.release()
        if cv2.VideoCapture(str(path)).read()[0]:
            return path
    pytest.fail("this OpenCV build can neither write mp4v/.mp4 nor MJPG/.avi")


def consume_in_thread(source: Source, stop: threading.Event) -> tuple[threading.Thread, list[Frame]]:
    frames: list[Frame] = []
    thread = threading.Thread(target=lambda: frames.extend(source.frames(stop)), daemon=True)
    thread.start()
    return thread, frames


def back_offs(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the camera announced before each reconnect, in order."""
    return [float(m[1]) for r in caplog.records if (m := re.search(r"reconnecting in ([\d.]+) s", r.getMessage()))]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Polls until ``condition`` holds; the timeout only bounds a failing test (a loaded machine
    can take seconds over what takes milliseconds on an idle one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_video_reads_every_frame_once_as_rgb(video: Path) -> None:
    source = VideoFileSource(video, name="top")
    assert source.state == "connecting"
    before = time.time()
    frames = list(source.frames(threading.Event()))
    assert [f.seq for f in frames] == list(range(N_FRAMES))
    assert [f.frame_id for f in frames] == [f"top:{i}" for i in range(N_FRAMES)]
    assert all(f.stream == "top" and f.error is None for f in frames)
    assert all(f.image.shape == (*SIZE, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(is_red_rgb(f.image) for f in frames)
    stamps = [f.t_grab for f in frames]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= time.time()
    assert source.state == "ended"


def test_video_loop_starts_again_and_keeps_counting(video: Path) -> None:
    source = VideoFileSource(video, loop=True)
    stream = source.frames(threading.Event())
    frames = list(itertools.islice(stream, 2 * N_FRAMES + 3))
    assert source.state == "streaming"
    stream.close()
    assert source.state == "ended"
    assert [f.seq for f in frames] == list(range(2 * N_FRAMES + 3))
    assert [f.frame_id for f in frames[N_FRAMES - 1 : N_FRAMES + 1]] == [f"cam0:{N_FRAMES - 1}", "cam0:0"]


def test_video_fps_paces_frames(video: Path) -> None:
    fps = 40.0
    start = time.monotonic()
    frames = list(VideoFileSource(video, fps=fps).frames(threading.Event()))
    elapsed = time.monotonic() - start
    assert len(frames) == N_FRAMES
    expected = (N_FRAMES - 1) / fps
    assert expected * 0.9 <= elapsed < expected + 0.5
    gaps = np.diff([f.t_grab for f in frames])
    # A fixed schedule shortens the gap after a late wake-up (so lateness does not add up), so
    # single gaps vary under load; the typical gap is the period.
    assert 0.7 / fps < np.median(gaps) < 1.5 / fps


def test_stop_interrupts_a_paced_looping_video(video: Path) -> None:
    stop, stopped_at = threading.Event(), []
    stream = VideoFileSource(video, loop=True, fps=0.2).frames(stop)
    # The first frame comes at once; the second is due 5 s later. The stop is timed from the first
    # frame, not from the start, so a slow open of the video cannot make it land before that frame.
    frames = [next(stream)]
    timer = threading.Timer(0.2, lambda: (stopped_at.append(time.monotonic()), stop.set()))
    timer.start()
    frames += list(stream)
    ended_at = time.monotonic()
    timer.join()
    # Ending well before the next frame was due means the wait itself was cut short.
    assert ended_at - stopped_at[0] < 2.5
    assert len(frames) == 1


def test_unopenable_video_is_one_error_frame_then_the_end(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    source = VideoFileSource(bad, loop=True)
    frames = list(itertools.islice(source.frames(threading.Event()), 5))
    assert len(frames) == 1 and frames[0].image is None and "bad.mp4" in frames[0].error
    assert source.state == "ended"


def write_image(path: Path, rgb: tuple[int, int, int]) -> None:
    assert cv2.imwrite(str(path), np.full((*SIZE, 3), rgb[::-1], np.uint8))


def test_image_folder_in_name_order_skipping_other_files(tmp_path: Path) -> None:
    colours = {"b.png": (0, 255, 0), "10.bmp": (255, 0, 0), "a.tif": (0, 0, 255), "C.JPG": (255, 255, 0)}
    for name, rgb in colours.items():
        write_image(tmp_path / name, rgb)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()
    frames = list(ImageFolderSource(tmp_path).frames(threading.Event()))
    assert [f.frame_id for f in frames] == ["10.bmp", "C.JPG", "a.tif", "b.png"]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    for frame in frames:
        assert frame.image.shape == (*SIZE, 3)
        assert np.abs(frame.image.astype(int) - colours[frame.frame_id]).max() <= 2  # JPEG is lossy


def test_unreadable_image_is_an_error_frame_and_the_stream_goes_on(tmp_path: Path) -> None:
    write_image(tmp_path / "1.png", (9, 9, 9))
    (tmp_path / "2.png").write_bytes(b"\x89PNG garbage")
    write_image(tmp_path / "3.png", (9, 9, 9))
    frames = list(ImageFolderSource(tmp_path).frames(threading.Event()))
    assert [f.seq for f in frames] == [0, 1, 2]
    assert frames[1].image is None and "2.png" in frames[1].error
    assert frames[0].image is not None and frames[2].image is not None and frames[2].error is None


def test_grayscale_image_becomes_three_channels(tmp_path: Path) -> None:
    gray = np.arange(SIZE[0] * SIZE[1], dtype=np.uint8).reshape(SIZE)
    assert cv2.imwrite(str(tmp_path / "g.png"), gray)
    (frame,) = ImageFolderSource(tmp_path).frames(threading.Event())
    assert frame.image.shape == (*SIZE, 3)
    assert all(np.array_equal(frame.image[..., c], gray) for c in range(3))


def test_image_folder_loop(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, (1, 2, 3))
    frames = list(itertools.islice(ImageFolderSource(tmp_path, loop=True).frames(threading.Event()), 5))
    assert [f.frame_id for f in frames] == ["a.png", "b.png", "a.png", "b.png", "a.png"]
    assert [f.seq for f in frames] == list(range(5))


def test_looping_a_folder_with_nothing_readable_ends_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"garbage")
    frames = list(itertools.islice(ImageFolderSource(tmp_path, loop=True).frames(threading.Event()), 5))
    assert len(frames) == 1 and frames[0].image is None


@pytest.mark.parametrize("target", ["rtsp://127.0.0.1:9/none", "missing-device.mp4"])
def test_unreachable_camera_keeps_reconnecting_and_stops_promptly(
    tmp_path: Path, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.sources")
    if target.endswith(".mp4"):
        target = str(tmp_path / target)
    source = CameraSource(target, reconnect=ReconnectConfig(initial_s=0.01, max_s=0.04))
    stop = threading.Event()
    thread, frames = consume_in_thread(source, stop)
    assert wait_until(lambda: source.reconnects >= 9)
    assert source.state == "reconnecting"
    start = time.monotonic()
    stop.set()
    thread.join(timeout=2.0)
    assert not thread.is_alive() and time.monotonic() - start < 2.0
    assert source.state == "ended" and frames == []
    assert back_offs(caplog)[:4] == [0.01, 0.02, 0.04, 0.04]
    warned = [
        int(re.search(r"attempt (\d+)", r.getMessage())[1])
        for r in caplog.records
        if r.levelno == logging.WARNING and "reconnecting in" in r.getMessage()
    ]
    assert warned[:4] == [1, 2, 4, 8], "a camera that stays away is logged at attempts 1, 2, 4, 8, ... only"


def test_stop_cuts_a_long_back_off_short() -> None:
    source = CameraSource("rtsp://127.0.0.1:9/none", reconnect=ReconnectConfig(initial_s=30.0, max_s=60.0))
    stop = threading.Event()
    thread, _ = consume_in_thread(source, stop)
    assert wait_until(lambda: source.state == "reconnecting")
    start = time.monotonic()
    stop.set()
    thread.join(timeout=2.0)
    assert not thread.is_alive() and time.monotonic() - start < 0.5
    assert source.reconnects == 1


def test_camera_that_ends_reconnects_and_streams_again(video: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.sources")
    source = CameraSource(str(video), name="cam2", reconnect=ReconnectConfig(initial_s=0.01, max_s=0.02))
    stream = source.frames(threading.Event())
    frames = list(itertools.islice(stream, 2 * N_FRAMES + 1))
    assert source.state == "streaming" and source.reconnects == 2
    stream.close()
    assert source.state == "ended"
    assert [f.seq for f in frames] == list(range(2 * N_FRAMES + 1))
    assert [f.frame_id for f in frames] == [f"cam2:{i}" for i in range(2 * N_FRAMES + 1)]
    assert all(is_red_rgb(f.image) for f in frames)
    assert back_offs(caplog) == [0.01, 0.01]  # a session that delivered frames resets the back-off


class MisconfiguredCamera(CameraSource):
    def _open(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self.target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC])  # OpenCV raises: odd length


def test_camera_that_raises_is_a_dropout_not_a_crash(video: Path) -> None:
    source = MisconfiguredCamera(str(video), reconnect=ReconnectConfig(initial_s=0.01, max_s=0.02))
    stop = threading.Event()
    thread, frames = consume_in_thread(source, stop)
    assert wait_until(lambda: source.reconnects >= 2)
    stop.set()
    thread.join(timeout=2.0)
    assert not thread.is_alive() and frames == [] and source.state == "ended"


def test_open_source_builds_what_the_config_says(video: Path, tmp_path: Path) -> None:
    video_source = open_source(VideoConfig(kind="video", name="v", path=video, loop=True, fps=5.0))
    assert isinstance(video_source, VideoFileSource) and (video_source.name, video_source.loop) == ("v", True)
    assert isinstance(open_source(ImagesConfig(kind="images", path=tmp_path)), ImageFolderSource)
    camera = open_source(CameraConfig(kind="camera", index=3))
    assert isinstance(camera, CameraSource) and camera.target == 3
    assert open_source(CameraConfig(kind="camera", url="rtsp://127.0.0.1:9/x")).target == "rtsp://127.0.0.1:9/x"


WITHOUT_HARVESTERS = "import sys; sys.modules['harvesters'] = None; from {module} import {main}; sys.exit({main}())"


@pytest.mark.parametrize(
    "module, main, extra", [("edge.cli", "run_main", []), ("edge.capture", "main", ["--out", "captures"])]
)
def test_a_genicam_source_without_harvesters_is_refused_at_start_with_the_fix(
    tmp_path: Path, module, main, extra
) -> None:
    (tmp_path / "vendor.cti").write_bytes(b"")
    config = tmp_path / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "line": "l",
                "station": "s",
                "bundle": str(make_bundle(tmp_path / "bundle")),
                "source": {"kind": "genicam", "name": "top", "cti": "vendor.cti"},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_HARVESTERS.format(module=module, main=main), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "source top: GenICam cameras need harvesters, which is not installed: pip install 'edge-inspect[genicam]' "
            "(or pip install harvesters)"
        )
    )
