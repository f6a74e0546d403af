"""The review's files and the logins, on real folders; and edge-hmi behind a CURVE daemon."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import keys_main
from hmi.auth import Sessions, add_user, check_password, hash_password, read_users
from hmi.review import Review, ReviewError
from tests.edge.harness import free_port, pattern, start, write_config, write_video

from .conftest import needs_hmi_extra, start_hmi


def test_passwords_are_salted_scrypt_and_only_the_right_one_logs_in(tmp_path: Path) -> None:
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second and first.startswith("scrypt$16384$8$1$")  # a salt of its own each time
    assert check_password("s3cret-pass", first) and not check_password("s3cret-Pass", first)
    users = tmp_path / "users"
    add_user(users, "ana", "s3cret-pass")
    assert "s3cret" not in users.read_text() and users.stat().st_mode & 0o077 == 0
    sessions = Sessions(users)
    assert sessions.login("ana", "wrong") is None and sessions.login("bob", "s3cret-pass") is None
    token = sessions.login("ana", "s3cret-pass")
    assert token and sessions.user(token) == "ana" and sessions.user("forged") is None
    sessions.logout(token)
    assert sessions.user(token) is None
    users.write_text("ana\n")
    with pytest.raises(ValueError, match="add users with edge-hmi --add-user"):
        read_users(users)


def evidence_part(folder: Path, name: str, score: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}_raw.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(folder / f"{name}.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / f"{name}.json").write_text(json.dumps({"score": score, "threshold": 0.5, "model": "m@1"}))


def test_a_mark_moves_the_judged_image_only_into_the_review_folder_and_logs_it(tmp_path: Path) -> None:
    evidence, review_dir = tmp_path / "evidence", tmp_path / "review"
    evidence_part(evidence, "cam0_00000003_cam0_3_NG", 0.9)
    evidence_part(evidence, "cam0_00000006_cam0_6_NG", 0.8)
    review = Review(evidence, review_dir)
    assert {p.score for p in review.parts()} == {0.9, 0.8}
    assert review.parts(since=time.time() + 60) == [] and len(review.parts(until=time.time() + 60)) == 2
    with pytest.raises(ReviewError, match="defect type"):
        review.mark("ng", "cam0_00000003_cam0_3_NG", "defect", "ana", "../../etc")
    with pytest.raises(ReviewError, match="no part"):
        review.mark("ng", "../evidence/cam0_00000003_cam0_3_NG", "good", "ana")
    target = review.mark("ng", "cam0_00000003_cam0_3_NG", "defect", "ana", "scratch")
    assert target == review_dir / "scratch" / "cam0_00000003_cam0_3_NG.png" and target.is_file()
    assert not (evidence / "cam0_00000003_cam0_3_NG_raw.png").exists()
    assert (evidence / "cam0_00000003_cam0_3_NG.png").exists()  # the daemon's overlay stays in its ring
    with pytest.raises(ReviewError, match="no part"):  # marked once only
        review.mark("ng", "cam0_00000003_cam0_3_NG", "good", "bob")
    review.mark("ng", "cam0_00000006_cam0_6_NG", "good", "bob")
    log = review.log()
    assert [(e["user"], e["label"], e["score"], e["model"]) for e in log] == [
        ("ana", "scratch", 0.9, "m@1"),
        ("bob", "good", 0.8, "m@1"),
    ]
    assert review.parts() == []  # reviewed parts leave the gallery


@needs_hmi_extra
def test_the_hmi_follows_a_curve_daemon_with_its_own_client_key(
    tmp_path: Path, tiny_bundle: Path, hmi_processes: list
) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("server", "hmi"):
        assert keys_main([str(keys), name]) == 0
    allowed.mkdir()
    (allowed / "hmi.key").write_bytes((keys / "hmi.key").read_bytes())
    video = write_video(tmp_path / "v.avi", pattern(30))
    curve = {"curve_secret_key": str(keys / "server.key_secret"), "curve_allowed_clients": str(allowed)}
    config, _ = write_config(
        tmp_path,
        tiny_bundle,
        {"kind": "video", "path": str(video), "fps": 30},
        publish=curve,
        hmi_images={"bind": f"tcp://127.0.0.1:{free_port()}"},
        hmi={"curve_secret_key": str(keys / "hmi.key_secret")},
    )
    port = free_port()
    hmi = start_hmi(config, port)
    hmi_processes.append(hmi)
    daemon = start(config)  # waits for its one subscriber: the HMI, let in by its key
    hmi_processes.append(daemon)
    assert daemon.wait(60) == 0
    deadline, camera = time.monotonic() + 20, {}
    while time.monotonic() < deadline:
        state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2).read())
        camera = state["cameras"][0] if state["cameras"] else {}
        if camera.get("state") == "stopped" and camera.get("image"):
            break
        time.sleep(0.2)
    assert camera["judged"] == 30 and camera["counters"]["ng"] == 10
    assert camera["image"]["verdict"] in ("OK", "NG")  # the image topic came through CURVE too
    hmi.terminate()
    hmi.wait(10)  # uvicorn shuts down, then ends by the signal it was sent (-15)
    out = hmi.stdout.read()
    assert f"on http://127.0.0.1:{port}, open to this machine only" in out and "review off (no hmi.users)" in out
