"""The HMI's tests drive a real headless Chromium (Debian's ``chromium``) through Playwright, beside
a real daemon and a real edge-hmi process; without them these tests skip and say what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.conftest import tiny_bundle  # noqa: F401  (the tiny real ONNX bundle, as a fixture here too)

CHROMIUM = os.environ.get("EDGE_HMI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL = 'apt-get update && apt-get install -y chromium; pip install ".[hmi]" playwright'
EDGE_HMI = [sys.executable, "-c", "import sys; from hmi.server import main; sys.exit(main())"]
SCREENSHOTS = Path(os.environ.get("EDGE_HMI_SCREENSHOTS", Path(__file__).parents[2] / "build" / "hmi-screenshots"))


def _missing() -> str | None:
    for module in ("starlette", "uvicorn", "jinja2", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"no {module}"
    return None if shutil.which(CHROMIUM) else f"no {CHROMIUM}"


needs_hmi_extra = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("starlette", "uvicorn", "jinja2")),
    reason='edge-hmi needs the hmi extra: pip install ".[hmi]"',
)


@pytest.fixture(scope="session")
def browser():
    missing = _missing()
    if missing:
        pytest.skip(f"the HMI's browser tests need chromium, the hmi extra and playwright ({missing}): {INSTALL}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def start_hmi(config: Path, port: int) -> subprocess.Popen:
    """A real edge-hmi process, once its page answers."""
    proc = subprocess.Popen(
        [*EDGE_HMI, "--config", str(config), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"edge-hmi exited:\n{proc.stdout.read() if proc.stdout else ''}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("edge-hmi did not answer within 30 s")


@pytest.fixture
def hmi_processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started, ended (killed) after it whatever happened."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
