"""GLASS (Chen et al., ECCV 2024): SimpleNet's front end, adaptor and discriminator (with a
sigmoid, trained with BCE), fed two kinds of synthetic anomalies:

- GAS, global, in feature space: normal feature + Gaussian noise, pushed by gradient
  *ascent* on the discriminator's loss towards what it calls normal (hard, near-normal
  anomalies), with a truncated projection every few steps that keeps the result in a shell:
  around the normal feature itself (manifold mode) or around the feature centre of its
  position (hypersphere mode, radii from the normal features' own distances).
- LAS, local, in image space: textured Perlin-noise regions (``export/anomaly_synthesis.py``),
  whose patch features are labelled by the mask; focal loss on the hardest half of them.

The syntheses exist only in training: the exported graph is SimpleNet's, scoring D(feature).

LAS images need backbone features of their own: one LAS variant per training image is made
and its features cached per *round*; a round lasts ``las_every`` epochs (1, the official
setting, makes fresh anomalies every epoch; more rounds trade variety for CPU time). A
round's anomalies depend only on (seed, round), so ``--resume`` regenerates them exactly.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .anomaly_synthesis import patch_labels
from .backbones import Backbone
from .options import OptionGroup
from .simplenet import (
    LAS_STREAM,
    SYNTHETIC_ANOMALY_OPTIONS,
    Discriminator,
    DiscriminatorConfig,
    DiscriminatorModel,
    PatchScorer,
    Prepared,
    anomaly_rng,
    epoch_batches,
    export_trained,
    feature_noise,
    finish,
    load_foregrounds,
    make_adaptor,
    noise_scale,
    optimise,
    prepare,
    synthesize,
    train,
)
from .sizes import size_hw
from .training import TRAINING_OPTIONS, seed_everything

log = logging.getLogger(__name__)

METHOD = "glass"
MODES = ("manifold", "hypersphere")


@dataclass
class GlassConfig(DiscriminatorConfig):
    """Every knob of a GLASS export; ``configs/methods/glass.yaml`` mirrors these defaults, the
    official ones (run-mvtec.sh). Feature-space distances (step, manifold radii) are in the
    units of the official setting (WRN50 features, σ = 0.015) and scale with the noise's
    expected norm on other features, so they keep their meaning."""

    epochs: int = 640
    mode: str = "hypersphere"  # GAS shell: around the centre (hypersphere) or the feature (manifold)
    gas_steps: int = 20  # gradient-ascent steps per training step
    gas_step_size: float = 0.001  # length of each ascent step
    project_every: int = 5  # ascent steps between truncated projections
    manifold_min: float = 0.5  # manifold mode: ‖GAS − normal‖ kept in [min, max]
    manifold_max: float = 1.0
    radius_quantile: float = 0.75  # hypersphere mode: r = this quantile of normal distances to the centre
    hard_mining: float = 0.5  # LAS patches below this quantile of squared error are left out of the focal loss
    beta_mean: float = 0.5  # LAS: β ~ N(mean, std), clipped to [0.2, 0.8]
    beta_std: float = 0.1
    las_every: int = 1  # epochs per round of LAS images (1: fresh ones every epoch)
    images_per_epoch: int | None = 392  # the official "limit": an epoch stops after about this many images
    adaptor_weight_decay: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: choose from {', '.join(MODES)}")
        for name in ("project_every", "las_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be ≥ 1")
        if self.gas_steps < 0:
            raise ValueError(f"gas_steps {self.gas_steps}: must be ≥ 0")
        if not 0 < self.manifold_min <= self.manifold_max:
            raise ValueError(f"manifold radii [{self.manifold_min}, {self.manifold_max}]: need 0 < min ≤ max")
        for name in ("radius_quantile", "hard_mining"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} {getattr(self, name)}: must be in [0, 1)")
        if self.images_per_epoch is not None and self.images_per_epoch < 1:
            raise ValueError(f"images_per_epoch {self.images_per_epoch}: must be ≥ 1, or null: all")


# --- GAS ---------------------------------------------------------------------------------------


def truncated_projection(
    x: torch.Tensor, base: torch.Tensor, low: float | torch.Tensor, high: float | torch.Tensor
) -> torch.Tensor:
    """Each row of ``x`` moved along its offset from ``base`` (a row each, or one row) so
    that ``‖x − base‖`` lies in [low, high]; rows already inside do not move."""
    offset = x - base
    norm = offset.norm(dim=1, keepdim=True)
    clamped = torch.minimum(torch.maximum(norm, torch.as_tensor(low)), torch.as_tensor(high))
    return base + offset * (clamped / (norm + 1e-10))


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def gradient_ascent(
    discriminator: Discriminator,
    start: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    step_size: float,
    project_every: int,
) -> torch.Tensor:
    """GAS: ``steps`` normalised steps of ``step_size`` up the gradient of BCE(D(x), anomalous),
    i.e. towards what D scores as normal, with ``project`` applied every ``project_every``
    steps. D runs in eval mode: the probe passes must not move BatchNorm's running
    statistics, and the ascent should face D as it will score. No weight gradients."""
    x = start.detach()
    with eval_mode(discriminator):
        for step in range(1, steps + 1):
            x.requires_grad_(True)
            scores = discriminator(x)
            loss = F.binary_cross_entropy(scores, torch.ones_like(scores))
            (grad,) = torch.autograd.grad(loss, [x])
            x = x.detach() + step_size * grad / (grad.norm(dim=1, keepdim=True) + 1e-10)
            if step % project_every == 0:
                x = project(x)
    return x.detach()


# --- losses --------------------------------------------------------------------------------------


def focal_loss(probs: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss on probabilities: ``mean(−(1 − p_t)^γ · log p_t)``, p_t the
    probability given to the true class."""
    p_true_class = torch.where(targets.bool(), probs, 1 - probs).clamp_min(1e-10)
    return (-((1 - p_true_class) ** gamma) * p_true_class.log()).mean()


