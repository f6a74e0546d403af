"""The project's own docs/ are its reference: code points there, never at documents outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "export", "calibration", "demo")
OUTSIDE = re.compile(r"shared/spec|ARCHITECTURE\.md|METHODS\.md")


def test_no_package_module_points_at_documents_outside_the_repository():
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    assert len(files) > 50  # the packages were found
    pointing = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not pointing, f"point into docs/ instead: {', '.join(pointing)}"


def test_docs_the_code_points_at_exist():
    mentioned = {
        m
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        for m in re.findall(r"docs/[\w-]+\.md", p.read_text(encoding="utf-8"))
    }
    assert mentioned  # the code does point into docs/
    assert not [m for m in sorted(mentioned) if not (ROOT / m).is_file()]
