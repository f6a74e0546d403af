"""Verdicts and status out over ZeroMQ: multipart [topic, json], schema in README.md.

An XPUB socket (a PUB that also hears subscriptions) so the daemon can wait for its PLC
subscribers before the first part; sends never block, so inference never waits for a slow
subscriber: beyond its high-water mark XPUB drops that subscriber's messages without telling
the sender, so they are not counted here; the subscriber sees them as gaps in ``seq``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from edge.types import Verdict

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

MESSAGE_SCHEMA = 1


def verdict_message(v: Verdict, line: str, station: str, model: str, t_publish: float) -> dict:
    f = v.frame
    msg = {
        "schema": MESSAGE_SCHEMA,
        "line": line,
        "station": station,
        "stream": f.stream,
        "seq": f.seq,
        "frame_id": f.frame_id,
        "t_grab": f.t_grab,
        "t_publish": t_publish,
        "verdict": v.verdict,
        "score": None if v.score is None else round(v.score, 6),
        "threshold": round(v.threshold, 6),
        "regions": [r.to_json() for r in v.regions],
        "model": model,
    }
    if v.error is not None:
        msg["error"] = v.error
    if f.part_id is not None:
        msg["part_id"] = f.part_id
    return msg


@dataclass(frozen=True, slots=True)
class Curve:
    """CURVE encryption and subscriber authentication: the server's key pair file and the folder
    of public keys allowed in (both made by edge-keys). ZeroMQ's ZAP handler checks every
    connecting subscriber; one without an allowed key is refused and receives nothing."""

    secret_key: Path
    allowed_clients: Path


class _Allowed:
    """The ZAP handler's question, answered from the keys loaded at start-up."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


def load_allowed_clients(folder: Path) -> frozenset[bytes]:
    """Every ``*.key`` in ``folder`` as a CURVE public key (Z85, as the ZAP handler asks), each checked; OSError
    naming the first file that is not one, or a folder that holds none."""
    if not folder.is_dir():
        raise OSError(
            f"publish.curve_allowed_clients {folder}: not a folder; put each allowed gateway's NAME.key there"
        )
    keys = set()
    for path in sorted(folder.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(path)
            raw = z85.decode(public)
        except (OSError, ValueError, TypeError) as e:
            raise OSError(
                f"publish.curve_allowed_clients: {path}: not a CURVE public key ({e}); "
                "replace it with the NAME.key edge-keys wrote, or remove it"
            ) from None
        if len(public) != 40 or len(raw) != 32:
            raise OSError(
                f"publish.curve_allowed_clients: {path}: its public-key is not 40 Z85 characters; "
                "replace it with the NAME.key edge-keys wrote, or remove it"
            )
        keys.add(z85.encode(raw))
    if not keys:
        raise OSError(
            f"publish.curve_allowed_clients {folder}: holds no NAME.key, so no PLC could subscribe; "
            "copy each allowed gateway's public NAME.key (from edge-keys) there"
        )
    return frozenset(keys)


class Publisher:
    def __init__(
        self, bind: str, sndhwm: int = 1000, linger_ms: int = 2000, curve: Curve | None = None, sndbuf: int = -1
    ):
        """sndbuf: the kernel's send buffer per connection, bytes (-1: the system's, which grows to megabytes)."""
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._sock = self._ctx.socket(zmq.XPUB)
        if curve is not None:
            self._secure(curve)
        # Verbose: every subscription reaches us, so subscriber counting sees repeats of a topic too.
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._sock.setsockopt(zmq.SNDBUF, sndbuf)
        # Subscription messages carry no peer: one PLC subscribed to two topics sends two. The
        # socket's monitor tells connected peers apart (by their connection's fd, from accept to
        # disconnect); it watches from before the bind, so no early peer is missed.
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._peers: set[int] = set()
        try:
            self._sock.bind(bind)
        except zmq.ZMQError as e:
            self._monitor.close(0)
            self._sock.close(0)
            self._ctx.term()
            raise OSError(f"publish.bind {bind!r}: {e}; is another edge-run using this port?") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscriptions = 0
        self.failed = 0
        # The socket is not thread-safe, and a part's deadline ERROR (edge/plant) is sent from the
        # deadline thread while the judging loop sends verdicts and heartbeats.
        self._lock = threading.Lock()

    def _secure(self, curve: Curve) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        try:
            public, secret = zmq.auth.load_certificate(curve.secret_key)
        except (OSError, ValueError) as e:
            raise OSError(f"publish.curve_secret_key {curve.secret_key}: {e}; make one with edge-keys") from None
        if secret is None:
            raise OSError(
                f"publish.curve_secret_key {curve.secret_key}: holds no secret key "
                "(give the .key_secret file edge-keys wrote, not the public .key)"
            )
        allowed = load_allowed_clients(curve.allowed_clients)
        try:
            self._sock.curve_secretkey = secret
            self._sock.curve_publickey = public
        except zmq.ZMQError as e:
            raise OSError(
                f"publish.curve_secret_key {curve.secret_key}: not a CURVE key pair ({e}); make one with edge-keys"
            ) from None
        self._sock.curve_server = True
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        # The keys as checked here, not the folder: pyzmq's own loader logs a bad file and then
        # allows no one at all, while the line runs on.
        self._auth.configure_curve_callback(domain="*", credentials_provider=_Allowed(allowed))

    @property
    def subscribers(self) -> int:
        """Peers connected with a subscription: no more than there are connected peers, nor than
        subscriptions. (A peer connected without subscribing, a port scan say, still counts while
        another peer holds several subscriptions: the messages do not say whose they are.)"""
        self.poll_subscriptions()
        return min(len(self._peers), self.subscriptions)

    def _poll_peers(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._peers.add(int(event["value"]))
            else:
                self._peers.discard(int(event["value"]))

    def poll_subscriptions(self) -> int:
        self._poll_peers()
        while True:
            try:
                with self._lock:
                    event = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if event[:1] == b"\x01":
                self.subscriptions += 1
            elif event[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def wait_for_subscribers(self, n: int, timeout_s: float, stop) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.subscribers < n:
            if stop.is_set() or time.monotonic() > deadline:
                return False
            zmq.select([self._sock, self._monitor], [], [], 0.05)
        return True

    def send(self, topic: str, payload: dict) -> bool:
        """False (counted in ``failed``) when the socket refuses the message outright; True does
        not mean every subscriber got it (see the module docstring)."""
        # allow_nan=False: NaN and Infinity are not JSON, and a PLC's parser may reject the
        # whole message; every field is finite or null at its source, so this only catches a bug.
        return self.send_parts([topic.encode(), json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()])

    def send_parts(self, parts: list[bytes]) -> bool:
        """One multipart message as it is; False (counted in ``failed``) when refused."""
        try:
            with self._lock:
                self._sock.send_multipart(parts, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.failed += 1
            return False

    def refuse_when_full(self) -> None:
        """A subscriber's full queue refuses the send (counted) instead of dropping it unseen."""
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(0)
        self._sock.close()  # LINGER lets the last verdicts and the final status reach subscribers
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()


def make_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """A CURVE key pair: NAME.key (public: give it to the other side) and NAME.key_secret (keep it)."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)
