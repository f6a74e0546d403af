"""Train and export the from-scratch methods on one MVTec category, then measure each exported
bundle on the line's own ONNX Runtime backend (edge-eval's code): image / pixel AUROC, AUPRO,
training time, ms per image.

    .venv/bin/python bench/train_ssl_ae.py --data ../shared/data/mvtec/bottle \
        [--ssl-epochs 10] [--ae-epochs 60] [--threads 1] [--variants ssl-concat,ssl-multiply,ae-residual,ae-uncertainty] \
        [--table /tmp/bench_ssl_ae.md]

Variants of one method share its training: the second one resumes from the first one's
checkpoints (export-engine --resume), which finds the run complete and only rebuilds the
scoring graph; its "train s" is that, and the table says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from calibration.evaluate import evaluate
from edge.backends import load_backend
from edge.bundle import load_bundle
from export.autoencoder import AutoencoderConfig, export_autoencoder
from export.data import iter_batches, mvtec_test_samples
from export.ssl import SSLConfig, export_ssl

VARIANTS = {
    "ssl-concat": ("ssl", {"fusion": "concat"}),
    "ssl-multiply": ("ssl", {"fusion": "multiply"}),
    "ae-residual": ("autoencoder", {"score": "residual"}),
    "ae-uncertainty": ("autoencoder", {"score": "uncertainty"}),
}
EXPORTS = {"ssl": (SSLConfig, export_ssl), "autoencoder": (AutoencoderConfig, export_autoencoder)}


def infer_ms(bundle_dir: Path, data: Path, batch: int, repeats: int = 3) -> float:
    """Model time per image on ONNX Runtime: pre-decoded test images, best of ``repeats``
    passes over ``batch`` of them (decoding and resizing are the line's, not the model's)."""
    bundle = load_bundle(bundle_dir)
    backend = load_backend(bundle, "onnxruntime")
    files = [s.path for s in mvtec_test_samples(data)][:batch]
    images = next(iter_batches(files, (bundle.height, bundle.width), batch))
    backend.infer(images)
    best = min(_timed(backend.infer, images) for _ in range(repeats))
    return 1e3 * best / len(images)


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def run_variant(name: str, data: Path, work: Path, epochs: dict[str, int], size: dict[str, int | None],
                batch: int) -> dict:
    method, overrides = VARIANTS[name]
    config_cls, export = EXPORTS[method]
    checkpoints = work / f"{method}.checkpoints"
    shared = (checkpoints / "last.pt").is_file()
    extra = {"size": size[method]} if size[method] else {}
    config = config_cls(epochs=epochs[method], checkpoint_dir=str(checkpoints), resume=shared, **overrides, **extra)
    start = time.perf_counter()
    bundle_dir = export(data, work / name, config)
    train_s = time.perf_counter() - start
    bundle = load_bundle(bundle_dir)
    result = evaluate(bundle, load_backend(bundle, "onnxruntime"), data, batch)
    overall = result.overall
    return {"variant": name, "epochs": epochs[method], "size": config.size, "shared": shared,
            "train_s": train_s, "image_auroc": overall.image_auroc, "pixel_auroc": overall.pixel_auroc,
            "aupro": overall.aupro, "ms": infer_ms(bundle_dir, data, batch),
            "config": dataclasses.asdict(config)}


def table(rows: list[dict], data: Path, batch: int) -> str:
    lines = [f"MVTec AD `{data.name}`, exported ONNX bundle on ONNX Runtime (CPU, {os.cpu_count()} cores, "
             f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}); "
             f"ms/image at batch {batch}, model only.", "",
             "| variant | size | epochs | train + export s | image AUROC | pixel AUROC | AUPRO@30% | ms/image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        train = f"{r['train_s']:.0f} (training shared, resumed)" if r["shared"] else f"{r['train_s']:.0f}"
        lines.append(f"| {r['variant']} | {r['size']} | {r['epochs']} | {train} | {100 * r['image_auroc']:.1f} | "
                     f"{100 * r['pixel_auroc']:.1f} | {100 * r['aupro']:.1f} | {r['ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="an MVTec AD category folder")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--ssl-epochs", type=int, default=SSLConfig().epochs)
    parser.add_argument("--ae-epochs", type=int, default=AutoencoderConfig().epochs)
    parser.add_argument("--ssl-size", type=int, help=f"default {SSLConfig().size}")
    parser.add_argument("--ae-size", type=int, help=f"default {AutoencoderConfig().size}")
    parser.add_argument("--batch", type=int, default=8, help="inference batch")
    parser.add_argument("--threads", type=int, help="torch threads for training (default: torch's choice; on a "
                                                     "shared CPU 1 is often faster)")
    parser.add_argument("--work", type=Path, help="where bundles and checkpoints go (default: a temporary folder)")
    parser.add_argument("--table", type=Path, default=Path("/tmp/bench_ssl_ae.md"), help="write the table here too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_ssl_ae-"))
    epochs = {"ssl": args.ssl_epochs, "autoencoder": args.ae_epochs}
    size = {"ssl": args.ssl_size, "autoencoder": args.ae_size}
    rows = []
    for name in args.variants.split(","):
        rows.append(run_variant(name.strip(), args.data, work, epochs, size, args.batch))
        print(table(rows, args.data, args.batch), flush=True)
    text = table(rows, args.data, args.batch)
    args.table.write_text(text)
    print(f"bundles in {work}; table written to {args.table}")


if __name__ == "__main__":
    main()