def hard_focal_loss(probs: torch.Tensor, targets: torch.Tensor, mining: float) -> torch.Tensor:
    """Focal loss over the patches whose squared error ``(p − y)²`` is at or above its
    ``mining`` quantile (0.5: the harder half; 0: all)."""
    if mining > 0:
        error = (probs.detach() - targets.float()) ** 2
        hard = error >= torch.quantile(error, mining)
        probs, targets = probs[hard], targets[hard]
    return focal_loss(probs, targets)


# --- LAS rounds --------------------------------------------------------------------------------


class LasRounds:
    """The current round's LAS features ``[N·h·w, D]`` (float16) and patch labels ``[N·h·w]``,
    made again when an epoch starts a new round."""

    def __init__(self, prepared: Prepared, foregrounds: np.ndarray | None, config: GlassConfig) -> None:
        self.prepared, self.foregrounds, self.config = prepared, foregrounds, config
        self.round: int | None = None
        self.rows = torch.empty(0)
        self.labels = torch.empty(0, dtype=torch.bool)

    def for_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        current = (epoch - 1) // self.config.las_every
        if current != self.round:
            self._make(current)
        return self.rows, self.labels

    def _make(self, current: int) -> None:
        p, config = self.prepared, self.config
        start = time.perf_counter()
        images, masks = synthesize(
            p.images,
            anomaly_rng(config.seed, LAS_STREAM, current),
            p.textures,
            self.foregrounds,
            beta_mean=config.beta_mean,
            beta_std=config.beta_std,
        )
        features = p.frozen.cache(images, config.batch_size, f"LAS round {current + 1} features")
        grid = tuple(features.shape[1:3])
        self.rows = features.view(-1, features.shape[-1])
        self.labels = torch.from_numpy(np.stack([patch_labels(m, grid) for m in masks])).reshape(-1)
        self.round = current
        log.info(
            "LAS round %d: %d images, %.1f%% anomalous patches, in %.1f s",
            current + 1,
            len(images),
            100 * self.labels.float().mean().item(),
            time.perf_counter() - start,
        )


# --- training ----------------------------------------------------------------------------------


@torch.no_grad()
def position_centres(adaptor: nn.Module, rows: torch.Tensor, patches: int, chunk: int = 16) -> torch.Tensor:
    """``[h·w, D]``: the mean adapted feature at each patch position over all images (GLASS's
    centre c, recomputed every epoch as the adaptor moves)."""
    n_images = len(rows) // patches
    total = torch.zeros(patches, adaptor.out_features)
    for start in range(0, n_images, chunk):
        block = rows[start * patches : min(start + chunk, n_images) * patches].float()
        total += adaptor(block).reshape(-1, patches, total.shape[1]).sum(dim=0)
    return total / n_images


