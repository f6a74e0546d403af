"""Every method on one MVTec category, the way users run it: export-engine --reference →
edge-calibrate (--holdout: good parts the model never saw) → edge-eval on the deployed ONNX
bundle, which also measures it against the PyTorch model it was exported from.

    .venv/bin/python bench/eval_methods.py --data ../shared/data/mvtec/bottle --work /tmp/methods \\
        patchcore "simplenet --epochs 8" "ssl --fusion multiply"

Each positional argument is a method name followed by extra export-engine options. Prints one
markdown table: training (export) time, the metrics of edge-eval, CPU inference ms/image, and
what deployment changed: image AUROC points lost to PyTorch, and the largest score difference
relative to the calibrated threshold.
Reports land in WORK/<label>/eval/report.html.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import time
from pathlib import Path

from calibration.cli import main as calibrate
from calibration.eval_cli import main as evaluate
from export.cli import main as export


def run(spec: str, data: Path, work: Path) -> dict:
    method, *extra = shlex.split(spec)
    label = re.sub(r"[^A-Za-z0-9]+", "-", spec).strip("-")
    bundle = work / label
    t0 = time.perf_counter()
    if export(["--method", method, "--data", str(data), "--out", str(bundle), "--reference", *extra]) != 0:
        raise SystemExit(f"{spec}: export-engine failed")
    train_s = time.perf_counter() - t0
    if calibrate(["--bundle", str(bundle), "--holdout", "--k", "3"]) != 0:
        raise SystemExit(f"{spec}: edge-calibrate failed")
    if evaluate(["--bundle", str(bundle), "--data", str(data)]) not in (0, 1):  # 1: over the AUROC budget, shown
        raise SystemExit(f"{spec}: edge-eval failed")
    result = json.loads((bundle / "eval" / "eval.json").read_text())
    return {"spec": spec, "train_s": train_s, "result": result}


def row(r: dict) -> str:
    o, c = r["result"]["overall"], r["result"]["overall"]["confusion"]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    ms = 1000 * r["result"]["inference_s"] / r["result"]["n_images"]
    diff = r["result"]["reference_comparison"]
    threshold = r["result"]["calibration"]["threshold"]
    return (
        f"| {r['spec']} | {r['train_s']:.0f} | {pct(o['image_auroc'])} | {pct(o['pixel_auroc'])} | "
        f"{pct(o['aupro_30'])} | {pct(o['f1_max'])} | {c['fp']}/{c['fp'] + c['tn']} | {c['fn']}/{c['fn'] + c['tp']} | "
        f"{ms:.0f} | {diff['image_auroc_drop_points']:+.2f} | {diff['score_max_abs_diff'] / abs(threshold):.1e} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="MVTec AD category folder")
    p.add_argument("--work", type=Path, required=True, help="where the bundles and reports go")
    p.add_argument("methods", nargs="+", help='method and its export-engine options, e.g. "glass --epochs 20"')
    args = p.parse_args()
    results = [run(spec, args.data, args.work) for spec in args.methods]
    print(f"\n{args.data.name}: export-engine → edge-calibrate --holdout --k 3 → edge-eval (ONNX Runtime, CPU)")
    print(
        "| method (export options) | export s | image AUROC | pixel AUROC | AUPRO@0.3 | F1-max | "
        "false rejects @ μ+3σ | false accepts @ μ+3σ | ms/image | AUROC lost to PyTorch (pt) | "
        "max score diff / threshold |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))


if __name__ == "__main__":
    main()
