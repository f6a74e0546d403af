"""systemd's notify protocol (Type=notify, WatchdogSec=): the real daemon reports ready,
pings the watchdog from the loop that judges, and says when it reloads and stops, over a real
datagram socket bound where $NOTIFY_SOCKET points, as systemd binds it."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge.config import load_config
from edge.daemon import Daemon
from edge.systemd import SystemdNotifier

from .conftest import make_bundle
from .harness import EDGE_RUN, pattern, run_to_the_end, write_config, write_video


class FakeSystemd:
    """The listening end of $NOTIFY_SOCKET: every datagram the service sent, as dicts.

    It reads all along, as systemd does: Linux queues only net.unix.max_dgram_qlen datagrams
    (10 by default) on a socket nobody reads, and past that the sender blocks, so a run a loaded
    machine stretches over a few more heartbeats would hang the daemon in its watchdog ping."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self._got: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return
            self._got.append(dict(line.split("=", 1) for line in data.splitlines()))

    def _read(self) -> None:
        while not self._closing.is_set():
            select.select([self.sock], [], [], 0.05)
            with self._lock:
                self._drain()

    def messages(self) -> list[dict[str, str]]:
        """What came since the last call: everything sent before this call."""
        with self._lock:
            self._drain()
            got, self._got = self._got, []
        return got

    def close(self) -> None:
        self._closing.set()
        self._reader.join(5)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path):
    listener = FakeSystemd(str(tmp_path / "notify"))
    yield listener
    listener.close()


def test_the_daemon_tells_systemd_ready_alive_reloading_and_stopping(tmp_path, systemd) -> None:
    video = write_video(tmp_path / "v.avi", pattern(30))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "loop": True, "fps": 100},
        queue={"overflow": "drop_oldest"},
    )
    proc = subprocess.Popen(
        [*EDGE_RUN, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "EDGE_ORT_THREADS": "1", "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "30000000"},
    )

    def drive(n: int, _msg: dict) -> None:
        if n == 10:
            proc.send_signal(signal.SIGHUP)
        elif n == 60:
            proc.send_signal(signal.SIGTERM)

    _, final, _ = run_to_the_end(proc, endpoint, on_verdict=drive)
    sent = systemd.messages()
    kinds = [next(k for k in ("READY", "WATCHDOG", "RELOADING", "STOPPING") if k in m) for m in sent]
    assert kinds[0] == "READY" and sent[0]["STATUS"].startswith("judging cam0 with bundle@")
    reload_at = kinds.index("RELOADING")
    assert int(sent[reload_at]["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert kinds[reload_at + 1] == "READY"
    assert sent[reload_at + 1]["STATUS"].startswith("reloaded: judging cam0 with bundle@")
    assert kinds[-1] == "STOPPING" and kinds.count("STOPPING") == 1
    assert kinds.count("WATCHDOG") >= 2  # heartbeats every 0.2 s over the run
    c = final["counters"]
    assert sent[-1]["STATUS"] == (
        f"stopped: {c['ok']} OK, {c['ng']} NG, {c['error']} ERROR, {c['dropped']} dropped "
        f"(1 stream(s), {final['model']})"
    )


def test_a_hung_inference_stops_the_watchdog_pings(tmp_path, systemd, monkeypatch) -> None:
    """The pings come from the judging loop: while a batch hangs in the runtime there are none
    (systemd would restart the service), and they resume when it returns."""
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    video = write_video(tmp_path / "v.avi", pattern(10))
    config, _ = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "loop": True, "fps": 50},
        publish={"wait_for_subscribers": 0, "heartbeat_s": 0.1},
    )
    daemon = Daemon(load_config(config))
    runner = threading.Thread(target=daemon.run)
    # No runtime hangs on demand, so one is made to: the real backend, held inside its call.
    backend = daemon.streams["cam0"].model.backend
    hang, hung, release, infer = threading.Event(), threading.Event(), threading.Event(), backend.infer

    def held(batch):
        if hang.is_set():
            hung.set()
            release.wait(30)
        return infer(batch)

    def pinged_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any("WATCHDOG" in m for m in systemd.messages()):
                return True
            time.sleep(0.01)
        return False

    try:
        backend.infer = held
        runner.start()
        # Deadlines, not sleeps: on a loaded machine the first batch or the one that hangs can be
        # seconds late, and a fixed sleep would then look at the wrong moment.
        assert pinged_within(20), "no pings while judging"
        hang.set()
        assert hung.wait(20), "no batch reached the runtime"
        systemd.messages()  # the judging loop is held now: everything it sent has arrived
        time.sleep(1.0)  # 10 heartbeats' worth
        assert not any("WATCHDOG" in m for m in systemd.messages()), "pinged while inference hung"
        hang.clear()
        release.set()
        assert pinged_within(20), "no pings after inference came back"
    finally:
        release.set()
        daemon.stop()
        if runner.ident is None:  # failed before it ran: run() would have closed the socket
            daemon.close()
        runner.join(20)
    assert not runner.is_alive()


def test_a_systemd_that_does_not_read_never_holds_the_line(tmp_path) -> None:
    """Linux queues some 10 datagrams on a socket nobody reads; 50 heartbeats' pings later the
    daemon must still be judging, the pings that did not fit dropped."""
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(tmp_path / "notify"))
    video = write_video(tmp_path / "v.avi", pattern(50))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "fps": 50},
        publish={"heartbeat_s": 0.02},
    )
    proc = subprocess.Popen(
        [*EDGE_RUN, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "EDGE_ORT_THREADS": "1"},
    )
    try:
        verdicts, final, _ = run_to_the_end(proc, endpoint)
    finally:
        deaf.close()
    assert len(verdicts) == 50 and final["counters"]["error"] == 0


def test_the_abstract_namespace_and_no_systemd(monkeypatch, tmp_path) -> None:
    listener = FakeSystemd(f"@edge-test-{os.getpid()}")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
        monkeypatch.setenv("WATCHDOG_USEC", "5000000")
        notifier = SystemdNotifier()
        notifier.ready("judging")
        assert listener.messages() == [{"READY": "1", "STATUS": "judging"}] and notifier.watchdog_s == 5.0
        notifier.close()
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process is the one watched
        assert SystemdNotifier().watchdog_s is None
    finally:
        listener.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    quiet = SystemdNotifier()
    quiet.ready("nobody listens")  # not under systemd: nothing is sent, nothing fails
    assert quiet.watchdog_s is None
