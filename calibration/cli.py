"""edge-calibrate: set a bundle's threshold from good parts."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from calibration.calibrate import (
    CalibrationError,
    calibrate,
    held_out_files,
    list_images,
    sigma_problem,
    warnings_for,
    write_calibration,
)
from edge.backends import BackendError, load_backend
from edge.bundle import CALIBRATION_FILE, Bundle, BundleError, load_bundle
from edge.cli import Parser
from edge.trust import add_sign_key_argument, check_unchanged, load_signing_key, sign_or_warn

log = logging.getLogger("calibration")


class AtLeastOne(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        if value < 1:
            parser.error(f"{option_string} must be >= 1 (got {value})")
        setattr(namespace, self.dest, value)


def add_scoring_arguments(p: Parser) -> None:
    """--backend, --gpu, --batch: edge-calibrate and edge-eval score on the line's backend alike."""
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"], help="as on the line")
    p.add_argument("--gpu", type=int, default=0, metavar="N", help="CUDA device index, as the line config's gpu")
    p.add_argument(
        "--batch", type=int, default=8, action=AtLeastOne, help="images per inference call (default %(default)s)"
    )


def _good_parts(bundle: Bundle, args: argparse.Namespace) -> tuple[list[Path], str]:
    """The images to calibrate on (--data or --holdout), and where they come from."""
    if not args.holdout:
        return list_images(Path(args.data)), str(Path(args.data).resolve())
    files = held_out_files(bundle)
    return files, f"holdout of {bundle.meta['training'].get('data')}"


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="edge-calibrate",
        description="Score held-out GOOD parts with the bundle, on the same backend the line runs, and write "
        "calibration.yaml into the bundle: image threshold μ + kσ, pixel threshold (for NG "
        "regions), the false-reject rate it implies on these parts, and robust alternatives.",
    )
    p.add_argument("--bundle", required=True, help="bundle directory written by export-engine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder of good images the model was NOT trained on")
    src.add_argument(
        "--holdout",
        action="store_true",
        help="use the good images export-engine held out of training (listed in bundle.yaml)",
    )
    p.add_argument("--k", type=float, default=3.0, help="threshold = μ + k·σ (default %(default)s)")
    p.add_argument(
        "--force",
        action="store_true",
        help="write the calibration even when the good images all score alike (σ ≈ 0), where k means nothing",
    )
    add_scoring_arguments(p)
    add_sign_key_argument(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if args.k <= 0:
        print(f"edge-calibrate: --k must be > 0 (got {args.k})", file=sys.stderr)
        return 2
    try:
        sign_key = load_signing_key(args.sign_key) if args.sign_key else None
        bundle = load_bundle(args.bundle)
        if sign_key is not None:  # before the scoring: never vouch for a model changed since it was signed
            check_unchanged(bundle.path, replaced={CALIBRATION_FILE})
        files, source = _good_parts(bundle, args)
        backend = load_backend(bundle, args.backend, args.gpu, args.batch)
        result = calibrate(bundle, backend, files, args.k, source, args.batch)
        if (problem := sigma_problem(result)) and not args.force:
            raise CalibrationError(f"{bundle.path}: not written: {problem}")
    except (BundleError, BackendError, CalibrationError) as e:
        print(f"edge-calibrate: {e}", file=sys.stderr)
        return 2
    for w in ([problem] if problem else []) + warnings_for(result):
        log.warning(w)
    path = write_calibration(bundle, result)
    detail = f"threshold {result['threshold']:.5g} = μ + {result['k']:g}σ on {result['n']} good parts ({source})"
    try:
        sign_or_warn(bundle.path, sign_key, "calibrate", "edge-calibrate", detail, written={CALIBRATION_FILE})
    except (BundleError, OSError) as e:
        print(f"edge-calibrate: {path} is written but not signed: {e}", file=sys.stderr)
        return 2
    print(
        f"{path}: n={result['n']} μ={result['mu']:.5g} σ={result['sigma']:.5g} k={result['k']:g} "
        f"threshold={result['threshold']:.5g} pixel_threshold={result['pixel_threshold']:.5g} "
        f"false-reject on these parts {100 * result['false_reject_rate']:.1f}%"
    )
    return 0
