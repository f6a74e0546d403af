"""Console scripts of the line side: edge-run (the daemon) and edge-listen (a PLC-side subscriber)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from edge.backends import BackendError
from edge.bundle import BundleError
from edge.config import ConfigError, load_config
from edge.listen import Listener, format_status, format_verdict
from edge.sources import SourceError

if TYPE_CHECKING:
    from edge.daemon import Daemon

log = logging.getLogger("edge")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: they end up in journald and on operator screens."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald/Loki/Elastic collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler])


def _run_parser() -> Parser:
    p = Parser(
        prog="edge-run",
        description="Run the inspection daemon: grab frames from the configured source, batch them, run the "
        "bundle, judge each part against its calibrated threshold and publish verdicts over "
        "ZeroMQ. Runs until the source ends or SIGINT/SIGTERM, then judges what it already "
        "grabbed and exits 0 (1 when a camera's grab thread failed for good). SIGHUP applies the "
        "config again (bundles, k, cameras) once it has loaded and checked it beside the running "
        "line (a bad bundle or config is refused; the line runs on as it was).",
        epilog="Example: edge-run --config configs/line3.yaml   (every key is documented in that file)",
    )
    p.add_argument("--config", required=True, help="line config YAML (see configs/line3.yaml)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the config's log_level")
    p.add_argument(
        "--check",
        action="store_true",
        help="commissioning: start up as the daemon would (bundle, backend, cameras, ports), judge one "
        "frame per camera, print the verdicts and exit; publishes nothing. Exit 0 when every camera "
        "gave a frame the model judged, 1 otherwise, 2 for a config or start-up error",
    )
    p.add_argument(
        "--check-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="with --check: how long to wait for each camera's first frame (default %(default)s)",
    )
    p.add_argument(
        "--check-out",
        type=Path,
        metavar="DIR",
        help="with --check: save each judged frame with its heatmap as DIR/<stream>.png",
    )
    return p


def run_main(argv: list[str] | None = None) -> int:
    args = _run_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"edge-run: config error: {e}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or cfg.log_level, cfg.log_format)
    from edge.daemon import Daemon  # after logging is set up, so backend choice is logged

    try:
        daemon = Daemon(cfg)
    except (BundleError, BackendError, SourceError, OSError) as e:
        print(f"edge-run: {e}", file=sys.stderr)
        return 2
    if cfg.trust.keys is None:
        log.warning("trust.keys is not set: bundles run without a check of who signed them (README, 'Signed bundles')")
    if args.check:
        return _commission(daemon, args.check_timeout, args.check_out)
    take_signals(daemon)
    try:
        return daemon.run()
    finally:
        # Stopped: more of them must not kill the clean exit under way (as Python exits, it puts
        # the default handlers back, except where a signal is ignored).
        for signum in LINE_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def _commission(daemon: Daemon, timeout_s: float, out: Path | None) -> int:
    """edge-run --check: one frame per camera judged and printed, nothing published."""
    from edge.check import check_line, passed, report, save_overlays

    try:
        checks = check_line(daemon, timeout_s)
        print("\n".join(report(daemon, checks)), flush=True)
        for path in save_overlays(checks, out) if out else ():
            print(f"heatmap  {path}")
    finally:
        daemon.close()
    return 0 if passed(checks) else 1


LINE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def take_signals(daemon: Daemon) -> None:
    """SIGINT/SIGTERM stop the daemon, SIGHUP reloads it: acted on one at a time by a thread of
    their own, never inside a signal handler. A handler interrupts whatever the main thread is doing,
    itself included, and a burst of signals then hangs the daemon on a lock the interrupted code
    holds, or overflows the stack with nested handlers (test_a_burst_of_signals_never_hangs_the_line).
    So the handlers do nothing; Python's own C-level handler writes each signal's number into the
    wakeup pipe (from whichever thread the signal reached), which the thread reads."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # a burst that fills the pipe loses repeats, never blocks
    for signum in LINE_SIGNALS:
        signal.signal(signum, lambda _signum, _frame: None)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def act() -> None:
        while True:
            for signum in os.read(read_end, 512):
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading the config")
                    daemon.request_reload()
                else:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    daemon.stop()

    threading.Thread(target=act, name="signals", daemon=True).start()


