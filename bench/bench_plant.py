"""Announce → verdict latency for each announce path, on the demo bundle, in one run.

    .venv/bin/python bench/bench_plant.py [--bundle B --video V] [--parts 100] [--rate 10] [--fps 25]

One edge-run judges a looping video paced at --fps (a free-running camera: a part waits for the
next frame, up to 1/fps) with trigger.unannounced skip, a ZeroMQ trigger, MQTT to a mosquitto
started here, and an OPC UA server (security none). edge-plc-sim's code announces --parts parts
at --rate over each path in turn and times each part from its announcement to its verdict, as
the PLC sees it (collected over the same protocol). Rows: zmq, mqtt, opcua; the baseline row is
the camera's own wait: half a frame period on average. Needs the plant extra and mosquitto.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from edge.config import load_config
from edge.plcsim import open_via, simulate
from edge.stats import percentiles

sys.path.insert(0, str(Path(__file__).parent))
from bench_daemon import demo_inputs

EDGE_RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main; sys.exit(run_main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "mosquitto.conf"
    root = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\n{root}allow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def line_config(workdir: Path, bundle: Path, video: Path, fps: float, broker_port: int, deadline_ms: float) -> Path:
    cfg = {
        "line": "bench",
        "station": "st1",
        "bundle": str(bundle),
        "source": {"kind": "video", "path": str(video), "loop": True, "fps": fps},
        "batch": {"max_batch": 4, "max_wait_ms": 2},
        "queue": {"size": 8, "overflow": "drop_oldest"},
        "publish": {"bind": f"tcp://127.0.0.1:{free_port()}", "heartbeat_s": 0.5},
        "trigger": {"bind": f"tcp://127.0.0.1:{free_port()}", "deadline_ms": deadline_ms, "unannounced": "skip"},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "topic_prefix": "bench"},
        "opcua": {"endpoint": f"opc.tcp://127.0.0.1:{free_port()}", "security": "none"},
    }
    path = workdir / "line.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path)
    p.add_argument("--video", type=Path)
    p.add_argument("--parts", type=int, default=100)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--deadline-ms", type=float, default=1000.0)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, video = (args.bundle, args.video) if args.bundle else demo_inputs(workdir)
        broker, port = start_broker(workdir)
        config = line_config(workdir, bundle, video, args.fps, port, args.deadline_ms)
        proc = subprocess.Popen(
            [*EDGE_RUN, "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            cfg = load_config(config)
            for via_name in ("zmq", "mqtt", "opcua"):
                via = open_via(via_name, cfg, "127.0.0.1")
                try:
                    assert via.ready(90), f"no heartbeat over {via_name}"
                    results = simulate(via, [("cam0", "st1", args.deadline_ms)], args.parts, args.rate, via_name)
                finally:
                    via.close()
                lat = percentiles(r.latency_ms for r in results if r.latency_ms is not None)
                in_time = sum(r.outcome == "in_time" for r in results)
                rows.append((via_name, len(results), in_time, lat["p50"], lat["p99"]))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            broker.kill()
    print(
        f"\nbundle {bundle.name}, camera {args.fps} fps, {args.parts} parts at {args.rate}/s per path, deadline "
        f"{args.deadline_ms:.0f} ms; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    print("| path | parts | in time | announce→verdict p50 ms | p99 ms | vs camera wait (p50 ≈ half a frame) |")
    print("|---|---|---|---|---|---|")
    half_frame = 500 / args.fps
    for name, n, ok, p50, p99 in rows:
        ratio = f"{p50 / half_frame:.1f}×" if p50 else "-"
        print(f"| {name} | {n} | {ok} | {p50} | {p99} | {ratio} |")
    print(f"| camera wait alone | - | - | {half_frame:.1f} | {1000 / args.fps:.1f} | 1.0× |")


if __name__ == "__main__":
    main()
