"""Read and check a bundle directory: the one artifact that crosses from training to the line.

The schema is documented in README.md ("The bundle"). Loading refuses anything it cannot
trust (wrong schema, missing or altered files) with an error that names the file and the fix,
so a bad deployment fails at start-up, not deep inside an inference runtime.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCHEMA_VERSION = 1
CALIBRATION_SCHEMA_VERSION = 1
BUNDLE_FILE = "bundle.yaml"
CALIBRATION_FILE = "calibration.yaml"


class BundleError(RuntimeError):
    """A bundle that cannot be used as it is; the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class Calibration:
    mu: float
    sigma: float
    k: float
    threshold: float
    pixel_threshold: float
    n: int
    raw: dict = field(repr=False, default_factory=dict)

    def threshold_for(self, k: float | None) -> float:
        """The image threshold μ + kσ; a line config's k overrides the calibrated one."""
        return self.threshold if k is None else self.mu + k * self.sigma


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    method: str
    height: int
    width: int
    onnx_path: Path
    sha256: str                      # of model.onnx: names the model in every verdict
    meta: dict = field(repr=False)
    calibration: Calibration | None = None

    @property
    def name(self) -> str:
        return f"{self.path.name}@{self.sha256[:12]}"

    @property
    def fp16_caution(self) -> str | None:
        """Why an fp16 engine of this model would lose accuracy, when its exporter says so
        (bundle.yaml ``precision: {fp16: false, why: ...}``); None: fp16 is fine."""
        precision = self.meta.get("precision") or {}
        if precision.get("fp16", True):
            return None
        return str(precision.get("why") or "bundle.yaml says fp16 loses accuracy on this model")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; is this a bundle directory written by export-engine?") from None
    except yaml.YAMLError as e:
        raise BundleError(f"{path}: not valid YAML ({e}); re-export the bundle") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a mapping at the top level; re-export the bundle")
    return data


def _check_files(root: Path, files: dict[str, dict]) -> None:
    for name, info in files.items():
        p = root / name
        if not p.is_file():
            raise BundleError(f"{p}: listed in {BUNDLE_FILE} but missing; copy the whole bundle directory")
        if p.stat().st_size != info.get("bytes", p.stat().st_size) or sha256_file(p) != info.get("sha256"):
            raise BundleError(f"{p}: content differs from the hash in {BUNDLE_FILE} (altered or truncated); "
                              "copy the bundle again or re-export it")


def read_calibration(root: Path) -> Calibration | None:
    path = root / CALIBRATION_FILE
    if not path.exists():
        return None
    data = _read_yaml(path)
    if data.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {data.get('schema_version')!r}, this edge reads "
                          f"{CALIBRATION_SCHEMA_VERSION}; run edge-calibrate again")
    try:
        return Calibration(mu=float(data["mu"]), sigma=float(data["sigma"]), k=float(data["k"]),
                           threshold=float(data["threshold"]), pixel_threshold=float(data["pixel_threshold"]),
                           n=int(data["n"]), raw=data)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path}: missing or bad field {e}; run edge-calibrate again") from None


def load_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory; give the bundle directory written by export-engine")
    meta = _read_yaml(root / BUNDLE_FILE)
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{root / BUNDLE_FILE}: schema_version {version!r}, this edge reads {SCHEMA_VERSION}; "
                          "re-export the bundle with a matching export-engine")
    try:
        files = meta["files"]
        onnx_info = files["model.onnx"]
        inp = meta["input"]
        height, width = int(inp["height"]), int(inp["width"])
        method = str(meta["method"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{root / BUNDLE_FILE}: missing or bad field {e}; re-export the bundle") from None
    if inp.get("dtype") != "uint8" or inp.get("layout") != "NHWC" or inp.get("colour") != "RGB":
        raise BundleError(f"{root / BUNDLE_FILE}: input must be uint8 NHWC RGB (the engine contract), "
                          f"got {inp.get('dtype')} {inp.get('layout')} {inp.get('colour')}")
    if verify_hashes:
        _check_files(root, files)
    return Bundle(path=root.resolve(), method=method, height=height, width=width,
                  onnx_path=root / "model.onnx", sha256=str(onnx_info["sha256"]), meta=meta,
                  calibration=read_calibration(root))
