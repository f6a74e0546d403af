"""PatchCore's line-side cost per working resolution: whole frames at several sizes, and a
large frame judged in tiles inside the graph, in one run.

    PYTHONPATH=. .venv/bin/python bench/bench_resolution.py --data ../shared/data/mvtec/bottle \
        [--rows 256,512,1024,1024/256] [--train 20] [--frames 5] [--rounds 3]

A row is ``SIZE`` (the model at SIZE², or ``HxW``) or ``SIZE/TILE`` (a SIZE² frame cut into
TILE² tiles overlapping by --overlap px, one batch through the model, stitched). Each row's
model is fitted on the same first --train good images (random coreset, --coreset-ratio of
--patches-per-image patches per image, so every row's bank has the same number of rows and
the rows differ by resolution alone), exported to ONNX, then timed in ONNX Runtime on the CPU
at batch 1 on a real image resized to the row's frame: --frames frames per round, rows taken in
turn over --rounds rounds so that a neighbour's load hits all alike; medians of per-frame
latency are reported, with the ratio to the first row.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.data import list_images, load_image
from export.graph import export_onnx
from export.patchcore import PatchCoreConfig, fit_patchcore
from export.sizes import format_size, size_hw


def parse_row(text: str) -> tuple[str, int | None]:
    size, _, tile = text.partition("/")
    size_hw(size)  # refuses a malformed size here, not after a fit
    return size, int(tile) if tile else None


def build(row: tuple[str, int | None], files: list[Path], args: argparse.Namespace, work: Path) -> tuple[Path, int]:
    size, tile = row
    config = PatchCoreConfig(
        size=size,
        tile=tile,
        tile_overlap=args.overlap,
        coreset="random",
        coreset_ratio=args.coreset_ratio,
        patches_per_image=args.patches_per_image,
        holdout=0.0,
    )
    model = fit_patchcore(files, config)
    path = work / f"{size}-{tile or 'whole'}.onnx"
    export_onnx(model.graph, path, *size_hw(size))
    return path, model.bank_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="an MVTec category (train/good is used)")
    p.add_argument("--rows", default="256,512,1024,1024/256", help="comma-separated SIZE or SIZE/TILE")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap, px")
    p.add_argument("--train", type=int, default=20, help="good images each row's bank is built from")
    p.add_argument("--coreset-ratio", type=float, default=0.1)
    p.add_argument("--patches-per-image", type=int, default=1024)
    p.add_argument("--frames", type=int, default=5, help="timed frames per row and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    rows = [parse_row(r) for r in args.rows.split(",")]
    files = list_images(args.data / "train" / "good")[: args.train]
    probe = list_images(args.data / "train" / "good")[-1]
    sessions, banks, frames = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            path, bank = build(row, files, args, Path(tmp))
            sessions.append(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
            banks.append(bank)
            frames.append(load_image(probe, size_hw(row[0]))[None])
        latencies: list[list[float]] = [[] for _ in rows]
        for _ in range(args.rounds):
            for i, runtime in enumerate(sessions):
                runtime.run(None, {"image": frames[i]})  # warm-up: first-run allocations
                for _ in range(args.frames):
                    start = time.perf_counter()
                    runtime.run(None, {"image": frames[i]})
                    latencies[i].append(1e3 * (time.perf_counter() - start))
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, onnxruntime {ort.__version__}, {platform.processor()}")
    print(f"# {' '.join(sys.argv)}")
    print("| frame | tiles | bank rows | ms/frame p50 | p99 | frames/s | × first row |")
    print("|---|---|---|---|---|---|---|")
    base = float(np.median(latencies[0]))
    for (size, tile), bank, lat in zip(rows, banks, latencies):
        p50, p99 = float(np.median(lat)), float(np.percentile(lat, 99))
        tiles = f"{tile}² (overlap {args.overlap})" if tile else "whole frame"
        print(
            f"| {format_size(size_hw(size))} | {tiles} | {bank} | {p50:.1f} | {p99:.1f} | {1e3 / p50:.2f} "
            f"| {p50 / base:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
