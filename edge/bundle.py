"""Read and check a bundle directory: the one artifact that crosses from training to the line.

The format is specified in docs/bundle-format.md. Loading refuses anything it cannot
trust (wrong schema, missing or altered files) with an error that names the file and the fix,
so a bad deployment fails at start-up, not deep inside an inference runtime.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.config import yaml_problem
from edge.onnxfile import OnnxFormatError, external_data_locations
from edge.yamlfile import YamlBoundError, read_yaml_file

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
    sha256: str  # of model.onnx: names the model in every verdict
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


def _read_yaml(path: Path, fix: str) -> dict[str, Any]:
    try:
        data = read_yaml_file(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; is this a bundle directory written by export-engine?") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read it ({e.strerror or e}); check the file and its permissions") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text; {fix}") from None
    except yaml.YAMLError as e:
        where, problem = yaml_problem(e)
        raise BundleError(f"{path}: not valid YAML ({where}: {problem}); {fix}") from None
    except YamlBoundError as e:
        raise BundleError(f"{path}: refused: {e}; {fix}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a mapping at the top level; {fix}")
    return data


def _is_file_record(name: object, info: object) -> bool:
    """A ``files`` entry as export-engine writes it: a file of the bundle directory itself, its
    sha256 and its size."""
    return (
        isinstance(name, str)
        and Path(name).name == name
        and isinstance(info, dict)
        and isinstance(info.get("sha256"), str)
        and isinstance(info.get("bytes"), int)
    )


def _check_files(root: Path, files: dict[str, dict]) -> None:
    for name, info in files.items():
        p = root / name
        if not p.is_file():
            raise BundleError(f"{p}: listed in {BUNDLE_FILE} but missing; copy the whole bundle directory")
        if p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
            raise BundleError(
                f"{p}: content differs from the hash in {BUNDLE_FILE} (altered or truncated); "
                "copy the bundle again or re-export it"
            )


def _check_external_data(root: Path, files: dict[str, dict]) -> None:
    """Every file whose weights model.onnx loads from beside it is one of ``files`` (so hashed):
    ONNX Runtime would read any file a tensor names, listed or not."""
    path = root / "model.onnx"
    try:
        locations = external_data_locations(path.read_bytes())
    except OSError as e:
        raise BundleError(f"{path}: cannot read it ({e.strerror or e}); copy the bundle again") from None
    except OnnxFormatError as e:
        raise BundleError(f"{path}: not an ONNX model ({e}); copy the bundle again or re-export it") from None
    unlisted = sorted(loc for loc in locations if loc not in files)
    if unlisted:
        raise BundleError(
            f"{path}: loads weights from {', '.join(map(repr, unlisted))}, which {BUNDLE_FILE} does not list "
            "under files with its hash; re-export the bundle (export-engine lists every file it writes)"
        )


# edge-calibrate loads the bundle too, and refuses a calibration.yaml it cannot trust just as the line does.
_RECALIBRATE = "delete it and run edge-calibrate again"
# The values the judge computes with: a threshold of inf would pass every part, one of nan
# none, and a negative sigma would turn a config's k upside down.
_CALIBRATED = {"mu": -math.inf, "sigma": 0.0, "k": -math.inf, "threshold": -math.inf, "pixel_threshold": -math.inf}


def read_calibration(root: Path, model_sha256: str) -> Calibration | None:
    """calibration.yaml as the judge may use it: finite values, made for this very model.onnx
    (a new model copied over an old bundle keeps the old thresholds, which may pass its defects),
    its threshold the rule of its own numbers (a threshold typed in by hand is not a calibration)."""
    path = root / CALIBRATION_FILE
    if not path.exists():
        return None
    data = _read_yaml(path, _RECALIBRATE)
    if data.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version {data.get('schema_version')!r}, this edge reads "
            f"{CALIBRATION_SCHEMA_VERSION}; {_RECALIBRATE}"
        )
    try:
        cal = Calibration(
            mu=float(data["mu"]),
            sigma=float(data["sigma"]),
            k=float(data["k"]),
            threshold=float(data["threshold"]),
            pixel_threshold=float(data["pixel_threshold"]),
            n=int(data["n"]),
            raw=data,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path}: missing or bad field {e}; {_RECALIBRATE}") from None
    for key, lowest in _CALIBRATED.items():
        value = getattr(cal, key)
        if not math.isfinite(value) or value < lowest:
            raise BundleError(
                f"{path}: {key} is {value}, not a finite number"
                + (f" >= {lowest:g}" if lowest > -math.inf else "")
                + f"; {_RECALIBRATE}"
            )
    problem = _model_problem(data, model_sha256) or _threshold_problem(cal)
    if problem:
        raise BundleError(f"{path}: {problem}; run edge-calibrate --bundle {root} --data GOOD_DIR")
    return cal


def _model_problem(data: dict, model_sha256: str) -> str | None:
    """Whether the calibration names this model.onnx: by its full sha256 (``model_sha256``), or
    by the ``name@sha256[:12]`` in ``model`` that older edge-calibrate wrote."""
    full = data.get("model_sha256")
    short = str(data.get("model", "")).rpartition("@")[2]
    if full is None and len(short) < 12:
        return "names no model (model_sha256), so it may belong to another model.onnx"
    if full != model_sha256 if full is not None else not model_sha256.startswith(short):
        named = full if full is not None else short
        return f"calibrated for model {str(named)[:12]}, this bundle's model.onnx is {model_sha256[:12]}"
    return None


def _threshold_problem(cal: Calibration) -> str | None:
    """Whether ``threshold`` is what the rule named in ``rule`` (default: μ + kσ) gives for the
    calibration's own numbers."""
    rule = cal.raw.get("rule", "mean_sigma")
    if rule == "mean_sigma":
        expected = cal.mu + cal.k * cal.sigma
    else:
        alternative = (cal.raw.get("alternatives") or {}).get(rule)
        if not isinstance(alternative, dict) or not isinstance(alternative.get("threshold"), (int, float)):
            return f"rule {rule!r} has no threshold under alternatives (mean_sigma, robust or quantile)"
        expected = float(alternative["threshold"])
    if not math.isclose(cal.threshold, expected, rel_tol=1e-6, abs_tol=1e-9 * (abs(cal.mu) + cal.k * cal.sigma)):
        return f"threshold {cal.threshold:g} is not the {rule} rule of its own numbers ({expected:g})"
    return None


