"""The daemon's parts on their own: the grabber pool's queue hold and its failures, the typed
status and the message it makes. The real daemon runs them in test_daemon, test_faults, ..."""

from __future__ import annotations

import threading

import cv2

from edge.batcher import FrameQueue
from edge.grabbers import GrabberPool
from edge.sources import ImageFolderSource
from edge.stats import Drift, Percentiles
from edge.status import Counters, Reloads, SourceStatus, StreamStatus

from .conftest import folder_with_an_oversized_image, part


def one_image(tmp_path) -> ImageFolderSource:
    folder = tmp_path / "one"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), part(40))
    return ImageFolderSource(folder, "one")


def test_the_queue_closes_only_once_every_grabber_and_hold_has_ended(tmp_path) -> None:
    queue = FrameQueue(8, "block")
    pool = GrabberPool(queue)
    pool.hold()
    pool.start(one_image(tmp_path), threading.Event()).join(10)
    assert not queue.closed and len(queue) == 1, "the hold keeps it open for the grabbers still to start"
    pool.release()
    assert queue.closed


def test_a_finite_source_that_raises_is_failed_counted_and_closes_the_queue(tmp_path) -> None:
    queue = FrameQueue(8, "block")
    pool = GrabberPool(queue)
    source = ImageFolderSource(folder_with_an_oversized_image(tmp_path), "cam0")
    pool.start(source, threading.Event()).join(10)
    assert pool.failed == {"cam0"} and pool.errors["cam0"] == 1
    assert source.state == "failed" and source.problem is not None and "error" in source.problem
    assert queue.closed and len(queue) == 1, "the frame before the failure is still judged"


def test_an_endless_source_that_raises_is_started_again_until_halted(tmp_path) -> None:
    queue = FrameQueue(64, "drop_oldest")
    pool = GrabberPool(queue)
    source = ImageFolderSource(folder_with_an_oversized_image(tmp_path), "cam0", loop=True)
    halt = threading.Event()
    thread = pool.start(source, halt)
    while pool.errors["cam0"] < 2 and thread.is_alive():
        thread.join(0.05)
    halt.set()
    thread.join(10)
    assert not thread.is_alive() and pool.failed == set() and source.reconnects >= 2
    assert queue.frames_in["cam0"] >= 2, "each start went through the folder again"


def status(counters: Counters) -> StreamStatus:
    return StreamStatus(
        schema=1,
        line="line3",
        station="st1",
        t=1.0,
        state="running",
        uptime_s=2.0,
        counters=counters,
        latency_ms=Percentiles.of([1.0, 3.0]),
        infer_ms=Percentiles.of([]),
        mean_batch=None,
        queue_depth=0,
        streams=1,
        source=SourceStatus("cam0", "streaming", 0, None),
        score_drift=Drift(None, None, None, 0),
        threshold=0.5,
        model="m@1",
        reloads=Reloads(ok=1, at_restart=("queue.size (64 → 8)",)),
        backend={"backend": "onnxruntime"},
    )


def test_the_status_message_has_the_documented_keys_and_leaves_out_writers_that_are_off() -> None:
    message = status(Counters(5, 3, 1, 0, 1, 0, 0, 0)).to_message()
    assert list(message) == [
        "schema", "line", "station", "t", "state", "uptime_s", "counters", "latency_ms", "infer_ms", "mean_batch",
        "queue_depth", "streams", "source", "score_drift", "threshold", "model", "reloads", "backend",
    ]  # fmt: skip
    assert message["counters"] == {
        "frames_in": 5, "ok": 3, "ng": 1, "error": 0, "dropped": 1, "publish_failed": 0, "in_flight": 0, "grab_errors": 0
    }  # fmt: skip
    assert message["latency_ms"] == {"p50": 2.0, "p99": 2.98, "n": 2} and message["infer_ms"]["p50"] is None
    assert message["reloads"] == {"ok": 1, "refused": 0, "last_error": None, "at_restart": ["queue.size (64 → 8)"]}
    assert message["source"] == {"name": "cam0", "state": "streaming", "reconnects": 0, "problem": None}


def test_the_status_message_counts_the_evidence_writers_that_are_on() -> None:
    counters = status(Counters(1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1)).to_message()["counters"]
    assert (counters["evidence_saved"], counters["ok_samples_saved"], counters["ok_samples_skipped"]) == (0, 4, 1)
