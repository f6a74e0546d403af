"""The operator screen's image topic: JPEGs of judged parts beside the verdicts, never among them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import zmq

from edge.listen import Listener

from .harness import collect, free_port, pattern, start, write_config, write_video


def test_every_ng_part_comes_as_a_jpeg_on_its_own_topic_and_a_plc_on_the_line_topic_gets_none(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    video = write_video(tmp_path / "parts.avi", pattern(30))
    images_at = f"tcp://127.0.0.1:{free_port()}"
    config, endpoint = write_config(
        tmp_path,
        tiny_bundle,
        {"kind": "video", "path": str(video), "fps": 30},
        hmi_images={"bind": images_at, "ok_per_s": 0, "max_side": 32, "quality": 70, "queue": 64, "sndhwm": 64},
    )
    ctx = zmq.Context()
    screen = ctx.socket(zmq.SUB)
    screen.setsockopt(zmq.SUBSCRIBE, b"img/line3/")
    screen.connect(images_at)
    time.sleep(0.3)  # the daemon waits for its PLC subscriber, not for the screen
    proc = start(config)
    try:
        with Listener(endpoint, "line3/") as plc:
            verdicts, final, _ = collect(plc, proc)
        assert proc.wait(20) == 0
        images = []
        while screen.poll(2000):
            images.append(screen.recv_multipart())
    finally:
        screen.close(0)
        ctx.term()
    ng = [v["seq"] for v in verdicts if v["verdict"] == "NG"]
    assert len(verdicts) == 30 and len(ng) == 10
    assert all(len(v) and "jpeg" not in json.dumps(v) for v in verdicts)  # the PLC got verdicts only
    metas = [json.loads(m[1]) for m in images]
    assert {m[0] for m in images} == {b"img/line3/st1"}
    # Every NG, no OK (ok_per_s 0), from the first the screen got: one sent before its subscription
    # reached the socket (it connects while the daemon starts) is lost, as on any PUB socket.
    got = sorted(m["seq"] for m in metas)
    assert len(got) >= 8 and got == [seq for seq in ng if seq >= got[0]]
    for (_, _, jpeg), meta in zip(images, metas):
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and max(picture.shape[:2]) == 32 == max(meta["width"], meta["height"])
        assert meta["verdict"] == "NG" and meta["score"] > meta["threshold"]
    assert final["counters"]["images_sent"] == 10 and final["counters"]["images_dropped"] == 0


def test_ok_parts_are_rate_limited_per_camera(tmp_path: Path, tiny_bundle: Path) -> None:
    dark = [pattern(3)[1]] * 40  # OK parts only, 40 at 20 fps: 2 s
    video = write_video(tmp_path / "ok.avi", dark)
    images_at = f"tcp://127.0.0.1:{free_port()}"
    config, endpoint = write_config(
        tmp_path,
        tiny_bundle,
        {"kind": "video", "path": str(video), "fps": 20},
        hmi_images={"bind": images_at, "ok_per_s": 2},
    )
    proc = start(config)
    with Listener(endpoint, "line3/") as plc:
        verdicts, final, _ = collect(plc, proc)
    assert proc.wait(20) == 0
    assert [v["verdict"] for v in verdicts] == ["OK"] * 40
    sent = final["counters"]["images_sent"] + final["counters"]["images_dropped"]
    assert 2 <= sent <= 6  # about 2/s over 2 s, not one per part
