"""The daemon does not notice the screen: an HMI killed or stalled (SIGSTOP) mid-run changes neither
the verdicts nor their latency, and the images it misses are counted as dropped."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np

from edge.listen import Listener
from tests.edge.harness import assert_accounted, collect, free_port, start, write_config, write_video

from .conftest import needs_hmi_extra, start_hmi

FRAMES = 120


def noisy_parts(n: int) -> list[np.ndarray]:
    """Parts whose JPEGs are large (noise does not compress): a stalled screen's buffers fill within the run."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 90, (240, 320, 3), dtype=np.uint8) for _ in range(n)]
    for i in range(0, n, 3):
        frames[i][60:100, 90:130] = 255  # every 3rd part NG under the brightness model
    return frames


def run(tmp_path: Path, bundle: Path, hmi: str | None, processes: list) -> dict:
    """The line over FRAMES paced parts; hmi: None (no screen), 'kill' or 'stop' after the 20th verdict."""
    folder = tmp_path / (hmi or "none")
    folder.mkdir()
    video = write_video(folder / "parts.avi", noisy_parts(FRAMES), fps=25)
    config, endpoint = write_config(
        folder,
        bundle,
        {"kind": "video", "path": str(video), "fps": 30},
        hmi_images={"bind": f"tcp://127.0.0.1:{free_port()}", "ok_per_s": 100, "max_side": 320, "quality": 95},
        publish={"wait_for_subscribers": 1 if hmi is None else 2},  # the PLC (and the HMI) get every verdict
    )
    screen = None
    if hmi is not None:
        screen = start_hmi(config, free_port())
        processes.append(screen)

    def disturb(n: int, _verdict: dict) -> None:
        if screen is not None and n == 20:
            os.kill(screen.pid, signal.SIGKILL if hmi == "kill" else signal.SIGSTOP)

    daemon = start(config)
    processes.append(daemon)
    with Listener(endpoint, "line3/") as plc:
        verdicts, final, _ = collect(plc, daemon, disturb)
    assert daemon.wait(20) == 0
    assert_accounted(verdicts, final)
    if screen is not None and hmi == "stop":
        os.kill(screen.pid, signal.SIGCONT)  # it wakes up and goes on, none the worse
        assert screen.poll() is None
    return {"verdicts": [v["verdict"] for v in verdicts], **final["counters"], "latency": final["latency_ms"]}


@needs_hmi_extra
def test_an_hmi_killed_or_stalled_mid_run_leaves_the_verdicts_and_their_latency_as_they_were(
    tmp_path: Path, tiny_bundle: Path, hmi_processes: list[subprocess.Popen]
) -> None:
    alone = run(tmp_path, tiny_bundle, None, hmi_processes)
    killed = run(tmp_path, tiny_bundle, "kill", hmi_processes)
    stalled = run(tmp_path, tiny_bundle, "stop", hmi_processes)
    print(
        "latency p50/p99 ms: no HMI",
        alone["latency"],
        "| HMI killed",
        killed["latency"],
        "| HMI stalled",
        stalled["latency"],
        "| images sent/dropped:",
        [(r["images_sent"], r["images_dropped"]) for r in (alone, killed, stalled)],
    )
    expected = ["NG" if i % 3 == 0 else "OK" for i in range(FRAMES)]
    for result in (alone, killed, stalled):
        assert result["verdicts"] == expected and result["frames_in"] == FRAMES and result["dropped"] == 0
    # A daemon that waited for its screen would be seconds late; this allows for a loaded test box only.
    for result in (killed, stalled):
        assert result["latency"]["p99"] < alone["latency"]["p99"] + 500
    # The stalled screen's images are refused and counted, not queued without end.
    assert stalled["images_dropped"] > 0
    assert stalled["images_sent"] + stalled["images_dropped"] >= FRAMES // 2
