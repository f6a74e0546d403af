"""Bad command lines and bad configs: each is one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.edge.conftest import make_bundle

CLIS = {
    "edge-run": "from edge.cli import run_main as m",
    "edge-listen": "from edge.cli import listen_main as m",
    "edge-keys": "from edge.cli import keys_main as m",
    "edge-calibrate": "from calibration.cli import main as m",
    "edge-capture": "from edge.capture import main as m",
    "edge-hmi": "from hmi.server import main as m",
}


def run_cli(name: str, *args: str) -> subprocess.CompletedProcess:
    code = f"import sys; {CLIS[name]}; sys.exit(m())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    bundle = make_bundle(root / "bundle")
    (root / "good").mkdir()
    (root / "bad.yaml").write_text("line: l\n  station: s\n")
    (root / "list.yaml").write_text("- just a list\n")
    (root / "v.avi").write_bytes(b"")
    (root / "unknown.yaml").write_text(
        f"line: l\nstation: s\nbundle: {bundle}\nsource: {{kind: video, path: v.avi}}\nbatch: {{max_bach: 4}}\n"
    )
    (root / "line.yaml").write_text("line: l\nstation: s\nsource: {kind: video, path: v.avi}\n")  # no bundle yet
    # Out of range values that once ended in a traceback or a dead grab thread (issue 16).
    head = f"line: l\nstation: s\nbundle: {bundle}\nsource: {{kind: video, path: v.avi"
    (root / "wait.yaml").write_text(f"{head}}}\nbatch: {{max_wait_ms: 1.0e+13}}\n")
    (root / "fps.yaml").write_text(f"{head}, fps: 1.0e-12}}\n")
    (root / "port.yaml").write_text(f"{head}}}\nmetrics: {{bind: '127.0.0.1:99999'}}\n")
    (root / "hmi-bind.yaml").write_text(f"{head}}}\nhmi: {{bind: 'localhost'}}\n")
    (root / "hmi-users.yaml").write_text(f"{head}}}\nhmi: {{users: no-such-users}}\n")
    (root / "nul.yaml").write_text(head.replace("line: l", 'line: "l\\0"') + "}\n")  # YAML's \0: a NUL
    return root


CASES = [
    ("edge-run", [], "required: --config"),
    ("edge-run", ["--config"], "expected one argument"),
    ("edge-run", ["--config", "{root}/missing.yaml"], "cannot read the config file"),
    ("edge-run", ["--config", "{root}"], "cannot read the config file"),
    ("edge-run", ["--config", "{root}/bad.yaml"], "YAML syntax error"),
    ("edge-run", ["--config", "{root}/list.yaml"], "must be a mapping"),
    ("edge-run", ["--config", "{root}/unknown.yaml"], "did you mean 'max_batch'"),
    ("edge-run", ["--config", "{root}/wait.yaml"], "wait.yaml: batch.max_wait_ms: must be a number from 0 to 10000"),
    ("edge-run", ["--config", "{root}/fps.yaml"], "fps.yaml: source.fps: must be a number from 0.01 to 100000 or null"),
    ("edge-run", ["--config", "{root}/port.yaml"], "port.yaml: metrics.bind: must be HOST:PORT (ports 1 to 65535)"),
    ("edge-run", ["--config", "{root}/nul.yaml"], "nul.yaml: line: must be a non-empty name without '/'"),
    ("edge-capture", ["--config", "{root}/fps.yaml", "--out", "{root}/o"], "source.fps: must be a number from 0.01"),
    ("edge-run", ["--config", "{root}/bad.yaml", "--log-level", "LOUD"], "invalid choice: 'LOUD'"),
    ("edge-run", ["--config", "{root}/bad.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    ("edge-run", ["--config", "{root}/unknown.yaml", "--check", "--check-timeout", "soon"], "invalid float value"),
    ("edge-capture", [], "required: --config, --out"),
    ("edge-capture", ["--config", "{root}/bad.yaml", "--out", "{root}/o"], "YAML syntax error"),
    ("edge-capture", ["--config", "{root}/bad.yaml", "--out", "{root}/o", "--count", "0"], "--count must be >= 1"),
    (
        "edge-capture",
        ["--config", "{root}/line.yaml", "--out", "{root}/o", "--stream", "top"],
        "--stream top: not in the config; its streams are cam0",
    ),
    ("edge-listen", ["--count", "many"], "invalid int value: 'many'"),
    ("edge-listen", ["--timeout", "soon"], "invalid float value: 'soon'"),
    ("edge-listen", ["--server-key", "{root}/server.key"], "--server-key and --client-key go together"),
    ("edge-keys", [], "required: folder, name"),
    ("edge-calibrate", [], "required: --bundle"),
    ("edge-calibrate", ["--bundle", "{root}/bundle"], "one of the arguments --data --holdout is required"),
    ("edge-calibrate", ["--bundle", "{root}/nope", "--data", "{root}/good"], "not a directory"),
    ("edge-calibrate", ["--bundle", "{root}/bundle", "--data", "{root}/good"], "no images"),
    ("edge-calibrate", ["--bundle", "{root}/bundle", "--data", "{root}/none"], "not a directory of good images"),
    ("edge-calibrate", ["--bundle", "{root}/bundle", "--data", "{root}/good", "--k", "-1"], "--k must be > 0"),
    ("edge-calibrate", ["--bundle", "{root}/bundle", "--data", "{root}/good", "--holdout"], "not allowed with"),
    ("edge-calibrate", ["--bundle", "{root}/bundle", "--holdout"], "lists no held-out images"),
    ("edge-calibrate", ["--bundle", "{root}/bundle", "--data", "{root}/good", "--backend", "cuda"], "invalid choice"),
    ("edge-hmi", [], "required: --config"),
    ("edge-hmi", ["--config", "{root}/missing.yaml"], "cannot read the config file"),
    ("edge-hmi", ["--config", "{root}/hmi-bind.yaml"], "hmi.bind: must be HOST:PORT"),
    ("edge-hmi", ["--config", "{root}/line.yaml", "--add-user", "ana"], "hmi.users: set it"),
    ("edge-hmi", ["--config", "{root}/hmi-users.yaml"], "no such file; add a user"),
]


@pytest.mark.parametrize("cli, args, says", CASES, ids=[f"{c}:{' '.join(a)[-40:]}" for c, a, _ in CASES])
def test_one_clear_line(files, cli, args, says):
    r = run_cli(cli, *[a.format(root=files) for a in args])
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert says in lines[0] and "Traceback" not in r.stderr
