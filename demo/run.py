"""edge-demo: the whole line on an embedded default, no download, no GPU.

Makes a small set of synthetic machined parts (some scratched, stained or chipped), exports a
PatchCore bundle with the offline EfficientNet-Lite0 backbone, calibrates it on held-out good
parts, writes the test parts to a video, runs the real edge-run daemon on it, listens to its
verdicts over ZeroMQ and prints them with a summary. NG overlays land in OUT/evidence.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from demo.synth import make_dataset, write_video
from edge.listen import Listener, format_verdict
from edge.stats import percentiles

PARTS_PER_S = 10
EDGE_RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main; sys.exit(run_main())"]


def _step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def build_demo_bundle(out: Path, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """Data → calibrated bundle → test video. Returns (bundle dir, video, truth label per frame)."""
    from calibration.cli import main as calibrate_main
    from export.cli import main as export_main

    _step("1/4 making synthetic parts (MVTec layout)")
    info = make_dataset(out / "data", seed=seed)
    print(
        f"{info.root}: {len(list(info.train_dir.iterdir()))} good parts to train on, "
        f"{len(list(info.calib_dir.iterdir()))} to calibrate on, {len(info.test_items)} to inspect"
    )
    bundle = out / "bundle"
    # The demo's own folder: an earlier run's bundle is replaced, as export-engine itself never does.
    shutil.rmtree(bundle, ignore_errors=True)
    _step("2/4 export-engine --method patchcore (offline EfficientNet-Lite0 backbone)")
    if (
        export_main(
            [
                "--method",
                "patchcore",
                "--data",
                str(info.train_dir),
                "--out",
                str(bundle),
                "--backbone",
                "efficientnet_lite0",
                "--holdout",
                "0",
                "--seed",
                str(seed),
            ]
        )
        != 0
    ):
        raise SystemExit("export failed")
    _step("3/4 edge-calibrate on held-out good parts")
    if calibrate_main(["--bundle", str(bundle), "--data", str(info.calib_dir), "--k", "3"]) != 0:
        raise SystemExit("calibration failed")
    video = write_video([p for p, _, _ in info.test_items], out / "parts.avi")
    return bundle, video, [label for _, label, _ in info.test_items]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_line(out: Path, bundle: Path, video: Path, truth: list[str]) -> dict:
    port = free_port()
    shutil.rmtree(out / "evidence", ignore_errors=True)  # overlays of this run only
    config = out / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "line": "demo",
                "station": "station1",
                "bundle": str(bundle.resolve()),
                # Paced like a camera, so latency is what one part sees, not time spent queued behind a file.
                "source": {"kind": "video", "name": "cam0", "path": str(video.resolve()), "fps": PARTS_PER_S},
                "batch": {"max_batch": 8, "max_wait_ms": 10},
                "queue": {"size": 64, "overflow": "block"},
                "publish": {"bind": f"tcp://127.0.0.1:{port}", "heartbeat_s": 1.0, "wait_for_subscribers": 1},
                "evidence": {"dir": str((out / "evidence").resolve()), "max_files": 200},
                "log_level": "WARNING",
            },
            sort_keys=False,
        )
    )
    _step(f"4/4 edge-run --config {config}  (verdicts over ZeroMQ on tcp://127.0.0.1:{port})")
    daemon = subprocess.Popen([*EDGE_RUN, "--config", str(config)])
    verdicts, final = [], None
    try:
        with Listener(f"tcp://127.0.0.1:{port}", "demo/") as listener:
            while final is None:
                msg = listener.recv(120)
                if msg is None:
                    raise SystemExit("edge-run went silent for 120 s")
                if msg.is_status:
                    final = msg.data if msg.data["state"] == "stopped" else None
                    continue
                verdicts.append(msg.data)
                print(f"{format_verdict(msg.data)}   truth: {truth[msg.data['seq']]}", flush=True)
    finally:
        code = daemon.wait(60)
    if code != 0:
        raise SystemExit(f"edge-run exited {code}")
    return {"verdicts": verdicts, "final": final}


def summarize(verdicts: list[dict], final: dict, truth: list[str], out: Path) -> str:
    confusion = {(t, v): 0 for t in ("good", "defect") for v in ("OK", "NG", "ERROR")}
    for d in verdicts:
        confusion[("good" if truth[d["seq"]] == "good" else "defect", d["verdict"])] += 1
    lat = percentiles([(d["t_publish"] - d["t_grab"]) * 1000 for d in verdicts])
    span = max(d["t_publish"] for d in verdicts) - min(d["t_grab"] for d in verdicts)
    c = final["counters"]
    lines = [
        "",
        "=== summary",
        f"parts inspected {len(verdicts)} of {len(truth)} (frames in {c['frames_in']}, dropped {c['dropped']})",
        "               verdict OK   verdict NG   ERROR",
        *(
            f"truth {t:<8} {confusion[(t, 'OK')]:>10} {confusion[(t, 'NG')]:>12} {confusion[(t, 'ERROR')]:>7}"
            for t in ("good", "defect")
        ),
        f"false rejects {confusion[('good', 'NG')]}, escapes (defects judged OK) {confusion[('defect', 'OK')]}",
        f"latency grab→verdict p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms at {PARTS_PER_S} parts/s offered; "
        f"{len(verdicts) / span:.1f} parts/s judged (bench/bench_daemon.py measures the maximum)",
        f"NG heatmap overlays: {out / 'evidence'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="edge-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="work folder (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic parts (default %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle, video, truth = build_demo_bundle(args.out, args.seed)
    result = run_line(args.out, bundle, video, truth)
    print(summarize(result["verdicts"], result["final"], truth, args.out))
    print(f"total {time.monotonic() - t0:.0f} s")
    return 0 if len(result["verdicts"]) == len(truth) else 1


if __name__ == "__main__":
    sys.exit(main())
