"""Soak: the real daemon for several minutes on 2+ looping streams, with a camera that keeps
dropping out; samples its RSS, thread count and open file descriptors, and prints whether they
stay flat (a leak shows as growth between the first and the last quarter of the run).

    .venv/bin/python bench/soak.py [--bundle B --video V] [--minutes 5] [--streams 2] [--fps 8] [--genicam]
                                   [--reload-every S]

--reload-every S edits the config and sends SIGHUP every S seconds: a camera is added, then
removed again, and the first stream's source is changed (reopened) each time, so a leak per
reload (a grab thread, a capture, a model) shows the same way.

Without --bundle/--video it builds the embedded demo bundle first (needs the train extra).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from edge.listen import Listener

EDGE_RUN = [sys.executable, "-c", "import sys; from edge.cli import run_main; sys.exit(run_main())"]


def sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path)
    p.add_argument("--video", type=Path)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--fps", type=float, default=8, help="per stream")
    p.add_argument("--every", type=float, default=5, help="seconds between samples")
    p.add_argument(
        "--genicam",
        action="store_true",
        help="add a GenICam camera at --fps (the genicam package's virtual GenTL producer) and a GenICam "
        "device that is never there, reconnecting all run (needs the genicam extra)",
    )
    p.add_argument(
        "--reload-every",
        type=float,
        default=0,
        metavar="S",
        help="every S seconds: add or remove a camera, change the first stream's fps, SIGHUP (0: never)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.bundle:
            bundle, video = args.bundle, args.video
        else:
            from demo.run import build_demo_bundle

            bundle, video, _ = build_demo_bundle(work / "demo")
        port = 5600 + os.getpid() % 300
        streams = [
            {
                "station": f"s{i}",
                "source": {
                    "kind": "video",
                    "name": f"c{i}",
                    "path": str(Path(video).resolve()),
                    "loop": True,
                    "fps": args.fps,
                },
            }
            for i in range(args.streams)
        ]
        # A camera that is never there: reconnects for the whole run (a leak per reconnect would show).
        streams.append(
            {
                "station": "flaky",
                "source": {
                    "kind": "camera",
                    "name": "flaky",
                    "url": str(work / "absent.avi"),
                    "reconnect": {"initial_s": 0.2, "max_s": 0.5},
                },
            }
        )
        if args.genicam:
            import genicam

            cti = str(Path(genicam.__file__).parent / "viky.cti")
            streams += [
                {
                    "station": "gc",
                    "source": {
                        "kind": "genicam",
                        "name": "gc",
                        "cti": cti,
                        "device": "1",
                        "features": {"PixelFormat": "Mono8", "AcquisitionFrameRate": args.fps},
                    },
                },
                {
                    "station": "gc-absent",
                    "source": {
                        "kind": "genicam",
                        "name": "gc-absent",
                        "cti": cti,
                        "device": "absent",
                        "reconnect": {"initial_s": 0.2, "max_s": 0.5},
                    },
                },
            ]
        config = work / "soak.yaml"
        line = {
            "line": "soak",
            "bundle": str(Path(bundle).resolve()),
            "streams": streams,
            "batch": {"max_batch": 8, "max_wait_ms": 20},
            "queue": {"size": 32, "overflow": "drop_oldest"},
            "publish": {"bind": f"tcp://127.0.0.1:{port}", "heartbeat_s": 1.0, "wait_for_subscribers": 1},
            "evidence": {"dir": str(work / "evidence"), "max_files": 50},
            "log_level": "WARNING",
        }
        config.write_text(yaml.safe_dump(line))
        proc = subprocess.Popen([*EDGE_RUN, "--config", str(config)])
        counts, finals, ending = {"verdicts": 0, "reloads": 0}, [], threading.Event()

        def reload() -> None:
            counts["reloads"] += 1
            extra = {"station": "extra", "source": {**streams[0]["source"], "name": "extra"}}
            line["streams"] = [*streams, extra] if counts["reloads"] % 2 else streams
            streams[0]["source"]["fps"] = args.fps * (1.5 if counts["reloads"] % 2 else 1)
            config.write_text(yaml.safe_dump(line))
            proc.send_signal(signal.SIGHUP)

        def listen() -> None:
            # Every stopped status counts: removed cameras end on their topic when a reload takes them out.
            with Listener(f"tcp://127.0.0.1:{port}", "soak/") as listener:
                stopped_at_end: set[str] = set()
                while len(stopped_at_end) < len(line["streams"]):
                    msg = listener.recv(30)
                    if msg is None:
                        return
                    if msg.is_status:
                        if msg.data["state"] == "stopped":
                            finals.append(msg.data)
                            if ending.is_set():
                                stopped_at_end.add(msg.data["station"])
                    else:
                        counts["verdicts"] += 1

        listener = threading.Thread(target=listen)
        listener.start()
        samples, t0 = [], time.monotonic()
        next_sample = next_reload = t0
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(0.1)
            now = time.monotonic()
            if args.reload_every and now - next_reload >= args.reload_every:
                next_reload = now
                reload()
            if now - next_sample >= args.every:
                next_sample = now
                samples.append({"t": now - t0, **sample(proc.pid), "verdicts": counts["verdicts"]})
                print(
                    f"{samples[-1]['t']:6.0f} s  rss {samples[-1]['rss_mb']:7.1f} MB  threads "
                    f"{samples[-1]['threads']:3d}  fds {samples[-1]['fds']:3d}  verdicts {samples[-1]['verdicts']}"
                    f"  reloads {counts['reloads']}",
                    flush=True,
                )
        ending.set()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        listener.join(60)
    q = max(1, len(samples) // 4)
    first, last = samples[q : 2 * q] or samples[:q], samples[-q:]  # skip the warm-up quarter
    extra = " + a GenICam camera + an absent GenICam device" if args.genicam else ""
    if args.reload_every:
        extra += (
            f", a reload every {args.reload_every:g} s ({counts['reloads']}: a camera added / removed, one reopened)"
        )
    print(
        f"\nsoak: {args.minutes:g} min, {args.streams} streams at {args.fps:g} fps + 1 absent camera{extra}, "
        f"{counts['verdicts']} verdicts, exit {code}"
    )
    print("| metric | 2nd quarter median | last quarter median | change |")
    print("|---|---|---|---|")
    for key in ("rss_mb", "threads", "fds"):
        a, b = np.median([s[key] for s in first]), np.median([s[key] for s in last])
        print(f"| {key} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    final = {f["station"]: f for f in finals}  # each station's last end
    lost = {
        st: sum(
            f["counters"]["frames_in"]
            - f["counters"]["ok"]
            - f["counters"]["ng"]
            - f["counters"]["error"]
            - f["counters"]["dropped"]
            for f in finals
            if f["station"] == st
        )
        for st in final
    }
    reconnects = {st: f["source"]["reconnects"] for st, f in final.items() if f["source"]["reconnects"]}
    print(f"frames unaccounted per stream, every end of it (must be 0): {lost}; reconnects: {reconnects}")


if __name__ == "__main__":
    main()
