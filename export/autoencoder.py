"""Autoencoder with Stain noise (Collin & De Vleeschouwer, ICPR 2020; docs/methods.md): AESc, a
convolutional autoencoder with skip connections, trained to map a good image corrupted by Stain
noise (export.augment.stain) back to the clean image, so that it learns to "repair" whatever
does not look like a good part.

Two scores, both inside the exported graph:
- ``residual`` (default): ``|x − AE(x)|`` per pixel, averaged over the colour channels.
- ``uncertainty``: the per-pixel variance of N Monte-Carlo-dropout reconstructions.
  ``torch.onnx`` exports a training-mode Dropout as a random op: a different answer on every
  call and on every runtime. Instead the N dropout masks are drawn once, with the run's
  seed, and stored in the graph as constants; the image batch is expanded to N × B at the
  first dropout layer (everything before it is computed once). Dropout is per channel
  (Dropout2d), so a mask is N × C numbers, not N × C × H × W: a few kB of constants. The
  exported graph is therefore deterministic, and PyTorch and ONNX Runtime agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import stain
from .data import TrainingSplit
from .graph import AnomalyGraph, ImageInput, check_size
from .options import OptionGroup
from .scratch import batches, bundle_params, check_run_options, cosine_lr, epoch_rng, export_scratch, load_images, train
from .sizes import size_hw
from .training import TRAINING_OPTIONS, RunOptions, TrainResult, run_identity, seed_everything

METHOD = "autoencoder"
# Measured (BENCHMARKS.md, "fp16 accuracy"): fp16 rounding in every layer is of the order of the
# MC-dropout variance of good pixels; on bottle the whole network in fp16 moved image AUROC by
# -0.32 / 0.00 / +0.16 points (seeds 0 / 1 / 2), past the 0.3 limit once; the last layers alone
# in fp32 did not help. The network is small: fp32 costs a line little.
FP16_CAUTION = (
    "the MC-dropout variance (score: uncertainty) of good pixels is of the order of fp16's rounding "
    "noise: on MVTec bottle fp16 moved image AUROC by up to 0.32 points (-0.32 / 0.00 / +0.16 over "
    "three seeds)"
)
BACKBONE = "aesc"  # bundle.yaml's backbone: the network is trained here
SCORES = ("residual", "uncertainty")
# AESc's MC-dropout rates per resolution level, full resolution first (the authors' Keras
# model): none near the pixels, more towards the bottleneck.
DROPOUT_RATES = (0.0, 0.0, 0.1, 0.2, 0.4, 0.5)
UNIT_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # the network sees pixels in [0, 1]
VALIDATION_STREAM = 2**31  # epoch_rng "epoch" of the fixed validation stains: never a real epoch
AFTER_TRAINING = ("score", "mc_passes")  # the graph's, not the network's: a finished run resumes into either score


@dataclass(slots=True)
class AutoencoderConfig(RunOptions):
    """Every knob of an ``autoencoder`` export (the run options come from RunOptions);
    ``configs/methods/autoencoder.yaml`` mirrors these defaults."""

    size: int | str = 64  # PX, "HxW" or "auto" (export.sizes; see autoencoder.yaml for why not 256)
    score: str = "residual"  # residual | uncertainty (MC dropout)
    depth: int = 4  # resolution levels; the bottleneck is size / 2^(depth-1)
    channels: int = 16  # width at full resolution, doubled per level
    kernel_size: int = 5
    mc_passes: int = 30  # N for the uncertainty score
    stains: int = 1  # Stain-noise blobs per training image
    epochs: int = 60
    lr: float = 0.01  # Adam, cosine decay to 0
    batch_size: int = 16

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def __post_init__(self) -> None:
        check_run_options(self)
        if self.score not in SCORES:
            raise ValueError(f"score {self.score!r}: choose from {', '.join(SCORES)}")
        if not 2 <= self.depth <= len(DROPOUT_RATES):
            raise ValueError(f"depth {self.depth}: must be in 2..{len(DROPOUT_RATES)}")
        check_size(self.size, self.size_multiple, "2^(depth-1)")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {self.kernel_size}: must be odd and ≥ 3")
        for name in ("channels", "mc_passes", "stains"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be ≥ 1")


def _per_pass(module: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """Apply a batch-wise ``module`` to ``h`` = ``[n, B, C, H, W]`` (n passes of a batch)."""
    return module(h.flatten(0, 1)).unflatten(0, (h.shape[0], -1))


class AESc(nn.Module):
    """Convolutional autoencoder with symmetric skip connections (the authors' PyTorch AESc):
    a stem convolution, ``depth − 1`` strided k×k convolutions (BN, LeakyReLU) doubling the
    width, as many transposed convolutions back, each decoder level added to the encoder's
    (except at the level next to the bottleneck, as in the authors' code), and a k×k
    convolution to RGB with a sigmoid. Channel dropout after every level whose rate in
    DROPOUT_RATES is not 0, in the encoder and the decoder.

    ``forward`` works on ``[n, B, ...]``: n = 1 normally; with MC-dropout masks it becomes n
    at the first masked layer, and the encoder features of unmasked levels broadcast over n.
    """

    def __init__(self, depth: int = 5, channels: int = 16, kernel_size: int = 5) -> None:
        super().__init__()
        widths = [channels * 2**level for level in range(depth)]
        pad = kernel_size // 2
        self.depth = depth
        self.stem = nn.Conv2d(3, widths[0], kernel_size, padding=pad)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[level], widths[level + 1], kernel_size, stride=2, padding=pad),
                nn.BatchNorm2d(widths[level + 1]),
                nn.LeakyReLU(0.01),
            )
            for level in range(depth - 1)
        )
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(
                    widths[level + 1], widths[level], kernel_size, stride=2, padding=pad, output_padding=1
                ),
                nn.BatchNorm2d(widths[level]),
                nn.LeakyReLU(0.01),
            )
            for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(widths[0], 3, kernel_size, padding=pad)
        points = [(f"enc{level}", level) for level in range(depth)]
        points += [(f"dec{level}", level) for level in range(depth - 1)]
        # (rate, channels) by name, for the dropout points whose rate is not 0.
        self.dropouts = {
            name: (DROPOUT_RATES[level], widths[level]) for name, level in points if DROPOUT_RATES[level] > 0
        }

    def _drop(self, name: str, h: torch.Tensor, masks: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        if name not in self.dropouts:
            return h
        if masks is not None:
            return h * masks[name]
        if self.training:
            return _per_pass(lambda x: F.dropout2d(x, self.dropouts[name][0], training=True), h)
        return h

    def forward(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` in [0, 1] → reconstructions ``[n, B, 3, H, W]`` in [0, 1];
        ``masks`` (name → ``[N, 1, C, 1, 1]``, see ``dropouts``) give n = N fixed passes."""
        h = self._drop("enc0", self.stem(x).unsqueeze(0), masks)
        skips = [h]
        for level, block in enumerate(self.down, 1):
            h = self._drop(f"enc{level}", _per_pass(block, h), masks)
            skips.append(h)
        for level, block in zip(reversed(range(self.depth - 1)), self.up):
            h = self._drop(f"dec{level}", _per_pass(block, h), masks)
            if level < self.depth - 2:
                h = h + skips[level]
        return torch.sigmoid(_per_pass(self.head, h))


class ResidualScorer(nn.Module):
    """``[B, 3, H, W]`` in [0, 1] → ``|x − AE(x)|`` averaged over channels, ``[B, 1, H, W]``."""

    def __init__(self, ae: AESc) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.ae(x)[0]).abs().mean(dim=1, keepdim=True)


def dropout_masks(ae: AESc, passes: int, seed: int) -> dict[str, torch.Tensor]:
    """Per dropout point, ``[passes, 1, C, 1, 1]`` keep-masks scaled by 1/(1−rate), as
    training-mode Dropout2d would draw them, from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, (rate, channels) in ae.dropouts.items():
        keep = (torch.rand(passes, channels, generator=generator) >= rate).float() / (1.0 - rate)
        masks[name] = keep.reshape(passes, 1, channels, 1, 1)
    return masks


class UncertaintyScorer(nn.Module):
    """``[B, 3, H, W]`` in [0, 1] → the variance of ``passes`` MC-dropout reconstructions,
    averaged over channels, ``[B, 1, H, W]``, in grey levels² (8-bit units): on the [0, 1]
    scale the variances of good bottles measured 1e-7 to 7e-5, mostly below fp16's smallest
    normal number (6e-5), where an fp16 engine loses precision or flushes them to 0.
    The dropout masks are constants (see the module docstring), so the score is a
    deterministic function of the image."""

    def __init__(self, ae: AESc, passes: int, seed: int) -> None:
        super().__init__()
        self.ae = ae
        self.names = list(ae.dropouts)
        for name, mask in dropout_masks(ae, passes, seed).items():
            self.register_buffer(f"mask_{name}", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recon = self.ae(x, {name: getattr(self, f"mask_{name}") for name in self.names})
        deviation = (recon - recon.mean(dim=0, keepdim=True)) * 255.0
        return (deviation * deviation).mean(dim=(0, 2)).unsqueeze(1)


def scoring_graph(ae: AESc, config: AutoencoderConfig) -> AnomalyGraph:
    """The exported graph for ``config.score`` around the trained ``ae`` (eval mode)."""
    if config.score == "residual":
        return AnomalyGraph(ResidualScorer(ae), UNIT_MEAN, UNIT_STD, size_hw(config.size)).eval()
    graph = AnomalyGraph(
        UncertaintyScorer(ae, config.mc_passes, config.seed), UNIT_MEAN, UNIT_STD, size_hw(config.size)
    ).eval()
    graph.fp16_caution = FP16_CAUTION
    return graph


def stained(images: np.ndarray, rng: np.random.Generator, stains: int) -> np.ndarray:
    """Each image with ``stains`` Stain-noise blobs drawn on it."""
    out = images.copy()
    for image in out:
        for _ in range(stains):
            image[...] = stain(image, rng)[0]
    return out


def fit_autoencoder(
    images: np.ndarray, validation: np.ndarray, config: AutoencoderConfig, folder: Path
) -> tuple[AESc, TrainResult]:
    """Train AESc to map stained images to the clean ones (L2). Model selection: the L2 error
    of repairing fixed stains on ``validation`` (good images it never trains on), negated so
    that higher is better; never the test set."""
    seed_everything(config.seed)
    ae = AESc(config.depth, config.channels, config.kernel_size)
    to_unit = ImageInput(UNIT_MEAN, UNIT_STD)
    optimizer = torch.optim.Adam(ae.parameters(), lr=config.lr)
    n_steps = len(batches(len(images), config.batch_size, epoch_rng(config.seed, 0)))
    val_clean = to_unit(torch.from_numpy(validation))
    val_noisy = to_unit(torch.from_numpy(stained(validation, epoch_rng(config.seed, VALIDATION_STREAM), config.stains)))

    def steps(epoch: int) -> Iterator[dict[str, float]]:
        rng = epoch_rng(config.seed, epoch)
        for step, index in enumerate(batches(len(images), config.batch_size, rng)):
            cosine_lr(optimizer, config.lr, epoch, step, n_steps, config.epochs)
            noisy = to_unit(torch.from_numpy(stained(images[index], rng, config.stains)))
            loss = F.mse_loss(ae(noisy)[0], to_unit(torch.from_numpy(images[index])))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            yield {"mse": loss.item()}

    def validate() -> float:
        errors = [
            F.mse_loss(ae(val_noisy[i : i + 16])[0], val_clean[i : i + 16], reduction="sum")
            for i in range(0, len(val_clean), 16)
        ]
        return -float(sum(errors)) / val_clean.numel()

    result = train(
        {"aesc": ae},
        {"adam": optimizer},
        folder,
        config,
        steps,
        n_steps,
        validate,
        METHOD,
        run_identity(METHOD, config, AFTER_TRAINING),
    )
    return ae.eval(), result


def fit_graph(split: TrainingSplit, config: AutoencoderConfig, folder: Path) -> tuple[AnomalyGraph, dict[str, Any]]:
    """Train on ``split`` and return the scoring graph and the bundle's method_params.
    Validation uses the hold-out's good images (the training images when there is none)."""
    images = load_images(split.train, config.size)
    validation = load_images(split.holdout, config.size) if split.holdout else images
    ae, result = fit_autoencoder(images, validation, config, folder)
    facts = {
        "parameters": sum(p.numel() for p in ae.parameters()),
        "dropout_rates": {name: rate for name, (rate, _) in ae.dropouts.items()},
    }
    return scoring_graph(ae, config), bundle_params(config, result, facts)


def export_autoencoder(data: Path, out: Path, config: AutoencoderConfig | None = None) -> Path:
    """Train AESc with Stain noise on the good images of ``data`` minus the hold-out and write
    the bundle directory ``out``. Returns ``out``."""
    config = config or AutoencoderConfig()
    return export_scratch(data, out, config, METHOD, BACKBONE, lambda split, folder: fit_graph(split, config, folder))


OPTIONS = OptionGroup(
    "autoencoder",
    (
        (
            ("--score",),
            {
                "choices": ("residual", "uncertainty"),
                "help": "anomaly score: |image - reconstruction| (residual; default) or the variance of --mc-passes Monte-Carlo-dropout reconstructions (uncertainty; N times the compute)",
            },
        ),
        (
            ("--mc-passes",),
            {"type": int, "metavar": "N", "help": "dropout passes for --score uncertainty (default 30)"},
        ),
    ),
)
OPTION_GROUPS = (OPTIONS, TRAINING_OPTIONS)