def gas_and_las(
    discriminator: Discriminator,
    true: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    centre: torch.Tensor | None,
    config: GlassConfig,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(GAS features made from the adapted normal features ``true``, the LAS features ``fake``
    ready for the loss). Hypersphere mode (``centre`` given, a row per feature): shells
    around the centres, r from this batch's normal distances; manifold mode: around ``true``."""
    if centre is not None:
        distances = torch.cat([(fake - centre)[~labels], true - centre]).detach().norm(dim=1)
        radius = torch.quantile(distances, config.radius_quantile)
        project = partial(truncated_projection, base=centre, low=radius, high=2 * radius)
        # Textured anomalies are pushed out past the GAS shell: [2r, 4r] from the centre.
        fake = torch.where(labels[:, None], truncated_projection(fake, centre, 2 * radius, 4 * radius), fake)
    else:
        project = partial(
            truncated_projection, base=true.detach(), low=config.manifold_min * scale, high=config.manifold_max * scale
        )
    ascended = gradient_ascent(
        discriminator,
        feature_noise(true.detach(), config.noise),
        project,
        config.gas_steps,
        config.gas_step_size * scale,
        config.project_every,
    )
    # The ascended values, with the adaptor still learning through `true`.
    return true + (ascended - true.detach()), fake


def glass_loss(
    discriminator: Discriminator,
    true: torch.Tensor,
    gas: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    mining: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE (normal → 0, GAS → 1) + focal loss on the hard LAS patches; and the progress metrics."""
    scores = discriminator(torch.cat([true, gas]))
    true_scores, gas_scores = scores[: len(true)], scores[len(true) :]
    bce = F.binary_cross_entropy(true_scores, torch.zeros_like(true_scores)) + F.binary_cross_entropy(
        gas_scores, torch.ones_like(gas_scores)
    )
    fake_scores = discriminator(fake)
    focal = hard_focal_loss(fake_scores, labels, mining)
    loss = bce + focal
    return loss, {
        "loss": loss.item(),
        "focal": focal.item(),
        "p_true": (true_scores < 0.5).float().mean().item(),
        "p_gas": (gas_scores >= 0.5).float().mean().item(),
        "p_las": (fake_scores[labels] >= 0.5).float().mean().nan_to_num(1.0).item(),
    }


def glass_steps(
    prepared: Prepared,
    scorer: PatchScorer,
    optimizers: dict[str, torch.optim.Optimizer],
    config: GlassConfig,
    las: LasRounds,
) -> Callable[[int], Iterator[dict[str, float]]]:
    adaptor, discriminator = scorer.adaptor, scorer.discriminator
    rows, patches = prepared.rows, prepared.patches
    scale = noise_scale(config.noise, prepared.dim)

    def steps(epoch: int) -> Iterator[dict[str, float]]:
        las_rows, las_labels = las.for_epoch(epoch)
        centres = position_centres(adaptor, rows, patches) if config.mode == "hypersphere" else None
        for index in epoch_batches(len(prepared.features), patches, config.batch_size, config.images_per_epoch):
            true = adaptor(rows[index].float())
            labels = las_labels[index]
            gas, fake = gas_and_las(
                discriminator,
                true,
                adaptor(las_rows[index].float()),
                labels,
                None if centres is None else centres[index % patches],
                config,
                scale,
            )
            loss, metrics = glass_loss(discriminator, true, gas, fake, labels, config.hard_mining)
            optimise(loss, optimizers)
            yield metrics

    return steps


def fit_glass(
    files: Sequence[Path],
    holdout: Sequence[Path],
    config: GlassConfig,
    backbone: Backbone | None = None,
    checkpoint_dir: Path | None = None,
) -> DiscriminatorModel:
    """Train GLASS's heads on good images ``files``; ``holdout`` (good images, may be empty)
    validates each epoch against synthetic anomalies and picks the kept epoch."""
    prepared = prepare(files, holdout, config, backbone)
    las = LasRounds(prepared, load_foregrounds(files, config.foreground, size_hw(config.size)), config)
    seed_everything(config.seed)
    scorer = PatchScorer(
        make_adaptor(prepared.dim), Discriminator(prepared.dim, config.hidden_dim, sigmoid=True), sign=1.0
    )
    optimizers = {
        "adaptor": torch.optim.Adam(
            scorer.adaptor.parameters(), lr=config.lr, weight_decay=config.adaptor_weight_decay
        ),
        "discriminator": torch.optim.AdamW(scorer.discriminator.parameters(), lr=config.discriminator_lr),
    }
    start = time.perf_counter()
    result = train(
        scorer,
        optimizers,
        glass_steps(prepared, scorer, optimizers, config, las),
        math.ceil(min(len(files), config.images_per_epoch or len(files)) / config.batch_size),
        prepared.validation,
        config,
        checkpoint_dir,
        METHOD,
    )
    return finish(prepared, scorer, result, config, time.perf_counter() - start)


def export_glass(data: Path, out: Path, config: GlassConfig | None = None) -> Path:
    """Train GLASS on the good images of ``data`` (an MVTec category or a folder of images)
    minus the hold-out, and write the bundle directory ``out``. Returns ``out``."""
    return export_trained(METHOD, fit_glass, data, out, config or GlassConfig())


OPTIONS = OptionGroup(
    "glass",
    (
        (
            ("--mode",),
            {
                "choices": ("hypersphere", "manifold"),
                "help": "GAS shell: around each position's feature centre (hypersphere; default) or around the normal feature itself (manifold)",
            },
        ),
        (
            ("--gas-steps",),
            {
                "type": int,
                "metavar": "N",
                "help": "gradient-ascent steps per training step (default 20; most of GLASS's training time)",
            },
        ),
        (
            ("--las-every",),
            {
                "type": int,
                "metavar": "N",
                "help": "epochs between new textured anomaly images (default 1: fresh ones every epoch; each round costs one backbone pass over the training images)",
            },
        ),
    ),
)
OPTION_GROUPS = (OPTIONS, SYNTHETIC_ANOMALY_OPTIONS, TRAINING_OPTIONS)
