"""The README's first command, `edge-demo` (what ./scripts/demo.sh runs): the whole line on the
embedded synthetic parts, run again over an earlier run's folder as a user would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_demo_runs_end_to_end_over_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "bundle.yaml").write_text("schema_version: 1\n")  # an earlier run's bundle
    (out / "evidence").mkdir()
    (out / "evidence" / "old-run.png").write_bytes(b"")

    result = subprocess.run(
        [sys.executable, "-m", "demo.run", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    inspected = re.search(r"parts inspected (\d+) of (\d+) \(frames in (\d+), dropped (\d+)\)", result.stdout)
    assert inspected and inspected[1] == inspected[2] == inspected[3] and inspected[4] == "0", result.stdout[-2000:]
    escapes = re.search(r"escapes \(defects judged OK\) (\d+)", result.stdout)
    assert escapes and int(escapes[1]) == 0, result.stdout[-2000:]
    assert not (out / "evidence" / "old-run.png").exists() and any((out / "evidence").iterdir())
    assert (out / "bundle" / "calibration.yaml").is_file()
