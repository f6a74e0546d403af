"""CURVE on the real daemon: only subscribers whose public key is allowed receive verdicts."""

from __future__ import annotations

import subprocess
import sys

from edge.cli import keys_main
from edge.listen import Listener

from .conftest import make_bundle
from .harness import assert_accounted, collect, pattern, start, write_config, write_video


def test_only_allowed_subscribers_receive(tmp_path):
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("server", "plc", "stranger"):
        assert keys_main([str(keys), name]) == 0
    allowed.mkdir()
    (allowed / "plc.key").write_bytes((keys / "plc.key").read_bytes())
    video = write_video(tmp_path / "v.avi", pattern(30))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video)},
        publish={"curve_secret_key": str(keys / "server.key_secret"), "curve_allowed_clients": str(allowed)},
    )
    stranger = Listener(endpoint, "", server_key=keys / "server.key", client_secret_key=keys / "stranger.key_secret")
    plain = Listener(endpoint, "")
    proc = start(config)
    try:
        with Listener(
            endpoint, "line3/", server_key=keys / "server.key", client_secret_key=keys / "plc.key_secret"
        ) as plc:
            verdicts, final, _ = collect(plc, proc)
        assert proc.wait(20) == 0
        assert stranger.recv(0.5) is None and plain.recv(0.5) is None
    finally:
        stranger.close()
        plain.close()
    assert_accounted(verdicts, final)
    assert len(verdicts) == 30


def test_keys_are_private(tmp_path):
    keys_main([str(tmp_path), "server"])
    assert (tmp_path / "server.key_secret").stat().st_mode & 0o077 == 0
    assert "secret-key" in (tmp_path / "server.key_secret").read_text()
    assert "secret-key" not in (tmp_path / "server.key").read_text()


def test_public_key_given_as_server_secret_is_refused(tmp_path):
    keys_main([str(tmp_path / "k"), "server"])
    (tmp_path / "allowed").mkdir()
    video = write_video(tmp_path / "v.avi", pattern(3))
    config, _ = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video)},
        publish={
            "curve_secret_key": str(tmp_path / "k" / "server.key"),
            "curve_allowed_clients": str(tmp_path / "allowed"),
        },
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from edge.cli import run_main; sys.exit(run_main())",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "holds no secret key" in r.stderr
