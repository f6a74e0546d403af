"""Line-side CPU cost of a 5 MP camera frame (2448×2048) before the model: decode, resize, batch.

    .venv/bin/python bench/bench_line_frames.py [--repeats 30] [--batch 8] [--sizes 256,512,1024]

What edge-run does to every frame on the CPU, through the line's own functions: read and decode
the file as the image-folder source does (edge.preprocess.read_image: PNG, and JPEG at quality
95), resize to the model's input (edge.preprocess.resize, INTER_AREA), and assemble a batch of
--batch frames (edge.preprocess.to_input, which resizes into the batch buffer). The frame is a
rendered demo part (demo.synth) at 2048 px, widened to 2448 by reflection: a machined surface
with texture and sensor noise, so the codecs work as hard as on a real part. Per frame, p50/p99
in ms over --repeats (the steps taken in turn in each repeat), and the ratio to the 256² resize measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from demo.synth import render_part
from edge.preprocess import read_image, resize, to_input
from edge.types import Frame

HEIGHT, WIDTH = 2048, 2448


def camera_frame() -> np.ndarray:
    part, _ = render_part(seed=1, size=HEIGHT)
    return cv2.copyMakeBorder(part, 0, 0, 0, WIDTH - HEIGHT, cv2.BORDER_REFLECT)


def interleaved(steps: list[tuple[str, Callable[[], object], int]], repeats: int) -> list[tuple[str, list[float]]]:
    """ms per frame of each step, the steps taken in turn within every repeat, so that a
    neighbour's load on a shared machine hits them all alike."""
    for _, fn, _ in steps:
        fn()  # warm: first-call allocations and OpenCV's thread pool
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for (_, fn, per), out in zip(steps, times):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000 / per)
    return [(name, ms) for (name, _, _), ms in zip(steps, times)]


def rows(frame: np.ndarray, folder: Path, sizes: list[int], batch: int, repeats: int) -> list[tuple[str, list[float]]]:
    png, jpeg = folder / "frame.png", folder / "frame.jpg"
    cv2.imwrite(str(png), frame)
    cv2.imwrite(str(jpeg), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    frames = [Frame("bench", i, f"f{i}", 0.0, rgb) for i in range(batch)]
    steps: list[tuple[str, Callable[[], object], int]] = [
        (f"decode PNG ({png.stat().st_size / 1e6:.1f} MB)", lambda: read_image(png), 1),
        (f"decode JPEG q95 ({jpeg.stat().st_size / 1e6:.1f} MB)", lambda: read_image(jpeg), 1),
        ("BGR→RGB", lambda: cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 1),
    ]
    for s in sizes:
        dst = np.empty((s, s, 3), np.uint8)
        steps.append((f"resize → {s}²", partial(resize, rgb, s, s, dst=dst), 1))
    for s in sizes:
        steps.append((f"batch of {batch} → {s}² (per frame)", partial(to_input, frames, s, s), batch))
    return interleaved(steps, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", default="256,512,1024", help="model input sides, px")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    frame = camera_frame()
    with tempfile.TemporaryDirectory() as tmp:
        measured = rows(frame, Path(tmp), sizes, args.batch, args.repeats)
    base = float(np.median(dict(measured)[f"resize → {sizes[0]}²"]))
    print(
        f"{WIDTH}x{HEIGHT} frame, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads, {args.repeats} repeats"
    )
    print(f"{'step':<36}{'p50 ms':>9}{'p99 ms':>9}{'frames/s':>10}{'× resize ' + str(sizes[0]) + '²':>16}")
    for name, ms in measured:
        p50, p99 = np.percentile(ms, [50, 99])
        print(f"{name:<36}{p50:>9.2f}{p99:>9.2f}{1000 / p50:>10.1f}{p50 / base:>16.2f}")


if __name__ == "__main__":
    main()
