"""What the methods that train a network from scratch on good images (``ssl``,
``autoencoder``) share around export.training.Trainer: the run options every such config
carries, where checkpoints live, a resumable learning-rate schedule, per-epoch randomness,
and the bundle they end in.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .bundle import check_out_dir, write_bundle
from .data import DataError, TrainingSplit, iter_batches, split_training_data
from .graph import AnomalyGraph, check_size
from .sizes import SizeSpec, resolve_size, size_hw
from .training import LAST, RUN_ONLY, Trainer, TrainResult

log = logging.getLogger(__name__)


class ScratchConfig(Protocol):
    """The fields every from-scratch method's config has, with these meanings."""

    size: int | str  # PX, "HxW" or "auto" (export.sizes)
    pixel_budget: int
    epochs: int
    lr: float
    batch_size: int
    checkpoint_every: int  # epochs between checkpoints (also written on Ctrl-C)
    patience: int | None  # validations without improvement before stopping early
    checkpoint_dir: str | None  # None: <out>.checkpoints beside the bundle
    resume: bool
    holdout: float
    seed: int
    reference: bool  # also score DATA's labelled test set in PyTorch

    @property
    def size_multiple(self) -> int: ...  # what height and width must be multiples of


def check_run_options(config: ScratchConfig) -> None:
    check_size(config.size)
    for name in ("epochs", "batch_size", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} {getattr(config, name)}: must be ≥ 1")
    if config.patience is not None and config.patience < 1:
        raise ValueError(f"patience {config.patience}: must be ≥ 1 (or null: run every epoch)")
    if not config.lr > 0:
        raise ValueError(f"lr {config.lr}: must be > 0")


def checkpoint_dir(out: Path, config: ScratchConfig) -> Path:
    """Where the run's checkpoints go: ``config.checkpoint_dir`` or ``<out>.checkpoints``
    (beside the bundle: the bundle directory itself must stay empty until it is written).
    A folder holding an earlier run is used only with ``resume``: starting over would
    overwrite hours of training that ``--resume`` could continue."""
    folder = Path(config.checkpoint_dir) if config.checkpoint_dir else Path(f"{Path(out)}.checkpoints")
    if (folder / LAST).is_file() and not config.resume:
        raise DataError(
            f"checkpoint folder {folder} holds an earlier run: pass --resume to continue it, "
            f"or remove the folder (or choose another with --checkpoint-dir) to start over"
        )
    return folder


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's sample order and augmentations: a function of (seed,
    epoch) only, so a resumed run draws exactly what the uninterrupted one drew."""
    return np.random.default_rng([seed, epoch])


def cosine_lr(
    optimizer: torch.optim.Optimizer, base: float, epoch: int, step: int, steps_per_epoch: int, epochs: int
) -> None:
    """Cosine decay from ``base`` to 0 over the run, set per step. Computed from the position
    alone (no scheduler state), so a checkpoint needs nothing beyond the optimizer."""
    progress = ((epoch - 1) * steps_per_epoch + step) / (epochs * steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = 0.5 * base * (1 + math.cos(math.pi * progress))


def load_images(files: Sequence[Path], size: SizeSpec) -> np.ndarray:
    """All of ``files`` as one ``uint8 [N, H, W, 3]`` array at ``size``: a few hundred images
    fit in memory, and every epoch then costs no decoding."""
    return np.concatenate(list(iter_batches(files, size_hw(size), 32)))


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled epoch of indices ``0..n-1`` in batches; the last one is dropped when it
    holds a single sample, which BatchNorm cannot train on."""
    order = rng.permutation(n)
    chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return chunks[:-1] if len(chunks) > 1 and len(chunks[-1]) == 1 else chunks


def train(
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    folder: Path,
    config: ScratchConfig,
    steps: Callable[[int], Iterable[dict[str, float]]],
    steps_per_epoch: int,
    validate: Callable[[], float],
    desc: str,
    identity: dict[str, Any],
) -> TrainResult:
    """Run the shared Trainer over ``config.epochs`` with model selection by ``validate``
    (higher is better; it must not look at the test set); resume first if asked, from a
    checkpoint of the same ``identity`` (export.training.run_identity) only."""
    trainer = Trainer(
        modules,
        optimizers,
        folder,
        every=config.checkpoint_every,
        validate=validate,
        patience=config.patience,
        desc=desc,
        identity=identity,
    )
    if config.resume and not trainer.resume():
        log.info("%s: nothing to resume in %s, starting from epoch 1", desc, folder)
    start = time.perf_counter()
    result = trainer.fit(config.epochs, steps, steps_per_epoch)
    log.info(
        "%s: %d epochs in %.1f s, kept epoch %s (validation %s)",
        desc,
        result.epochs_run,
        time.perf_counter() - start,
        result.best_epoch,
        result.best_score,
    )
    return result


def bundle_params(config: Any, result: TrainResult, extra: dict[str, Any]) -> dict[str, Any]:
    """``method_params`` for bundle.yaml: the config (without run-only fields), how training
    ended, and the method's own facts."""
    params = {k: v for k, v in asdict(config).items() if k not in RUN_ONLY and k != "size"}
    return {
        **params,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_validation": result.best_score,
        **extra,
    }


def export_scratch(
    data: Path,
    out: Path,
    config: ScratchConfig,
    method: str,
    backbone: str,
    fit: Callable[[TrainingSplit, Path], tuple[AnomalyGraph, dict[str, Any]]],
) -> Path:
    """The export every from-scratch method shares: refuse a used ``out`` before training,
    split off the hold-out, ``fit(split, checkpoint_folder)`` → (graph, method_params),
    write the bundle. Returns ``out``."""
    out = Path(out)
    check_out_dir(out)
    folder = checkpoint_dir(out, config)
    split = split_training_data(Path(data), config.holdout, config.seed)
    config = resolve_size(config, split.train, config.size_multiple)
    log.info(
        "%s on %d images of %s (%d held out): %s", method, len(split.train), split.root, len(split.holdout), config
    )
    graph, params = fit(split, folder)
    start = time.perf_counter()
    write_bundle(
        out, graph, method=method, backbone=backbone, split=split, method_params=params, reference=config.reference
    )
    log.info("export: bundle %s in %.1f s", out, time.perf_counter() - start)
    return out
