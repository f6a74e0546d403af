"""Signed bundles: a line with trust.keys runs only bundles the plant approved. Keys from the real
edge-keys, signatures from the real edge-calibrate (and the function export-engine and
edge-build-engine sign with), checked by the real daemon at start, at --check and at reload."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import cv2
import pytest
import yaml

from calibration.cli import main as calibrate_main
from edge.cli import keys_main
from edge.engines import engine_record
from edge.inspector import Inspector
from edge.listen import Listener
from edge.trust import KEY_VARIABLE, MANIFEST_FILE, TrustError, load_signing_key, read_history, sign_bundle
from export.engine import record_engine

from .conftest import make_bundle, part
from .harness import EDGE_RUN, collect, pattern, start, write_config, write_video


@pytest.fixture
def keys(tmp_path) -> Path:
    """Signing keys made by edge-keys --sign: maker (who exports), plant-qa (who calibrates) and a
    stranger; the line's trust.keys folder holds plant-qa.pub alone."""
    for name in ("maker", "plant-qa", "stranger"):
        assert keys_main(["--sign", str(tmp_path / "keys"), name]) == 0
    (tmp_path / "trusted").mkdir()
    shutil.copy(tmp_path / "keys" / "plant-qa.pub", tmp_path / "trusted")
    return tmp_path / "keys"


def good_parts(folder: Path, values=range(40, 80, 2)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        cv2.imwrite(str(folder / f"{i:03d}.png"), part(v, (32, 32)))
    return folder


def calibrate(bundle: Path, *extra: str) -> None:
    assert calibrate_main(["--bundle", str(bundle), "--data", str(good_parts(bundle.parent / "good")), *extra]) == 0


def signed_bundle(root: Path, keys: Path, calibrator: str = "plant-qa") -> Path:
    """Exported and signed by maker (the call export-engine makes), calibrated and signed by
    ``calibrator`` with the real edge-calibrate."""
    bundle = make_bundle(root, threshold=None)
    sign_bundle(bundle, load_signing_key(keys / "maker.ed25519"), "export", "export-engine", "brightness")
    calibrate(bundle, "--sign-key", str(keys / f"{calibrator}.ed25519"))
    return bundle


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def edit_threshold(bundle: Path) -> None:
    """A calibration edited by hand to a lower k: consistent in itself (μ + kσ), caught by its signature alone."""
    cal = yaml.safe_load((bundle / "calibration.yaml").read_text())
    cal["k"], cal["threshold"] = 1.0, cal["mu"] + cal["sigma"]
    (bundle / "calibration.yaml").write_text(yaml.safe_dump(cal, sort_keys=False))


def edge_run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EDGE_RUN, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EDGE_ORT_THREADS": "1"},
    )


def test_edge_keys_makes_a_signing_key_pair_and_never_overwrites_one(tmp_path, capsys) -> None:
    assert keys_main(["--sign", str(tmp_path), "plant-qa"]) == 0
    assert "plant-qa.pub" in capsys.readouterr().out
    private = tmp_path / "plant-qa.ed25519"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "plant-qa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert load_signing_key(private).name == "plant-qa"
    before = private.read_bytes()
    assert keys_main(["--sign", str(tmp_path), "plant-qa"]) == 2
    assert "already exists" in capsys.readouterr().err and private.read_bytes() == before
    with pytest.raises(SystemExit) as e:
        keys_main(["--help"])
    assert e.value.code == 0 and "--sign" in capsys.readouterr().out


