"""Full daemon vs bare backend on the same bundle and batch size, in one run.

    .venv/bin/python bench/bench_daemon.py --bundle BUNDLE --video VIDEO [--batch 8] [--frames 200]

Rows:
  backend        the model alone: pre-decoded, pre-resized frames, back-to-back infer() calls
  daemon-max     edge-run on the video, unthrottled, blocking queue: the daemon's throughput
  daemon-paced   edge-run with the source paced at half the backend's rate: the latency a part
                 sees on a line that is not saturated (grab → verdict published)
  daemon-evidence  daemon-max saving evidence for every part (NG overlay + raw frame, every OK
                 part raw: evidence.raw, ok_every 1), the worst case for the disk: whether
                 writing holds up verdicts, and how much of it the writer had to skip
  daemon-images  daemon-max sending the operator screen's JPEGs as configured by default (every
                 NG part, 2 OK parts/s; a subscriber reading them); daemon-images-all: of every
                 part (ok_per_s 1000), the worst case: whether encoding holds up verdicts, and
                 how many images the outlet had to drop
Without --bundle/--video it builds the embedded demo bundle first (needs the train extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from edge.backends import load_backend
from edge.bundle import load_bundle
from edge.listen import Listener
from edge.preprocess import to_input
from edge.stats import percentiles
from edge.types import Frame

EDGE_RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main; sys.exit(run_main())"]


def read_video(path: Path, n: int) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            if not frames:
                raise SystemExit(f"{path}: no frames")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def bench_backend(bundle_dir: Path, frames: list[np.ndarray], batch: int) -> dict:
    bundle = load_bundle(bundle_dir)
    backend = load_backend(bundle, "onnxruntime")
    x = to_input([Frame("b", i, str(i), 0.0, f) for i, f in enumerate(frames)], bundle.height, bundle.width)
    backend.infer(x[:batch])  # warm-up
    lat, t0 = [], time.perf_counter()
    for i in range(0, len(x) - batch + 1, batch):
        t = time.perf_counter()
        backend.infer(x[i : i + batch])
        lat.append((time.perf_counter() - t) * 1000)
    n = len(lat) * batch
    return {"fps": n / (time.perf_counter() - t0), "lat": percentiles(lat), "n": n, "what": "per batch"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_daemon(
    bundle_dir: Path,
    video: Path,
    batch: int,
    n_frames: int,
    fps: float | None,
    workdir: Path,
    evidence: bool = False,
    images_ok_per_s: float | None = None,
) -> dict:
    port = free_port()
    cfg = {
        "line": "bench",
        "station": "s1",
        "bundle": str(bundle_dir.resolve()),
        "source": {"kind": "video", "path": str(video.resolve()), "loop": True, "fps": fps},
        "batch": {"max_batch": batch, "max_wait_ms": 10},
        "queue": {"size": 64, "overflow": "block" if fps is None else "drop_oldest"},
        "publish": {"bind": f"tcp://127.0.0.1:{port}", "heartbeat_s": 1.0, "wait_for_subscribers": 1},
        "log_level": "WARNING",
    }
    if evidence:
        cfg["evidence"] = {"dir": str(workdir / f"evidence-{port}"), "raw": True, "ok_every": 1}
    screen = None
    if images_ok_per_s is not None:
        images_at = f"tcp://127.0.0.1:{free_port()}"
        cfg["hmi_images"] = {"bind": images_at, "ok_per_s": images_ok_per_s}
        screen = ScreenReader(images_at)
    path = workdir / f"bench-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([*EDGE_RUN, "--config", str(path)])
    received = []
    try:
        with Listener(f"tcp://127.0.0.1:{port}", "bench/") as listener:
            while True:
                msg = listener.recv(60)
                if msg is None:
                    raise SystemExit("daemon went silent")
                if msg.is_status:
                    if msg.data["state"] == "stopped":
                        final = msg.data
                        break
                    continue
                received.append((msg.data["t_grab"], msg.data["t_publish"]))
                if len(received) == n_frames:
                    proc.terminate()
    finally:
        proc.wait(30)
        if screen is not None:
            screen.close()
    warm = received[batch * 2 :]  # skip warm-up batches
    span = warm[-1][1] - warm[0][1]
    c = final["counters"]
    saved = {key: c[f"{key}_saved"] for key in ("evidence", "ok_samples") if f"{key}_saved" in c}
    skipped = {key: c[f"{key}_skipped"] for key in ("evidence", "ok_samples") if f"{key}_skipped" in c}
    return {
        "fps": (len(warm) - 1) / span,
        "lat": percentiles([(p - g) * 1000 for g, p in warm]),
        "n": len(received),
        "what": "grab→publish",
        "dropped": c["dropped"],
        "evidence": f"{sum(saved.values())} saved, {sum(skipped.values())} skipped" if saved else "-",
        "images": f"{c['images_sent']} sent, {c['images_dropped']} dropped, {screen.n} read" if screen else "-",
        "accounted": c["frames_in"] == len(received) + c["dropped"],
    }


class ScreenReader:
    """A screen that reads every image (edge-hmi's subscription, without its page)."""

    def __init__(self, endpoint: str) -> None:
        import threading

        import zmq

        self.n, self._stop = 0, threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"img/")
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(100):
                self._sock.recv_multipart()
                self.n += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(0)
        self._ctx.term()


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]


