"""Type-check the TensorRT code against TensorRT's own Python bindings, without TensorRT's
libraries or a GPU.

    python scripts/check_tensorrt_api.py [--versions 10.3.0,10.16.1.11] [FILE ...]

CI cannot run TensorRT: it has no GPU, and TensorRT's libraries do not install from PyPI. The
Python bindings do (the wheel ``tensorrt-cu12-bindings``, 1.3 MB), and their compiled module
links into those libraries through nine factory functions only (createInferBuilder_INTERNAL,
createInferRuntime_INTERNAL, ...): TensorRT's C++ API is otherwise interfaces called through
vtables. With stand-ins for those nine (each returns NULL, so nothing can be built or run), the
real module imports, and pybind11-stubgen writes out its API as type stubs: every class,
method, argument and enum that version has. mypy then checks FILE (default: the backend and
the engine builder) against them, per version: a misspelt method, a wrong argument count or
type, an enum member the version lacks, an API newer than JetPack's TensorRT.

This checks names and types, not behaviour: the code still runs for real only on a GPU
(tests/edge/test_engines.py, needs_gpu). Needs network access to PyPI (the wheel), gcc, mypy
and pybind11-stubgen (the dev extra). Exit status: 0 clean, 1 type errors, 3 the bindings
could not be fetched (no registry).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ("edge/backends/tensorrt.py", "export/engine.py")
# The oldest 10.x we support (JetPack 6.1's) and the newest 10.x on PyPI.
VERSIONS = ("10.3.0", "10.16.1.11")
NO_BINDINGS = 3

# What the compiled module needs from libnvinfer / libnvinfer_plugin / libnvonnxparser.
STAND_INS = """
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
"""
LIBRARIES = ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10")

# Runtime facts of the real module that the generated stubs miss, checked before the stubs
# are amended to say them: pybind11 converts a tuple or list to Dims wherever a Dims is taken
# (TensorRT's samples pass shapes as tuples), and Dims iterates through __getitem__/__len__.
DIMS_FACTS = """
import tensorrt as trt
desc = trt.PluginTensorDesc()
desc.dims = (1, 2, 3)
assert tuple(desc.dims) == (1, 2, 3), desc.dims
desc.dims = [4, 5]
assert list(desc.dims) == [4, 5], desc.dims
print(trt.__version__)
"""

MYPY_INI = """
[mypy]
ignore_missing_imports = True
follow_imports = silent
check_untyped_defs = True
warn_unused_ignores = False
# The stubs cannot say which calls return None (deserialize_cuda_engine does on failure):
# None-safety is not what this checks; names, arguments and types are.
strict_optional = False

[mypy-tensorrt.*]
ignore_errors = True
"""

DEF = re.compile(r"^(\s*)def (\w+)\((.*)$")


def say(message: str) -> None:
    print(f"check_tensorrt_api: {message}", file=sys.stderr, flush=True)


def fetch(version: str, cache: Path) -> Path | None:
    """The bindings wheel of ``version`` for this Python, from PyPI (kept in ``cache``)."""
    found = sorted(cache.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if found:
        return found[0]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            str(cache),
            f"tensorrt-cu12-bindings=={version}",
        ],
        capture_output=True,
        text=True,
    )
    found = sorted(cache.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if result.returncode or not found:
        say(
            f"could not download tensorrt-cu12-bindings=={version}: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
        )
        return None
    return found[0]


def stand_in_libraries(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "stand_ins.c"
    source.write_text(STAND_INS)
    for name in LIBRARIES:
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(folder / name), f"-Wl,-soname,{name}", str(source)], check=True
        )
    return folder


def unpack(wheel: Path, site: Path) -> None:
    """The wheel's ``tensorrt_bindings`` package as ``site/tensorrt``, the name code imports."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith("tensorrt_bindings/") and not member.endswith("/"):
                target = site / "tensorrt" / member.removeprefix("tensorrt_bindings/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))


def amend(stubs: Path) -> int:
    """Make the generated stubs say what the module does; the number of signatures replaced.

    - A signature that is not valid Python (an argument named ``in``, a default before a
      required argument: plugin-writer APIs) becomes ``(*args, **kwargs) -> Any``.
    - The module defines ``bool`` (a DataType), which shadows the builtin in every
      annotation: annotations say ``builtins.bool``.
    - A parameter of type Dims also takes a sequence of ints; Dims iterates (DIMS_FACTS).
    """
    replaced = 0
    for path in stubs.rglob("*.pyi"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = DEF.match(line)
            if not match:
                continue
            indent, name, _ = match.groups()
            try:
                ast.parse(line.strip() + " ...")
            except SyntaxError:
                lines[i] = f"{indent}def {name}(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:"
                replaced += 1
                continue
            line = re.sub(r"(:|->)\s*bool\b", r"\1 builtins.bool", line)
            lines[i] = re.sub(r"(\w+: )Dims\b(?!\w)", r"\1Dims | collections.abc.Sequence[typing.SupportsInt]", line)
        text = "\n".join(lines) + "\n"
        text = text.replace(
            "\nclass Dims:\n", "\nclass Dims:\n    def __iter__(self) -> typing.Iterator[int]: ...\n", 1
        )
        future, _, rest = text.partition("\n") if text.startswith("from __future__") else ("", "", text)
        path.write_text(f"{future}\nimport builtins\nimport collections.abc\nimport typing\n{rest}")
    return replaced


def check_version(version: str, files: list[str], cache: Path, work: Path, libraries: Path) -> int | None:
    """mypy's exit status for ``files`` against TensorRT ``version``; None without the bindings."""
    wheel = fetch(version, cache)
    if wheel is None:
        return None
    site, stubs = work / version / "site", work / version / "stubs"
    unpack(wheel, site)
    env = {**os.environ, "PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(libraries)}
    facts = subprocess.run([sys.executable, "-c", DIMS_FACTS], capture_output=True, text=True, env=env)
    if facts.returncode:
        raise SystemExit(
            f"TensorRT {version}: its bindings do not behave as the stubs will be amended to say:\n{facts.stderr}"
        )
    subprocess.run(
        [sys.executable, "-m", "pybind11_stubgen", "tensorrt", "-o", str(stubs), "--ignore-all-errors"],
        check=True,
        capture_output=True,
        env=env,
    )
    replaced = amend(stubs)
    config = work / "mypy.ini"
    config.write_text(MYPY_INI)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(work / version / "mypy-cache"),
            *files,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "MYPYPATH": str(stubs)},
    )
    output = result.stdout.strip()
    print(
        f"TensorRT {facts.stdout.strip()} ({wheel.name}; {replaced} plugin-API signatures not valid Python, "
        f"left unchecked): {'ok' if result.returncode == 0 else 'ERRORS'}"
    )
    if not output.startswith("Success"):  # errors, or notes (reveal_type while editing)
        print("\n".join(f"  {line}" for line in output.splitlines()))
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", default=list(FILES), metavar="FILE", help="default: " + ", ".join(FILES))
    p.add_argument("--versions", default=",".join(VERSIONS), help="TensorRT versions (default %(default)s)")
    p.add_argument(
        "--cache",
        type=Path,
        default=REPO / ".cache" / "tensorrt-bindings",
        help="where downloaded wheels are kept (default %(default)s)",
    )
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trt-api-") as scratch:
        work = Path(scratch)
        libraries = stand_in_libraries(work / "lib")
        statuses = [
            check_version(v.strip(), args.files, args.cache, work, libraries)
            for v in args.versions.split(",")
            if v.strip()
        ]
    if None in statuses:
        return NO_BINDINGS
    return 1 if any(statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