def test_a_bundle_signed_by_an_approved_key_runs_and_check_prints_its_history(tmp_path, keys) -> None:
    bundle = signed_bundle(tmp_path / "bundle", keys)
    video = write_video(tmp_path / "v.avi", pattern(3))
    config, _ = write_config(tmp_path, bundle, {"kind": "video", "path": str(video)}, trust={"keys": "trusted"})
    r = edge_run(config, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    history = [line for line in r.stdout.splitlines() if line.startswith("history")]
    assert len(history) == 2, r.stdout
    assert " export by maker (key " in history[0] and "with export-engine 0.1.0: brightness" in history[0]
    assert " calibrate by plant-qa (key " in history[1] and "with edge-calibrate" in history[1]
    assert "threshold" in history[1] and "on 20 good parts" in history[1]
    assert f"trust    signed by plant-qa, a key in trust.keys {tmp_path / 'trusted'}" in r.stdout
    assert "trust.keys is not set" not in r.stderr


def unsigned(bundle: Path, keys: Path) -> None:
    (bundle / MANIFEST_FILE).unlink()


def calibrated_by_a_stranger(bundle: Path, keys: Path) -> None:
    calibrate(bundle, "--sign-key", str(keys / "stranger.ed25519"))


def model_byte(bundle: Path, keys: Path) -> None:
    flip_a_byte(bundle / "model.onnx")


def bundle_yaml_byte(bundle: Path, keys: Path) -> None:
    flip_a_byte(bundle / "bundle.yaml")


def calibration_byte(bundle: Path, keys: Path) -> None:
    flip_a_byte(bundle / "calibration.yaml")


def calibration_edited(bundle: Path, keys: Path) -> None:
    edit_threshold(bundle)


def calibration_removed(bundle: Path, keys: Path) -> None:
    (bundle / "calibration.yaml").unlink()


def file_added(bundle: Path, keys: Path) -> None:
    (bundle / "notes.txt").write_text("who put this here?")


def history_edited(bundle: Path, keys: Path) -> None:
    document = json.loads((bundle / MANIFEST_FILE).read_text())
    document["history"][0]["detail"] = "something else"
    (bundle / MANIFEST_FILE).write_text(json.dumps(document))


REFUSALS = [
    (unsigned, "unsigned (no manifest.json)", "--sign-key"),
    (calibrated_by_a_stranger, "signed by 'stranger' (key ", "put its stranger.pub into"),
    (model_byte, "model.onnx changed after it was signed", "copy the signed bundle again"),
    (bundle_yaml_byte, "bundle.yaml changed after it was signed", "copy the signed bundle again"),
    (calibration_byte, "calibration.yaml changed after it was signed", "calibrate again with a signing key"),
    (calibration_edited, "calibration.yaml changed after it was signed", "calibrate again with a signing key"),
    (calibration_removed, "calibration.yaml missing after it was signed", "restore the files as signed"),
    (file_added, "notes.txt added after it was signed", "copy the signed bundle again"),
    (history_edited, "history[0] (", "its signature does not verify; the manifest was edited"),
]


@pytest.mark.parametrize(("spoil", "reason", "fix"), REFUSALS, ids=[r[0].__name__ for r in REFUSALS])
def test_a_bundle_the_plant_did_not_approve_is_refused_at_start(tmp_path, keys, spoil, reason, fix) -> None:
    bundle = signed_bundle(tmp_path / "bundle", keys)
    spoil(bundle, keys)
    video = write_video(tmp_path / "v.avi", pattern(3))
    config, _ = write_config(tmp_path, bundle, {"kind": "video", "path": str(video)}, trust={"keys": "trusted"})
    r = edge_run(config)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"edge-run: {bundle}") and reason in r.stderr and fix in r.stderr, r.stderr


def test_the_inspector_checks_the_signature_too(tmp_path, keys) -> None:
    bundle = signed_bundle(tmp_path / "bundle", keys)
    with Inspector(bundle, trusted_keys=tmp_path / "trusted") as inspector:
        assert [v.verdict for v in inspector.judge_images([part(40), part(40, spot=(5, 5, 9))])] == ["OK", "NG"]
    edit_threshold(bundle)
    with pytest.raises(TrustError, match="calibration.yaml changed after it was signed"):
        Inspector(bundle, trusted_keys=tmp_path / "trusted")


