"""The operator's screen in a real headless browser, beside the real daemon on the demo video."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.edge.conftest import part
from tests.edge.harness import free_port, start, write_config, write_video

from .conftest import EDGE_HMI, SCREENSHOTS, start_hmi

PASSWORD = "line3-reviewer"


def parts(n: int) -> list[np.ndarray]:
    """As harness.pattern, at a size a screen shows: every 3rd part has a bright defect (NG)."""
    return [part(40, (240, 320), spot=(60 + i, 90 + 4 * i, 40) if i % 3 == 0 else None) for i in range(n)]


def line_config(tmp_path: Path, bundle: Path, fps: float = 10) -> Path:
    video = write_video(tmp_path / "parts.avi", parts(30))  # parts 0, 3, ..., 27 NG
    config, _ = write_config(
        tmp_path,
        bundle,
        {"kind": "video", "path": str(video), "fps": fps},
        hmi_images={"bind": f"tcp://127.0.0.1:{free_port()}", "ok_per_s": 2},
        evidence={"dir": str(tmp_path / "evidence"), "raw": True, "ok_every": 5},
        hmi={"users": str(tmp_path / "users"), "review_dir": str(tmp_path / "review")},
    )
    return config


def add_reviewer(config: Path, name: str) -> None:
    r = subprocess.run(
        [*EDGE_HMI, "--config", str(config), "--add-user", name], input=PASSWORD + "\n", capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_the_page_follows_the_line_live_and_a_review_needs_a_login(
    tmp_path: Path, tiny_bundle: Path, browser, hmi_processes
) -> None:
    config = line_config(tmp_path, tiny_bundle)
    add_reviewer(config, "ana")
    port = free_port()
    hmi_processes.append(start_hmi(config, port))
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/")
    daemon = start(config)  # it waits for its subscriber: the HMI is one
    hmi_processes.append(daemon)

    # live: the count reaches 30 of 30, NG parts come with their overlay image, decoded
    page.wait_for_function("document.querySelector('[data-testid=judged]')?.textContent === '30'", timeout=60_000)
    assert page.text_content("[data-testid=frames-in]") == "30"
    assert page.text_content(".n-ng") == "10" and page.text_content(".n-ok") == "20"
    page.wait_for_function("document.querySelectorAll('.strip img').length > 0")
    page.wait_for_function("[...document.querySelectorAll('.strip img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.eval_on_selector(".last-image", "i => i.naturalWidth") > 0
    # the video ends: the camera is down, and the page says so in words
    page.wait_for_function("document.querySelector('[data-testid=alarms]').textContent.includes('camera down')")
    assert daemon.wait(20) == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "live-desktop.png"))
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=str(SCREENSHOTS / "live-1280x800.png"))

    # review: the gallery holds the NG evidence; a mark without a login is refused and moves nothing
    page.goto(f"http://127.0.0.1:{port}/review")
    page.wait_for_selector(".part[data-kind=ng] .mark-good")
    first = page.get_attribute(".part[data-kind=ng]", "data-name")
    raw = tmp_path / "evidence" / f"{first}_raw.png"
    assert raw.is_file()
    page.click(f".part[data-name='{first}'] .mark-good")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('log in')")
    assert raw.is_file() and not (tmp_path / "review" / "log.jsonl").exists()
    # a wrong password does not log in; the right one does, and the click moves the file and logs it
    page.fill("#login input[name=user]", "ana")
    page.fill("#login input[name=password]", "wrong-password")
    page.click("#login button")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('wrong')")
    page.fill("#login input[name=password]", PASSWORD)
    page.click("#login button")
    page.wait_for_selector("#who:not([hidden])")
    page.click(f".part[data-name='{first}'] .mark-good")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('moved to')")
    moved = tmp_path / "review" / "good" / f"{first}.png"
    assert moved.is_file() and not raw.exists()
    entry = json.loads((tmp_path / "review" / "log.jsonl").read_text().splitlines()[-1])
    assert (entry["user"], entry["mark"], entry["name"], entry["file"]) == ("ana", "good", first, f"good/{first}.png")
    assert (
        entry["model"].startswith("bundle@") and entry["score"] > entry["threshold"]
    )  # a reject, now called a false one
    # a confirmed defect with its type goes into its own folder
    second = page.get_attribute(".part[data-kind=ng]:not([data-name='" + first + "'])", "data-name")
    page.fill(f".part[data-name='{second}'] .defect-type", "spot")
    page.click(f".part[data-name='{second}'] .mark-defect")
    page.wait_for_function(f"document.querySelector('[data-testid=message]').textContent.includes('spot/{second}')")
    assert (tmp_path / "review" / "spot" / f"{second}.png").is_file()
    page.screenshot(path=str(SCREENSHOTS / "review-1280x800.png"))

    # what recalibrating on the reviewed good part would do, through the line's calibration code
    page.click("#preview")
    page.wait_for_function("document.querySelector('[data-testid=preview]').textContent.includes('threshold now')")
    text = page.text_content("[data-testid=preview]")
    assert "reviewed good parts: 1; rejected now 1 (100.0 %), after 0" in text
    assert "confirmed defects: 1" in text
    # and edge-calibrate takes the review folder as it is (--force: one part, so σ is 0, which it refuses)
    shutil.copytree(tiny_bundle, tmp_path / "bundle-copy")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from calibration.cli import main; sys.exit(main())",
            "--bundle",
            str(tmp_path / "bundle-copy"),
            "--data",
            str(tmp_path / "review" / "good"),
            "--force",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "n: 1\n" in (tmp_path / "bundle-copy" / "calibration.yaml").read_text()
