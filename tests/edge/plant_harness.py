"""The plant in tests: a real edge-run with parts announced by the real edge-plc-sim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import make_bundle
from .harness import free_port, pattern, write_config, write_video

PLC_SIM = [sys.executable, "-c", "import sys; from edge.plcsim import main; sys.exit(main())"]


def camera_line(
    tmp_path: Path, fps: float = 40, deadline_ms: float = 2000, dead: bool = False, **sections
) -> tuple[Path, str, str]:
    """A line whose camera is a looping video paced at ``fps`` (it photographs whatever passes;
    ``dead``: a camera that never opens), judging only announced parts. Returns the config, the
    ZeroMQ PUB and the trigger endpoint."""
    video = write_video(tmp_path / "parts.avi", pattern(30))
    source = {"kind": "video", "path": str(video), "loop": True, "fps": fps}
    if dead:
        source = {"kind": "camera", "url": str(tmp_path / "no-camera.avi"), "reconnect": {"max_s": 0.5}}
    trigger = f"tcp://127.0.0.1:{free_port()}"
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        source,
        queue={"size": 8, "overflow": "drop_oldest"},
        trigger={"bind": trigger, "deadline_ms": deadline_ms, "unannounced": "skip", **sections.pop("trigger", {})},
        **sections,
    )
    return config, endpoint, trigger


def plc_sim(config: Path, out: Path, *args: str, timeout_s: float = 90) -> tuple[int, str, list[dict]]:
    """Runs edge-plc-sim to its end: exit code, its output, and every part's result."""
    done = subprocess.run(
        [*PLC_SIM, "--config", str(config), "--json-out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    results = json.loads(out.read_text()) if out.exists() else []
    return done.returncode, done.stdout + done.stderr, results
