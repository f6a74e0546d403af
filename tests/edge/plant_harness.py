"""The plant in tests: a real edge-run with parts announced by the real edge-plc-sim."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
NO_MOSQUITTO = "mosquitto is not installed: apt-get update && apt-get install -y mosquitto"


class Broker:
    """A real mosquitto on a loopback port, for as long as the test needs it (``kill``, ``start``)."""

    def __init__(self, folder: Path, settings: str = "allow_anonymous true\n"):
        if MOSQUITTO is None:
            pytest.skip(NO_MOSQUITTO)
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        root = "user root\n" if os.geteuid() == 0 else ""  # it reads the test's files, which only root may
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{root}persistence false\n{settings}")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout_s: float = 10) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=self.log.open("a"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port}:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


class Subscriber:
    """A plain paho subscriber, as an integrator's MQTT client: every message, by topic."""

    def __init__(self, port: int, topic: str, **tls):
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, dict | str]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{time.time_ns()}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, _decode(m.payload)))
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait_for(self, what, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not what(self.messages):
            assert time.monotonic() < deadline, f"not in time: {self.messages[-3:]}"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _decode(payload: bytes) -> dict | str:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode()