def load_bundle(path: str | Path, *, verify_hashes: bool = True, trusted_keys: Path | None = None) -> Bundle:
    """``trusted_keys``: a line's trust.keys folder; the bundle must then be signed by one of its
    keys, every file as signed (edge.trust), before anything in it is read."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory; give the bundle directory written by export-engine")
    if trusted_keys is not None:
        from edge.trust import verify_bundle  # edge.trust builds on this module

        verify_bundle(root, trusted_keys)
    meta_path = root / BUNDLE_FILE
    meta = _read_yaml(meta_path, "re-export the bundle")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{meta_path}: schema_version {version!r}, this edge reads {SCHEMA_VERSION}; "
            "re-export the bundle with a matching export-engine"
        )
    files = meta.get("files")
    if (
        not isinstance(files, dict)
        or "model.onnx" not in files
        or not all(_is_file_record(name, info) for name, info in files.items())
    ):
        raise BundleError(
            f"{meta_path}: files must map model.onnx and every other file of the bundle to its "
            "sha256 and bytes; re-export the bundle"
        )
    try:
        inp = meta["input"]
        height, width = int(inp["height"]), int(inp["width"])
        method = str(meta["method"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{meta_path}: missing or bad field {e}; re-export the bundle") from None
    if height < 1 or width < 1:
        raise BundleError(f"{meta_path}: input is {height}x{width} pixels (height x width); re-export the bundle")
    if not isinstance(meta.get("precision") or {}, dict):
        raise BundleError(f"{meta_path}: precision must be a mapping (fp16, why); re-export the bundle")
    if inp.get("dtype") != "uint8" or inp.get("layout") != "NHWC" or inp.get("colour") != "RGB":
        raise BundleError(
            f"{meta_path}: input must be uint8 NHWC RGB (the engine contract), "
            f"got {inp.get('dtype')} {inp.get('layout')} {inp.get('colour')}"
        )
    if verify_hashes:
        _check_files(root, files)
    _check_external_data(root, files)
    return Bundle(
        path=root.resolve(),
        method=method,
        height=height,
        width=width,
        onnx_path=root / "model.onnx",
        sha256=files["model.onnx"]["sha256"],
        meta=meta,
        calibration=read_calibration(root, files["model.onnx"]["sha256"]),
    )
