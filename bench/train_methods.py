"""Train and export feature-discriminator methods on one MVTec category, then measure each
exported bundle on the line's own ONNX Runtime backend (edge-eval's code): image / pixel AUROC,
AUPRO, training time, ms per image. Prints a markdown table.

    .venv/bin/python bench/train_methods.py --data ../shared/data/mvtec/bottle \
        --methods simplenet glass --epochs 4 2 [--size 288] [--gas-steps 5] [--table /tmp/bench.md]

"train s" is the whole export: backbone features (once), synthetic anomalies, training,
validation, ONNX export. Model selection uses held-out good images and synthetic anomalies
only; the test set is seen once, by the final measurement.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
import yaml

from calibration.evaluate import evaluate
from edge.backends import load_backend
from edge.bundle import load_bundle
from export.data import iter_batches, mvtec_test_samples
from export.glass import GlassConfig, export_glass
from export.simplenet import SimpleNetConfig, export_simplenet

METHODS: dict[str, tuple[type, Callable[..., Path]]] = {
    "simplenet": (SimpleNetConfig, export_simplenet),
    "glass": (GlassConfig, export_glass),
}


def infer_ms(bundle_dir: Path, data: Path, batch: int, repeats: int = 10) -> float:
    """Model time per image: best of ``repeats`` runs of one batch of pre-resized test images
    (decoding and resizing are the line's work, not the model's)."""
    bundle = load_bundle(bundle_dir)
    backend = load_backend(bundle, "onnxruntime")
    files = [s.path for s in mvtec_test_samples(data)][:batch]
    images = next(iter_batches(files, (bundle.height, bundle.width), batch))
    backend.infer(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.infer(images)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times) / len(images)


def run(method: str, data: Path, work: Path, epochs: int, overrides: dict, batch: int) -> dict:
    config_cls, export = METHODS[method]
    known = {f.name for f in dataclasses.fields(config_cls)}
    config = config_cls(epochs=epochs, checkpoint_dir=str(work / f"{method}.checkpoints"),
                        **{k: v for k, v in overrides.items() if k in known and v is not None})
    start = time.perf_counter()
    bundle_dir = export(data, work / method, config)
    train_s = time.perf_counter() - start
    bundle = load_bundle(bundle_dir)
    overall = evaluate(bundle, load_backend(bundle, "onnxruntime"), data, batch).overall
    params = yaml.safe_load((bundle_dir / "bundle.yaml").read_text())["method_params"]
    return {"method": method, "backbone": config.backbone, "size": config.size, "epochs": params["epochs_run"],
            "kept": params["kept_epoch"], "train_s": train_s, "image_auroc": overall.image_auroc,
            "pixel_auroc": overall.pixel_auroc, "aupro": overall.aupro, "ms": infer_ms(bundle_dir, data, batch),
            "config": dataclasses.asdict(config)}


def table(rows: list[dict], data: Path, batch: int) -> str:
    lines = [
        f"Data: {data.resolve()} ({len(mvtec_test_samples(data))} test images). CPU: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread), onnxruntime {ort.__version__}; "
        f"ms/image: ONNX Runtime CPU, batch {batch}, model only.",
        "",
        "| method | backbone | input | epochs (kept) | train s | I-AUROC | P-AUROC | AUPRO@30% | ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['backbone']} | {r['size']}² | {r['epochs']} ({r['kept']}) | "
                     f"{r['train_s']:.0f} | {100 * r['image_auroc']:.1f} | {100 * r['pixel_auroc']:.1f} | "
                     f"{100 * r['aupro']:.1f} | {r['ms']:.1f} |")
    lines += ["", "Settings that differ from the official defaults (configs/methods/*.yaml):"]
    for r in rows:
        defaults = dataclasses.asdict(METHODS[r["method"]][0]())
        changed = {k: v for k, v in r["config"].items() if v != defaults[k] and k != "checkpoint_dir"}
        lines.append(f"- {r['method']}: {changed}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="an MVTec AD category folder")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["simplenet", "glass"])
    parser.add_argument("--epochs", nargs="+", type=int, required=True, help="one per method, in order")
    parser.add_argument("--size", type=int, help="input size for every method (default: each config's)")
    parser.add_argument("--gas-steps", type=int, help="GLASS gradient-ascent steps (default: its config's 20)")
    parser.add_argument("--batch", type=int, default=8, help="inference batch for the measurement")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads for training (default 1: on a shared CPU two threads wait on each "
                             "other; measured 0.8 s vs 1.2 s per SimpleNet step on 2 busy cores)")
    parser.add_argument("--table", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if len(args.epochs) != len(args.methods):
        parser.error("--epochs needs one value per method")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.torch_threads)
    overrides = {"size": args.size, "gas_steps": args.gas_steps}
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as work:
        rows = [run(m, args.data, Path(work), e, overrides, args.batch) for m, e in zip(args.methods, args.epochs)]
    text = table(rows, args.data, args.batch)
    print(text)
    if args.table:
        args.table.write_text(text)


if __name__ == "__main__":
    main()
