"""Tells systemd how the daemon is doing (``Type=notify`` with ``WatchdogSec=``), over the
datagram socket systemd names in $NOTIFY_SOCKET: ready once the line judges, a watchdog ping
with each heartbeat, reloading and stopping. Without $NOTIFY_SOCKET (not under systemd) it does
nothing.

The pings come from the loop that judges, so a hung runtime (a CUDA call that never returns, a
deadlock) stops them and systemd restarts the service, instead of the line standing silent
with its socket open. The protocol is sd_notify(3): a few ``KEY=value`` lines per datagram.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence

from edge.status import StreamStatus

log = logging.getLogger(__name__)


def summary(state: str, statuses: Sequence[StreamStatus]) -> str:
    """One line for ``systemctl status``: the state and what the line judged, all streams together."""
    ok, ng, error, dropped = (
        sum(getattr(s.counters, key) for s in statuses) for key in ("ok", "ng", "error", "dropped")
    )
    models = ", ".join(sorted({s.model for s in statuses}))
    return f"{state}: {ok} OK, {ng} NG, {error} ERROR, {dropped} dropped ({len(statuses)} stream(s), {models})"


class SystemdNotifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        watchdog_usec = os.environ.get("WATCHDOG_USEC", "")
        # The timeout systemd enforces (WatchdogSec=), None when it does not watch this process.
        watched = (
            address and watchdog_usec.isdigit() and os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        )
        self.watchdog_s = int(watchdog_usec) / 1e6 if watched else None
        self._socket: socket.socket | None = None
        if address:
            # '@' names a socket in Linux's abstract namespace, which starts with a NUL byte.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def check_heartbeat(self, heartbeat_s: float) -> None:
        """Warns when the watchdog pings, one per heartbeat, leave systemd's timeout little room."""
        if self.watchdog_s is not None and self.watchdog_s < 3 * heartbeat_s:
            log.warning(
                "systemd's WatchdogSec (%.1f s) leaves little room over publish.heartbeat_s (%.1f s), which "
                "paces the watchdog pings: a slow batch may get the line restarted; set WatchdogSec to 10 "
                "heartbeats or more",
                self.watchdog_s,
                heartbeat_s,
            )

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def alive(self, status: str) -> None:
        self._send(f"WATCHDOG=1\nSTATUS={status}")

    def reloading(self) -> None:
        # systemd wants the clock reading with RELOADING=1 to tell this reload from an earlier one.
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            # Never waits: Linux queues only a few datagrams on a socket systemd is slow to read, and
            # a blocked send would hold the loop that judges.
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as e:  # systemd gone, restarting or behind: the line judges on regardless
            log.debug("sd_notify to %r failed: %s", self._address, e)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
