"""Evidence on the real daemon: NG overlays (and the raw judged image) and a sample of OK parts,
each in a ring folder bounded in parts, counted in the status, kept across a restart."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, parse_config
from edge.evidence import EvidenceStore
from edge.types import Frame, Verdict

from .conftest import make_bundle
from .harness import decoded_bgr, pattern, run_to_the_end, start, write_config, write_video
from .test_sources import wait_until


def run(tmp_path, video, **evidence) -> dict:
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video)},
        evidence={"dir": str(tmp_path / "evidence"), **evidence},
    )
    _, final, _ = run_to_the_end(start(config), endpoint)
    return final["counters"]


def test_ng_overlays_with_raw_frames_and_every_nth_ok_part(tmp_path) -> None:
    video = write_video(tmp_path / "v.avi", pattern(30))  # parts 0, 3, ..., 27 are NG
    counters = run(tmp_path, video, max_files=4, raw=True, ok_every=5)

    assert (counters["ng"], counters["evidence_saved"], counters["evidence_skipped"]) == (10, 10, 0)
    assert (counters["ok"], counters["ok_samples_saved"], counters["ok_samples_skipped"]) == (20, 4, 0)
    folder = tmp_path / "evidence"
    kept = [18, 21, 24, 27]  # the ring keeps the last 4 NG parts, both files each
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(
        f"cam0_{seq:08d}_cam0_{seq}_NG{suffix}.png" for seq in kept for suffix in ("", "_raw")
    )
    decoded = decoded_bgr(video)
    for seq in kept:  # the raw image is what the line judged, pixel for pixel; the overlay is not
        assert np.array_equal(cv2.imread(str(folder / f"cam0_{seq:08d}_cam0_{seq}_NG_raw.png")), decoded[seq])
        assert not np.array_equal(cv2.imread(str(folder / f"cam0_{seq:08d}_cam0_{seq}_NG.png")), decoded[seq])
    # OK parts 5, 10, 15, 20 of the stream: frames 7, 14, 22, 29 (every 3rd frame is NG).
    ok = sorted(p.name for p in (folder / "ok").glob("*.png"))
    assert ok == [f"cam0_{seq:08d}_cam0_{seq}_OK_raw.png" for seq in (7, 14, 22, 29)]
    # Beside each part, its verdict as published, for the review on edge-hmi; the ring drops it too.
    sidecars = sorted(folder.glob("*.json"))
    assert [p.name for p in sidecars] == [f"cam0_{seq:08d}_cam0_{seq}_NG.json" for seq in kept]
    assert all(json.loads(p.read_text())["verdict"] == "NG" for p in sidecars)
    assert np.array_equal(cv2.imread(str(folder / "ok" / ok[0])), decoded[7])


def test_a_restart_keeps_the_ring_and_replaces_parts_saved_under_the_same_name(tmp_path) -> None:
    """The second run numbers its frames from 0 again: its parts replace the first run's files of
    the same name (the newest, not evicted as the oldest) and the folder stays bounded."""
    run(tmp_path, write_video(tmp_path / "first.avi", pattern(12)), max_files=4)  # NG parts 0, 3, 6, 9
    folder = tmp_path / "evidence"
    first_nine = folder / "cam0_00000009_cam0_9_NG.png"
    assert len(list(folder.glob("*.png"))) == 4 and first_nine.exists()
    run(tmp_path, write_video(tmp_path / "second.avi", pattern(7)), max_files=4)  # NG parts 0, 3, 6 again
    newest = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)
    assert [p.name for p in newest] == [f"cam0_{seq:08d}_cam0_{seq}_NG.png" for seq in (9, 0, 3, 6)]


@pytest.mark.parametrize("evidence", [{"raw": True}, {"ok_every": 10}])
def test_raw_and_ok_samples_need_a_folder(tmp_path, evidence: dict) -> None:
    (tmp_path / "parts.mp4").write_bytes(b"")
    data = {
        "line": "l",
        "station": "s",
        "bundle": str(make_bundle(tmp_path / "b")),
        "source": {"kind": "video", "path": "parts.mp4"},
        "evidence": evidence,
    }
    with pytest.raises(ConfigError, match=r"line.yaml: evidence.dir: required by evidence.raw and evidence.ok_every"):
        parse_config(data, tmp_path / "line.yaml")


def ng(seq: int, frame_id: str | None = None, anomaly_map: np.ndarray | None = None) -> Verdict:
    frame = Frame("cam0", seq, frame_id or f"cam0:{seq}", 0.0, np.full((24, 32, 3), 90, np.uint8))
    amap = np.zeros((8, 8), np.float32) if anomaly_map is None else anomaly_map
    return Verdict(frame, "NG", 1.0, 0.5, anomaly_map=amap)


def test_the_writer_outlives_a_cleared_folder_a_long_name_and_a_part_it_cannot_draw(tmp_path) -> None:
    """Evidence goes on being saved, for the whole run, whatever one part or an operator did."""
    folder = tmp_path / "evidence"
    store = EvidenceStore(folder, max_files=10)
    try:
        store.submit(ng(0))
        wait_until(lambda: store.saved == 1)
        shutil.rmtree(folder)  # someone cleans the disk up
        store.submit(ng(1))
        store.submit(ng(2, frame_id="x" * 400))  # an image file's very long name
        store.submit(ng(3, anomaly_map=np.zeros((8, 8, 3, 2), np.float32)))  # no map OpenCV can resize
        store.submit(ng(4))
        wait_until(lambda: store.saved + store.skipped == 5)
    finally:
        store.close()
    assert (store.saved, store.skipped) == (4, 1)
    names = sorted(p.name for p in folder.glob("*.png"))
    assert [n[:14] for n in names] == ["cam0_00000001_", "cam0_00000002_", "cam0_00000004_"]
    assert max(len(n.encode()) for n in names) <= 255