def test_a_reload_refuses_what_the_plant_did_not_approve_and_accepts_a_re_signed_calibration(tmp_path, keys) -> None:
    """One running line, reloaded five times: four bundles it must refuse (the model judges on, the
    status says why), then its own bundle calibrated again and signed by plant-qa, which it takes."""
    bundle = signed_bundle(tmp_path / "bundle", keys)
    spoilt = {}
    for spoil in (unsigned, calibrated_by_a_stranger, model_byte):
        spoilt[spoil] = signed_bundle(tmp_path / "spoilt" / spoil.__name__, keys)
        spoil(spoilt[spoil], keys)
    video = write_video(tmp_path / "v.avi", pattern(12))
    source = {"kind": "video", "path": str(video), "loop": True, "fps": 50}
    config, endpoint = write_config(tmp_path, bundle, source, trust={"keys": "trusted"})

    def point_at(path: Path) -> None:
        data = yaml.safe_load(config.read_text())
        data["bundle"] = str(path)
        config.write_text(yaml.safe_dump(data))

    def resign() -> None:
        point_at(bundle)
        calibrate(bundle, "--k", "2", "--sign-key", str(keys / "plant-qa.ed25519"))

    steps = [
        (lambda: point_at(spoilt[unsigned]), "unsigned (no manifest.json)"),
        (lambda: point_at(spoilt[calibrated_by_a_stranger]), "signed by 'stranger'"),
        (lambda: point_at(spoilt[model_byte]), "model.onnx changed after it was signed"),
        (lambda: (point_at(bundle), edit_threshold(bundle)), "calibration.yaml changed after it was signed"),
        (resign, None),
    ]
    first_threshold = round(yaml.safe_load((bundle / "calibration.yaml").read_text())["threshold"], 6)
    proc = start(config)
    line = {"asked": 0, "since": 0, "stopping": False}  # reloads asked for; verdicts since the last step
    seen = []  # each reload's outcome, as the status reports it

    def on_verdict(_n: int, verdict: dict) -> None:
        line["since"] += 1
        if len(seen) == len(steps) and verdict["threshold"] != first_threshold and not line["stopping"]:
            line["stopping"] = line["since"] >= 10
            if line["stopping"]:
                proc.send_signal(signal.SIGTERM)

    def on_status(_n: int, status: dict) -> None:
        reloads = status["reloads"]
        if len(seen) < line["asked"] and reloads["ok"] + reloads["refused"] == line["asked"]:
            seen.append(dict(reloads))
            line["since"] = 0
        if len(seen) == line["asked"] < len(steps) and line["since"] >= 5:
            change, _ = steps[line["asked"]]
            change()
            line["asked"] += 1
            proc.send_signal(signal.SIGHUP)

    with Listener(endpoint, "line3/") as listener:
        verdicts, final, _ = collect(listener, proc, on_verdict=on_verdict, on_status=on_status, timeout_s=120)
    assert proc.wait(20) == 0
    assert len(seen) == len(steps), seen
    for i, (reloads, (_, reason)) in enumerate(zip(seen, steps)):
        if reason is None:
            assert reloads["ok"] == 1 and reloads["last_error"] is None, reloads
        else:
            assert reloads["refused"] == i + 1 and reason in reloads["last_error"], reloads
    # Every verdict came from the bundle the line started with; until the re-signed calibration,
    # with its first threshold, whatever the refused bundles said.
    assert {v["model"].split("@")[0] for v in verdicts} == {"bundle"}
    thresholds = [v["threshold"] for v in verdicts]
    switch = next(i for i, t in enumerate(thresholds) if t != first_threshold)
    assert set(thresholds[:switch]) == {first_threshold} and len(set(thresholds[switch:])) == 1
    assert thresholds[-1] < first_threshold, "k 2 instead of 3"
    assert switch >= 5 * 5, "the line judged before and after each refused reload"
    assert {v["verdict"] for v in verdicts} == {"OK", "NG"} and final["counters"]["in_flight"] == 0


