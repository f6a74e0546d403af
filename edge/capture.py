"""edge-capture: save frames from a line's cameras as image files, to train and calibrate on.

It reads the line config edge-run reads and opens the same sources (so the same camera, the
same GenICam features, exposure and trigger), with no model: before a line has its first
bundle, this is how its good parts become the folder export-engine trains on and
edge-calibrate sets the threshold with.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from edge.cli import Parser
from edge.config import ConfigError, LineConfig, load_config
from edge.sources import Source, SourceError, open_source

log = logging.getLogger("edge.capture")


@dataclass(slots=True)
class Capture:
    """One stream's capture: where its files go and how far it got."""

    source: Source
    folder: Path
    saved: int = 0
    unreadable: int = 0
    # time.monotonic() of the last frame with an image, saved or not: a camera that only sends
    # frames that cannot be saved (an roi that does not fit them) times out like a silent one.
    last_frame: float = 0.0
    problem: str | None = None  # why the frames since the last usable one were not saved
    warned: set[str | None] = field(default_factory=set)  # problems already logged: each once, not per frame
    stop: threading.Event = field(default_factory=threading.Event)
    gave_up: str | None = None  # why this stream stopped short


def next_number(folder: Path) -> int:
    """The number after the highest ``<n>.png`` already in ``folder``: a later capture adds to
    the folder, never overwrites."""
    numbers = [int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()] if folder.is_dir() else []
    return max(numbers, default=-1) + 1


def capture_stream(c: Capture, count: int, interval_s: float) -> None:
    """Save up to ``count`` frames of ``c.source``, at least ``interval_s`` apart, as PNG files
    ``<n>.png`` (lossless: what the camera gave is what the model will learn)."""
    last_saved = -math.inf
    first = next_number(c.folder)
    for frame in c.source.frames(c.stop):
        if frame.image is None:
            c.unreadable += 1
            c.problem = frame.error
            if frame.error not in c.warned:
                c.warned.add(frame.error)
                log.warning(
                    "%s: frame %s not saved: %s (further frames with this problem are only counted)",
                    c.source.name,
                    frame.frame_id,
                    frame.error,
                )
            continue
        c.last_frame, c.problem = time.monotonic(), None
        if c.last_frame - last_saved < interval_s:
            continue
        c.folder.mkdir(parents=True, exist_ok=True)
        path = c.folder / f"{first + c.saved:06d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)):
            c.gave_up = f"cannot write {path}"
            return
        c.saved, last_saved = c.saved + 1, c.last_frame
        if c.saved == 1 or c.saved % 10 == 0 or c.saved == count:
            log.info(
                "%s: %d/%d saved (%dx%d) in %s",
                c.source.name,
                c.saved,
                count,
                frame.image.shape[1],
                frame.image.shape[0],
                c.folder,
            )
        if c.saved >= count:
            return
    if not c.stop.is_set():
        c.gave_up = "the source ended"  # a video or image folder shorter than --count


def capture(
    cfg: LineConfig, out: Path, count: int, interval_s: float, timeout_s: float, streams: list[str] | None = None
) -> list[Capture]:
    """Capture every configured stream (or those named) at once into ``out/<stream name>/``;
    a stream that gives no usable frame for ``timeout_s`` is given up. Ctrl-C stops all, keeping what
    was saved."""
    chosen = [s for s in cfg.streams if streams is None or s.source.name in streams]
    captures = [Capture(open_source(s.source), out / s.source.name, last_frame=time.monotonic()) for s in chosen]
    threads = [
        threading.Thread(
            target=capture_stream, args=(c, count, interval_s), daemon=True, name=f"capture-{c.source.name}"
        )
        for c in captures
    ]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.1)
            for c, thread in zip(captures, threads):
                if thread.is_alive() and time.monotonic() - c.last_frame > timeout_s:
                    c.gave_up = (
                        f"no usable frame for {timeout_s:g} s (source {c.source.state}"
                        + "".join(f"; {p}" for p in (c.source.problem, c.problem) if p)
                        + ")"
                    )
                    c.stop.set()
    except KeyboardInterrupt:
        for c in captures:
            c.gave_up = c.gave_up or "interrupted"
    finally:
        for c in captures:
            c.stop.set()
        for thread in threads:
            thread.join(10)
    return captures


def build_parser() -> Parser:
    p = Parser(
        prog="edge-capture",
        description="Save frames from the cameras of a line config (the one edge-run reads; its bundle may not "
        "exist yet) as PNG files in OUT/<stream name>/, to train a model on (export-engine --data "
        "OUT/<stream>) and to calibrate it with (edge-calibrate --data ...). Runs until each stream "
        "has --count frames; Ctrl-C stops early and keeps what was saved.",
        epilog="Example: edge-capture --config configs/line3.yaml --out captures/line3 --count 200 --interval 0.5",
    )
    p.add_argument("--config", required=True, help="line config YAML (see configs/line3.yaml)")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder to write OUT/<stream>/<n>.png into (numbering goes on after files already there)",
    )
    p.add_argument("--count", type=int, default=100, help="frames to save per stream (default %(default)s)")
    p.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="S",
        help="at least this many seconds between saved frames of a stream, so that a free-running "
        "camera does not save the same part many times (default %(default)s: every frame)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give a stream up after this many seconds without a usable frame (default %(default)s)",
    )
    p.add_argument(
        "--stream",
        action="append",
        metavar="NAME",
        help="capture only this source name (repeatable; default: every stream of the config)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.count < 1 or args.interval < 0 or args.timeout <= 0:
        p.error("--count must be >= 1, --interval >= 0 and --timeout > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, need_bundle=False)
    except ConfigError as e:
        print(f"edge-capture: config error: {e}", file=sys.stderr)
        return 2
    names = [s.source.name for s in cfg.streams]
    unknown = sorted(set(args.stream or ()) - set(names))
    if unknown:
        p.error(f"--stream {', '.join(unknown)}: not in the config; its streams are {', '.join(names)}")
    try:
        captures = capture(cfg, args.out, args.count, args.interval, args.timeout, args.stream)
    except SourceError as e:
        print(f"edge-capture: {e}", file=sys.stderr)
        return 2
    for c in captures:
        problems = ", ".join(filter(None, [f"{c.unreadable} unreadable" if c.unreadable else "", c.gave_up]))
        print(
            f"{c.source.name}: {c.saved} of {args.count} frames saved in {c.folder}"
            + (f" ({problems})" if problems else "")
        )
    return 0 if all(c.saved == args.count for c in captures) else 1


if __name__ == "__main__":
    sys.exit(main())