def listen_main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="edge-listen",
        description="Subscribe to an edge-run publisher and print its verdicts (and status heartbeats): "
        "the reference PLC-side subscriber.",
    )
    p.add_argument("--connect", default="tcp://127.0.0.1:5556", help="publisher endpoint (default %(default)s)")
    p.add_argument("--topic", default="", help="topic prefix to subscribe to, e.g. 'line3/' (default: all)")
    p.add_argument("--json", action="store_true", help="print raw JSON messages, one per line")
    p.add_argument("--no-status", action="store_true", help="hide status heartbeats")
    p.add_argument("--count", type=int, default=0, help="exit after this many verdicts (0: run until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=0, help="exit 1 if nothing arrives for this many seconds")
    p.add_argument("--server-key", type=Path, help="CURVE: the publisher's public key file (server.key)")
    p.add_argument(
        "--client-key",
        type=Path,
        help="CURVE: this subscriber's key pair file (NAME.key_secret from edge-keys); the publisher "
        "must list its public half in publish.curve_allowed_clients",
    )
    args = p.parse_args(argv)
    if (args.server_key is None) != (args.client_key is None):
        p.error("--server-key and --client-key go together (CURVE needs both)")
    seen = 0
    with Listener(args.connect, args.topic, server_key=args.server_key, client_secret_key=args.client_key) as listener:
        try:
            while not args.count or seen < args.count:
                msg = listener.recv(args.timeout or None)
                if msg is None:
                    print(f"edge-listen: nothing from {args.connect} for {args.timeout}s", file=sys.stderr)
                    return 1
                if msg.is_status and args.no_status:
                    continue
                seen += not msg.is_status
                if args.json:
                    print(json.dumps({"topic": msg.topic, **msg.data}), flush=True)
                else:
                    print(format_status(msg.data) if msg.is_status else format_verdict(msg.data), flush=True)
        except KeyboardInterrupt:
            pass
    return 0


def keys_main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="edge-keys",
        description="Make a CURVE key pair for ZeroMQ encryption and subscriber authentication: NAME.key (public, "
        "give it to the other side) and NAME.key_secret (private, keep it). Make one pair for the "
        "daemon (publish.curve_secret_key: server.key_secret) and one per PLC gateway (put each "
        "gateway's NAME.key into the folder publish.curve_allowed_clients). With --sign, an Ed25519 "
        "key pair for signing bundles instead: NAME.ed25519 (private, mode 600: whoever exports, "
        "calibrates or builds engines signs with it, --sign-key or $EDGE_SIGN_KEY) and NAME.pub "
        "(public: put it into the folder of the line's trust.keys, where only bundles signed by "
        "those keys run).",
        epilog="Examples: edge-keys keys/ server;  edge-keys --sign keys/ plant-qa",
    )
    p.add_argument("folder", type=Path, help="where to write the two files")
    p.add_argument("name", help="key name, e.g. server, plc-gateway-1, or with --sign the signer, e.g. plant-qa")
    p.add_argument(
        "--sign", action="store_true", help="make a bundle signing key pair (NAME.ed25519, NAME.pub), not CURVE keys"
    )
    p.add_argument(
        "--opcua",
        action="store_true",
        help="an OPC UA (or TLS) certificate instead: NAME.der and NAME.pem (public), NAME.key.pem (private), "
        "self-signed, with the application URI urn:edge-inspect:NAME, for opcua.certificate / private_key, or for "
        "a client to put into the line's opcua.trusted_clients",
    )
    p.add_argument("--host", action="append", help="with --opcua: a host name or IP address it is for (repeat)")
    args = p.parse_args(argv)
    if Path(args.name).name != args.name or args.name in ("", ".", ".."):
        p.error(f"name {args.name!r}: a file name without '/', e.g. plant-qa")
    if args.opcua:
        from edge.plant.certs import make_certificate  # cryptography: the plant extra

        paths = make_certificate(args.folder, args.name, args.host)
        print(f"certificate: {paths['der']} and {paths['pem']}\nprivate key: {paths['key']} (mode 600: keep it here)")
        return 0
    if args.sign:
        from edge.trust import TrustError, make_signing_keys

        try:
            secret, public = make_signing_keys(args.folder, args.name)
        except (TrustError, OSError) as e:
            print(f"edge-keys: {e}", file=sys.stderr)
            return 2
        print(f"public key: {public} (for the line's trust.keys folder)\nsigning key: {secret} (mode 600: keep it)")
        return 0
    from edge.publish import make_keys

    public, secret = make_keys(args.folder, args.name)
    print(f"public key: {public}\nsecret key: {secret} (mode 600: keep it on this machine)")
    return 0