def test_without_trust_the_line_runs_as_before_with_one_warning(tmp_path) -> None:
    video = write_video(tmp_path / "v.avi", pattern(3))
    config, _ = write_config(tmp_path, make_bundle(tmp_path / "bundle"), {"kind": "video", "path": str(video)})
    r = edge_run(config, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("trust.keys is not set") == 1, r.stderr
    assert "history  none: unsigned (no manifest.json)" in r.stdout
    assert "trust    not checked: trust.keys is not set" in r.stdout


def test_calibrating_a_signed_bundle_without_a_key_warns_and_the_line_refuses_it(tmp_path, keys, caplog) -> None:
    bundle = signed_bundle(tmp_path / "bundle", keys)
    calibrate(bundle, "--k", "2")
    assert "no longer matches its manifest.json and a line with trust.keys refuses it" in caplog.text
    with pytest.raises(TrustError, match="calibration.yaml changed after it was signed"):
        Inspector(bundle, trusted_keys=tmp_path / "trusted")


def test_the_signing_key_may_come_from_the_environment(tmp_path, keys, monkeypatch) -> None:
    bundle = make_bundle(tmp_path / "bundle", threshold=None)
    monkeypatch.setenv(KEY_VARIABLE, str(keys / "plant-qa.ed25519"))
    calibrate(bundle)
    assert [(e.action, e.signer, e.tool) for e in read_history(bundle)] == [("calibrate", "plant-qa", "edge-calibrate")]


def test_a_signer_never_vouches_for_a_model_changed_since_it_was_signed(tmp_path, keys, capsys) -> None:
    bundle = signed_bundle(tmp_path / "bundle", keys)
    manifest = (bundle / MANIFEST_FILE).read_text()
    # bundle.yaml hashes the model files but not itself: its edits are the signature's to catch.
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    meta["input"]["name"] = "changed"
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(meta))
    args = ["--bundle", str(bundle), "--data", str(tmp_path / "good"), "--sign-key", str(keys / "plant-qa.ed25519")]
    assert calibrate_main(args) == 2
    err = capsys.readouterr().err
    assert "bundle.yaml changed since" in err and "signing now would vouch for that" in err, err
    assert (bundle / MANIFEST_FILE).read_text() == manifest


def test_an_engine_build_is_added_to_the_signed_history(tmp_path, keys, caplog) -> None:
    """What edge-build-engine does once TensorRT has written the engine (which needs a GPU): the
    record into bundle.yaml, and with a key an entry in the history."""
    bundle = signed_bundle(tmp_path / "bundle", keys)
    from edge.bundle import load_bundle

    engine = bundle / "model.nvidia-test-gpu-trt10.8.0-fp16.engine"
    engine.write_bytes(os.urandom(4096))  # the plan's bytes are opaque to the manifest
    record = engine_record(
        load_bundle(bundle),
        engine,
        gpu="NVIDIA Test GPU",
        compute_capability="9.0",
        tensorrt="10.8.0",
        precision="fp16",
        max_batch=8,
        opt_batch=4,
    )
    record_engine(bundle, record, load_signing_key(keys / "plant-qa.ed25519"))
    history = read_history(bundle)
    assert [e.action for e in history] == ["export", "calibrate", "build-engine"]
    assert engine.name in history[-1].files and "fp16 engine" in history[-1].detail
    assert load_bundle(bundle, trusted_keys=tmp_path / "trusted").meta["engines"][0]["file"] == engine.name
    record_engine(bundle, {**record, "max_batch": 16}, None)  # rebuilt without a key
    assert "no longer matches its manifest.json" in caplog.text
    with pytest.raises(TrustError, match="bundle.yaml changed after it was signed"):
        load_bundle(bundle, trusted_keys=tmp_path / "trusted")


def test_a_trust_folder_that_is_missing_or_holds_no_key_is_refused_at_start(tmp_path, keys) -> None:
    bundle = signed_bundle(tmp_path / "bundle", keys)
    video = write_video(tmp_path / "v.avi", pattern(3))
    config, _ = write_config(tmp_path, bundle, {"kind": "video", "path": str(video)}, trust={"keys": "nowhere"})
    r = edge_run(config)
    assert r.returncode == 2 and "trust.keys" in r.stderr and "no such directory" in r.stderr, r.stderr
    (tmp_path / "nowhere").mkdir()
    r = edge_run(config)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "no NAME.pub in it, so no bundle could run" in r.stderr, r.stderr
