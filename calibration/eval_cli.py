"""edge-eval: measure a bundle on a labelled MVTec AD category and write eval.json + report.html."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from calibration.calibrate import CalibrationError, held_out_files, list_images
from calibration.cli import AtLeastOne, add_scoring_arguments
from calibration.defect_sizes import (
    DEFAULT_CONTRAST,
    DEFAULT_SIZES,
    DefectSizeSheet,
    defect_size_sheet,
    parse_sizes,
    sheet_table,
)
from calibration.evaluate import AUROC_DROP_BUDGET_POINTS, COMPARED, DatasetError, EvalResult, Metrics, evaluate
from calibration.reference import ReferenceError, compare_with_reference, load_reference
from edge.backends import Backend, BackendError, load_backend
from edge.bundle import Bundle, BundleError, load_bundle
from edge.cli import Parser

log = logging.getLogger("calibration")


def _row(name: str, m: Metrics) -> str:
    def f(x: float) -> str:
        return "     n/a" if math.isnan(x) else f"{100 * x:8.1f}"

    c = m.confusion
    rates = f"{f(c.false_reject_rate)} {f(c.false_accept_rate)}" if c else f"{'':8} {'':8}"
    return (
        f"{name:<16}{m.n_good:>5}{m.n_defect:>7}{f(m.image_auroc)}{f(m.pixel_auroc)}{f(m.aupro)}"
        f"{f(m.f1_max)}  {m.f1_threshold:>10.4g} {rates}"
    )


def summary_table(result: EvalResult) -> str:
    """Percentages; FRR / FAR at the calibrated threshold (blank without calibration)."""
    head = (
        f"{'set':<16}{'good':>5}{'defect':>7}{'img AUC':>8}{'px AUC':>8}{'AUPRO':>8}{'F1max':>8}  "
        f"{'F1 thr':>10} {'FRR':>8} {'FAR':>8}"
    )
    rows = [_row("all", result.overall)] + [_row(t, m) for t, m in result.per_type.items()]
    return "\n".join([head, *rows])


def comparison_table(diff: dict) -> str:
    """The deployed model against its PyTorch reference, in points, and the docs/methods.md verdict."""
    runtime = (diff.get("reference") or {}).get("runtime") or {}
    lines = [
        f"deployed vs PyTorch reference ({runtime.get('precision', '?')}, {runtime.get('device', '?')}, "
        f"torch {runtime.get('version', '?')}; reference.npz)",
        f"{'metric':<16}{'deployed':>9}{'PyTorch':>9}{'diff pt':>9}",
    ]
    for name, v in diff["overall"].items():
        cells = [("     n/a" if v[k] is None else f"{100 * v[k]:8.2f}") for k in ("deployed", "reference")]
        d = "     n/a" if v["diff"] is None else f"{100 * v['diff']:+8.2f}"
        lines.append(f"{COMPARED[name]:<16} {cells[0]} {cells[1]} {d}")
    verdict = "within budget" if diff["within_budget"] else "OVER BUDGET"
    lines.append(
        f"image AUROC drop {diff['image_auroc_drop_points']:+.2f} points (budget {diff['budget_points']:g}): "
        f"{verdict}; largest |score diff| {diff['score_max_abs_diff']:.3g}, anomaly maps max "
        f"{diff['map_max_abs_diff']:.3g} / mean {diff['map_mean_abs_diff']:.3g}"
    )
    return "\n".join(lines)


def add_defect_size_arguments(p: Parser) -> None:
    g = p.add_argument_group("defect-size sheet (synthetic defects on good parts, never the test set)")
    g.add_argument(
        "--defect-sizes",
        nargs="?",
        const=",".join(map(str, DEFAULT_SIZES)),
        type=_sizes,
        metavar="PX,PX,...",
        help="also plant scratches, spots and dents of these sizes in the images' own (camera) pixels "
        "on good parts the model never saw, score them as the line does and report the share caught "
        "at the calibrated threshold per size and type (default sizes: %(const)s)",
    )
    g.add_argument(
        "--defect-good",
        metavar="DIR",
        help="good images to plant on (default: the ones export-engine held out, listed in bundle.yaml)",
    )
    g.add_argument(
        "--defect-contrast",
        type=float,
        default=DEFAULT_CONTRAST,
        help="how far a defect moves the surface, as a fraction of full scale (default %(default)s: "
        "64 grey levels, darker on bright surfaces, brighter on dark ones)",
    )
    g.add_argument(
        "--defect-repeats",
        type=int,
        default=1,
        action=AtLeastOne,
        help="placements of each size and type per good image (default %(default)s)",
    )


def _sizes(text: str) -> list[int]:
    try:
        return parse_sizes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sheet(bundle: Bundle, backend: Backend, args: argparse.Namespace) -> DefectSizeSheet:
    if args.defect_good:
        files, source = list_images(Path(args.defect_good)), str(Path(args.defect_good).resolve())
    else:
        files, source = held_out_files(bundle), "held out of training"
    return defect_size_sheet(
        bundle,
        backend,
        files,
        source,
        args.defect_sizes,
        contrast=args.defect_contrast,
        repeats=args.defect_repeats,
        batch=args.batch,
    )


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="edge-eval",
        description="Score the test images of a labelled MVTec AD category (test/<type>/*.png, "
        "ground_truth/<type>/<name>_mask.png) with the bundle, on the backend the line runs, "
        "and measure it overall and per defect type: image AUROC, pixel AUROC, AUPRO up to 30% "
        "FPR, F1-max with its threshold, and false rejects / false accepts at the calibrated "
        "threshold (calibration.yaml, from edge-calibrate). Writes eval.json (every number) and "
        "report.html (one self-contained page: tables, score histograms, ROC and PRO curves, "
        "the worst parts with heatmaps). When the bundle carries its PyTorch model's outputs on "
        "the same files (export-engine --reference), the deployed model is measured against "
        f"them too; exit status 1 when deployment cost more than {AUROC_DROP_BUDGET_POINTS:g} points "
        "of image AUROC (the accuracy budget of an fp16 engine).",
    )
    p.add_argument("--bundle", required=True, help="bundle directory written by export-engine")
    p.add_argument("--data", required=True, help="MVTec AD category folder, e.g. mvtec/bottle")
    p.add_argument("--out", help="output folder (default: BUNDLE/eval)")
    add_defect_size_arguments(p)
    add_scoring_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        bundle = load_bundle(args.bundle)
        reference = load_reference(bundle)  # a damaged one is reported before the scoring, not after
        backend = load_backend(bundle, args.backend, args.gpu, args.batch)
        result = evaluate(bundle, backend, Path(args.data), args.batch)
        result.comparison = compare_with_reference(bundle, result, reference)
        if args.defect_sizes is not None:
            result.defect_sizes = _sheet(bundle, backend, args)
    except (BundleError, BackendError, CalibrationError, DatasetError, ReferenceError) as e:
        print(f"edge-eval: {e}", file=sys.stderr)
        return 2
    from calibration.report import write_report  # matplotlib only once there is something to plot

    out = Path(args.out) if args.out else bundle.path / "eval"
    out.mkdir(parents=True, exist_ok=True)
    json_path = result.write_json(out / "eval.json")
    html_path = write_report(result, out / "report.html")
    for note in result.notes:
        log.warning(note)
    print(summary_table(result))
    if result.threshold is not None:
        print(f"calibrated threshold {result.threshold:.5g} (FRR, FAR in %)")
    if result.comparison is not None:
        print(comparison_table(result.comparison))
    if result.defect_sizes is not None:
        print(sheet_table(result.defect_sizes))
    print(f"wrote {json_path}\nwrote {html_path}")
    return 0 if result.comparison is None or result.comparison["within_budget"] else 1
