"""Dependencies run export → calibration → edge, never back; hmi/ and demo/ sit on top of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each room may not import, lazily or not.
FORBIDDEN = {
    "edge": {"export", "calibration", "hmi", "demo"},
    "calibration": {"export", "hmi", "demo"},
    "export": {"hmi", "demo"},
}


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            rooms.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            rooms.add(node.module.split(".")[0])
    return rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_nothing_from_the_rooms_that_depend_on_it(room: str) -> None:
    wrong = {str(p.relative_to(ROOT)): sorted(imported_rooms(p) & FORBIDDEN[room]) for p in (ROOT / room).rglob("*.py")}
    assert not {k: v for k, v in wrong.items() if v}
