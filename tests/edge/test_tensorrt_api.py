"""The TensorRT code against TensorRT's own Python bindings (scripts/check_tensorrt_api.py):
mypy, with stubs generated from the real compiled module of TensorRT 10.3 (JetPack 6.1) and
the newest 10.x, finds every class, method, argument and enum the code uses, with those types.
Names and types only: running the code needs a GPU (test_engines.py, needs_gpu)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / "scripts" / "check_tensorrt_api.py"
NO_BINDINGS = 3  # the script's exit status when PyPI could not be reached

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc for the stand-in libraries"),
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("mypy", "pybind11_stubgen")),
        reason="needs mypy and pybind11-stubgen (the dev extra)",
    ),
]


def check(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, timeout=600)
    if result.returncode == NO_BINDINGS:
        pytest.skip(f"tensorrt-cu12-bindings not downloadable here: {result.stderr.strip()}")
    return result


def test_the_tensorrt_code_fits_the_api_of_jetpack_and_of_the_newest_10x() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    reports = result.stdout.splitlines()
    assert [line.split(" (")[0] for line in reports if line.startswith("TensorRT")] == [
        "TensorRT 10.3.0",
        "TensorRT 10.16.1.11",
    ]
    assert all(line.endswith(": ok") for line in reports if line.startswith("TensorRT")), result.stdout


def test_an_api_mistake_is_reported_with_its_line(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import tensorrt as trt\n\n\n"
        "def build(builder: trt.Builder, config: trt.IBuilderConfig) -> None:\n"
        "    config.set_flag(trt.BuilderFlag.FP16)\n"
        "    builder.build_serialized_network(builder.create_network(0))\n"
        "    builder.create_execution_context()\n"
    )
    result = check(str(wrong), "--versions", "10.16.1.11")
    assert result.returncode == 1
    assert f'{wrong}:6: error: No overload variant of "build_serialized_network"' in result.stdout
    assert f'{wrong}:7: error: "Builder" has no attribute "create_execution_context"' in result.stdout
    assert f"{wrong}:5" not in result.stdout  # FP16 is a real flag of 10.16