def demo_inputs(workdir: Path) -> tuple[Path, Path]:
    from demo.run import build_demo_bundle

    bundle, video, _ = build_demo_bundle(workdir)
    return bundle, video


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path)
    p.add_argument("--video", type=Path)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=240)
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="backend and daemon-max alternate this many times; medians are reported, so a "
        "neighbour's load hits both alike",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, video = (args.bundle, args.video) if args.bundle else demo_inputs(workdir)
        frames = read_video(video, args.frames)
        runs: dict[str, list[dict]] = {"backend": [], "daemon-max": []}
        for _ in range(args.rounds):
            runs["backend"].append(bench_backend(bundle, frames, args.batch))
            runs["daemon-max"].append(bench_daemon(bundle, video, args.batch, args.frames, None, workdir))
        rows = {name: median_run(r) for name, r in runs.items()}
        rows["daemon-paced"] = bench_daemon(
            bundle, video, args.batch, args.frames // 2, rows["backend"]["fps"] / 2, workdir
        )
        rows["daemon-evidence"] = bench_daemon(bundle, video, args.batch, args.frames, None, workdir, evidence=True)
        for name, ok_per_s in (("daemon-images", 2.0), ("daemon-images-all", 1000.0)):
            rows[name] = bench_daemon(bundle, video, args.batch, args.frames, None, workdir, images_ok_per_s=ok_per_s)
    base = rows["backend"]["fps"]
    print(
        f"\nbundle {load_bundle(bundle).name}, batch {args.batch}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}; "
        f"backend and daemon-max: median of {args.rounds} alternating rounds "
        f"(images/s per round: backend {[round(r['fps'], 1) for r in runs['backend']]}, "
        f"daemon {[round(r['fps'], 1) for r in runs['daemon-max']]})"
    )
    print(
        "| run | frames | images/s | vs backend | latency p50 ms | latency p99 ms | latency is | dropped | evidence "
        "| screen images |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['n']} | {r['fps']:.1f} | {100 * r['fps'] / base:.0f}% | {r['lat']['p50']:.1f} | "
            f"{r['lat']['p99']:.1f} | {r['what']} | {r.get('dropped', '-')} | {r.get('evidence', '-')} | {r.get('images', '-')} |"
        )
    for name, r in rows.items():
        if "accounted" in r and not r["accounted"]:
            raise SystemExit(f"{name}: frames_in != verdicts + dropped")


if __name__ == "__main__":
    main()
