"""PatchCore's distance chunk size: line-side speed and memory, in one run.

    .venv/bin/python bench/bench_chunks.py --data demo-out/data --chunks 1024,2048,4096 [--batch 8]

The nearest-neighbour distance runs over the bank in blocks of ``chunk_size`` rows (a constant
of the exported graph), so one block's scratch is batch × patches × chunk_size floats, and ONNX
Runtime's CPU arena keeps its peak for the life of the process. Per chunk size: export
PatchCore on DATA (same bank: same data and seed), then, in a fresh process each, run the bundle
through the line's ONNX Runtime backend for --batches batches of --batch images and report
images/s, per-batch latency p50/p99 and the process's RSS after the timed batches (what a
running daemon holds). Not ru_maxrss: Linux carries it over from the forking parent, which
here is a PyTorch process that just trained. Rows alternate over --rounds so that a neighbour's load hits all alike;
medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

MEASURE = r"""
import json, sys, time
import numpy as np
from edge.backends import load_backend
from edge.bundle import load_bundle
from edge.stats import percentiles
bundle = load_bundle(sys.argv[1])
batch, batches = int(sys.argv[2]), int(sys.argv[3])
backend = load_backend(bundle, "onnxruntime")
images = np.random.default_rng(0).integers(0, 256, (batch, bundle.height, bundle.width, 3), dtype=np.uint8)
backend.infer(images)
lat = []
for _ in range(batches):
    t = time.perf_counter()
    backend.infer(images)
    lat.append((time.perf_counter() - t) * 1000)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({"images_per_s": batch * batches / (sum(lat) / 1000), **percentiles(lat),
                  "rss_mb": int(status["VmRSS"].split()[0]) / 1024}))
"""


def export(data: Path, chunk: int, work: Path) -> Path:
    from export.cli import main as export_main

    config = work / f"chunk{chunk}.yaml"
    config.write_text(yaml.safe_dump({"chunk_size": chunk}))
    out = work / f"bundle-{chunk}"
    if (
        export_main(
            ["--method", "patchcore", "--data", str(data), "--out", str(out), "--config", str(config), "--holdout", "0"]
        )
        != 0
    ):
        raise SystemExit(f"chunk {chunk}: export-engine failed")
    return out


def measure(bundle: Path, batch: int, batches: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(bundle), str(batch), str(batches)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="good training images (a folder or an MVTec category)")
    p.add_argument("--chunks", default="1024,2048,4096", help="chunk sizes to compare, comma-separated")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=20, help="timed batches per row and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_chunks-") as tmp:
        bundles = {chunk: export(args.data, chunk, Path(tmp)) for chunk in chunks}
        bank = yaml.safe_load((bundles[chunks[0]] / "bundle.yaml").read_text())["method_params"]["bank_size"]
        runs: dict[int, list[dict]] = {chunk: [] for chunk in chunks}
        for _ in range(args.rounds):
            for chunk in chunks:
                runs[chunk].append(measure(bundles[chunk], args.batch, args.batches))
    print(
        f"\nPatchCore bank {bank} rows, batch {args.batch}, ONNX Runtime CPU, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; median of {args.rounds} alternating "
        f"rounds of {args.batches} batches (images/s per round: "
        + "; ".join(f"{c}: {[round(r['images_per_s'], 1) for r in runs[c]]}" for c in chunks)
        + ")"
    )
    print("| chunk_size | chunks in the graph | images/s | p50 ms | p99 ms | RSS after MB |")
    print("|---|---|---|---|---|---|")
    for chunk in chunks:
        median = sorted(runs[chunk], key=lambda r: r["images_per_s"])[len(runs[chunk]) // 2]
        rss = sorted(r["rss_mb"] for r in runs[chunk])[len(runs[chunk]) // 2]
        print(
            f"| {chunk} | {-(-bank // chunk)} | {median['images_per_s']:.1f} | {median['p50']:.1f} | "
            f"{median['p99']:.1f} | {rss:.0f} |"
        )


if __name__ == "__main__":
    main()
