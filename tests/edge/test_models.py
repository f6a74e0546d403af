"""Several models in one daemon: each camera may name its own bundle (and k). Frames of a batch
are inferred per model, each verdict carries its stream's model and threshold, a bundle that
several cameras name is loaded once, and a reload switches all of them or none."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from edge.config import ConfigError, load_config, parse_config
from edge.daemon import Daemon
from edge.listen import Listener
from edge.status import Reloads
from edge.types import Frame

from .conftest import make_bundle, part
from .harness import EDGE_RUN, collect, pattern, start, write_config, write_video


def two_cameras(tmp_path, side: dict) -> tuple:
    """top and side film the same parts (every 3rd NG under the brightness model); top is judged
    by the line's bundle, side as ``side`` says."""
    video = write_video(tmp_path / "v.avi", pattern(12))
    streams = [
        {"station": "top", "source": {"kind": "video", "name": "top", "path": str(video)}},
        {"station": "side", "source": {"kind": "video", "name": "side", "path": str(video)}, **side},
    ]
    return write_config(
        tmp_path,
        make_bundle(tmp_path / "line-bundle"),
        None,
        streams=streams,
        batch={"max_batch": 8, "max_wait_ms": 20},
    )


def test_each_camera_is_judged_by_its_own_bundle_and_k(tmp_path) -> None:
    side = make_bundle(tmp_path / "side-bundle", height=16, width=16)  # another model, another input size
    config, endpoint = two_cameras(tmp_path, {"bundle": str(side), "k": 30})  # threshold 0.4 + 30 sigma: 1.4

    proc = start(config)
    with Listener(endpoint, "line3/") as listener:
        verdicts, _, statuses = collect(listener, proc, streams=2)
    assert proc.wait(20) == 0

    by_station = {name: [v for v in verdicts if v["station"] == name] for name in ("top", "side")}
    assert [v["verdict"] for v in by_station["top"]] == ["NG", "OK", "OK"] * 4
    assert [v["verdict"] for v in by_station["side"]] == ["OK"] * 12
    assert {v["model"].split("@")[0] for v in by_station["top"]} == {"line-bundle"}
    assert {v["model"].split("@")[0] for v in by_station["side"]} == {"side-bundle"}
    final = {s["station"]: s for s in statuses if s["state"] == "stopped"}
    for name in ("top", "side"):
        c = final[name]["counters"]
        assert (c["ok"] + c["ng"] + c["error"], c["frames_in"], c["dropped"]) == (12, 12, 0)
    assert final["top"]["threshold"] == pytest.approx(0.5) and final["side"]["threshold"] == pytest.approx(1.4)
    assert final["side"]["backend"]["input"] == [16, 16] and final["top"]["backend"]["input"] == [32, 32]


def test_a_bundle_several_cameras_name_is_loaded_once(tmp_path) -> None:
    config, _ = two_cameras(tmp_path, {"k": 30})
    daemon = Daemon(load_config(config))
    try:
        ((name, cameras),) = daemon.models().items()
        assert name.startswith("line-bundle@") and cameras == ["top", "side"]
        top, side = daemon.streams["top"], daemon.streams["side"]
        assert top.model is side.model and (top.judge.threshold, side.judge.threshold) == pytest.approx((0.5, 1.4))
    finally:
        daemon.close()


def test_a_reload_switches_every_camera_or_none(tmp_path) -> None:
    config, _ = two_cameras(tmp_path, {})
    daemon = Daemon(load_config(config))
    data = yaml.safe_load(config.read_text())

    def reload_with(side: dict) -> None:
        data["streams"][1].update(side)
        config.write_text(yaml.safe_dump(data))
        daemon.reloader.now()

    try:
        frames = [Frame(name, 0, f"{name}:0", 0.0, part(40)) for name in ("top", "side")]
        for f in frames:
            daemon.queue.put(f)
        for v in daemon.judge_frames(daemon.queue.next_batch(2, 0, 0).frames):
            daemon.streams[v.frame.stream].stats.count(v, 1.0)
        reload_with({"bundle": str(make_bundle(tmp_path / "side-bundle", height=16, width=16))})
        assert sorted(name.split("@")[0] for name in daemon.models()) == ["line-bundle", "side-bundle"]
        assert daemon.reloads == Reloads(ok=1, refused=0, last_error=None, at_restart=())
        # The drift window of OK scores starts again for the camera whose model changed, only.
        assert (daemon.status("top").score_drift.n, daemon.status("side").score_drift.n) == (1, 0)

        broken = make_bundle(tmp_path / "broken")
        (broken / "model.onnx").write_bytes(b"garbage")
        reload_with({"bundle": str(broken)})
        assert daemon.reloads.refused == 1 and "broken" in str(daemon.reloads.last_error)
        assert sorted(name.split("@")[0] for name in daemon.models()) == ["line-bundle", "side-bundle"]

        # Cameras come and go with the file (tests/edge/test_reload.py runs it on the live daemon).
        data["streams"][1]["source"]["name"] = "back"
        reload_with({"bundle": str(tmp_path / "side-bundle")})
        assert daemon.reloads.ok == 2 and sorted(daemon.streams) == ["back", "top"]
    finally:
        daemon.close()


def test_every_camera_needs_a_bundle(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    streams = [
        {"station": "top", "source": {"kind": "camera", "name": "top", "index": 0}, "bundle": "b"},
        {"station": "side", "source": {"kind": "camera", "name": "side", "index": 1}},
    ]
    with pytest.raises(ConfigError, match=r"line.yaml: streams\[1\].bundle: required key is missing; add the bundle"):
        parse_config({"line": "l", "streams": streams}, tmp_path / "line.yaml")
    cfg = parse_config({"line": "l", "bundle": "b", "k": 4, "streams": streams}, tmp_path / "line.yaml")
    assert [(s.bundle, s.k) for s in cfg.streams] == [((tmp_path / "b").resolve(), 4.0)] * 2


def test_check_says_which_bundle_judges_which_camera(tmp_path) -> None:
    side = make_bundle(tmp_path / "side-bundle", height=16, width=16)
    config, _ = two_cameras(tmp_path, {"bundle": str(side)})
    result = subprocess.run(
        [*EDGE_RUN, "--config", str(config), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"bundle   {tmp_path / 'line-bundle'} (32×32 input) for top, threshold 0.5")
    assert lines[4].startswith(f"bundle   {tmp_path / 'side-bundle'} (16×16 input) for side, threshold 0.5")
    assert lines[1].startswith("backend  onnxruntime") and lines[5].startswith("backend  onnxruntime")
    assert lines[2].startswith("history  ") and lines[3].startswith("trust    ")
