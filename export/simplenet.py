"""SimpleNet (Liu et al., CVPR 2023): frozen patch features → a trained adaptor (one Linear)
→ a small discriminator trained to tell adapted good features from the same features plus
Gaussian noise; a patch's anomaly score is −D(adapted feature). The noise generator exists
only in training: the exported graph is backbone, adaptor, discriminator and the shared head.

The backbone is frozen, so its features are computed once per image (in ONNX Runtime, from
the same front end that is exported: about 3× faster than PyTorch on CPU for EfficientNet's
depthwise convolutions) and kept as float16; training then touches only the two small heads.
GLASS (``export/glass.py``) builds on the pieces here.

Model selection never looks at the test set: the validation score is the AUROC of held-out
good images against the same images with LAS-style synthetic anomalies
(``export/anomaly_synthesis.py``), image level and patch level, averaged.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from calibration import metrics  # the AUROC edge-eval reports (scikit-learn's)

from .anomaly_synthesis import TextureSource, local_anomaly, patch_labels
from .backbones import FEATURE_STRIDES, Backbone, load_backbone
from .bundle import check_out_dir, write_bundle
from .data import DataError, iter_batches, load_mask, split_training_data
from .graph import INPUT_NAME, OPSET, AnomalyGraph, AnomalyHead, check_size
from .options import OptionGroup
from .patchcore import feature_extractor
from .scratch import checkpoint_dir as checkpoint_folder
from .sizes import Size, resolve_size, size_hw
from .training import RUN_ONLY, TRAINING_OPTIONS, RunOptions, Trainer, TrainResult, run_identity, seed_everything

log = logging.getLogger(__name__)

METHOD = "simplenet"
VALIDATION_VARIANTS = 2  # synthetic anomalies per held-out good image
VALIDATION_STREAM, LAS_STREAM = 1, 2  # separate seeded random streams (see anomaly_rng)
OFFICIAL_BACKBONE = "wide_resnet50_2"
OFFICIAL_NOISE_NORM = 0.015 * math.sqrt(1536)
# σ of the training noise per backbone. SimpleNet's anomalies are normal features pushed off
# the normal feature distribution, so σ must be comparable with its thinnest directions: the
# official 0.015 suits WRN50's 1536-d pooled features, which fill few of their dimensions.
# EfficientNet-Lite0's native 152-d features fill all of theirs (on bottle the narrowest
# principal direction has std 0.26, the median about 1.5): at 0.015 the noise is invisible,
# the discriminator collapses to D ≈ 0 and the loss sticks at 2·margin. 1.0 was chosen on the
# held-out synthetic validation after 4 epochs on bottle: σ 0.015 / 0.5 / 1 / 2 → 0.76 / 0.92 /
# 0.94 / 0.95; 1 is the smallest within 0.01 of the best, and a smaller σ keeps the detector
# sensitive to subtler defects.
NOISE_STD = {OFFICIAL_BACKBONE: 0.015, "efficientnet_lite0": 1.0}


@dataclass
class DiscriminatorConfig(RunOptions):
    """What SimpleNet and GLASS share: the front end, the heads, the training loop (its run
    options from RunOptions)."""

    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    size: int | str = 288  # PX, "HxW" or "auto" (export.sizes); 288: the official crop size
    pretrain_dim: int = 1536  # per-level pooled width (wide backbones only)
    target_dim: int = 1536  # feature width after aggregation (wide backbones only)
    noise_std: float | None = None  # σ of the Gaussian feature noise; None: the backbone's (NOISE_STD)
    hidden_dim: int = 1024  # discriminator's hidden layer
    lr: float = 1e-4  # the adaptor's learning rate (the official base lr)
    discriminator_lr: float = 2e-4
    epochs: int = 160
    batch_size: int = 8  # images per training step (all their patches)
    validate_every: int = 1  # epochs between validations (model selection)
    textures: str | None = None  # texture folder for synthetic anomalies; None: procedural
    foreground: str | None = None  # folder of foreground masks named like the images; None: whole image

    def __post_init__(self) -> None:
        if self.backbone not in NOISE_STD:
            raise ValueError(f"backbone {self.backbone!r}: choose from {', '.join(NOISE_STD)}")
        check_size(self.size, FEATURE_STRIDES[-1], "the deepest feature stride")
        for name in (
            "pretrain_dim",
            "target_dim",
            "hidden_dim",
            "epochs",
            "batch_size",
            "validate_every",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be ≥ 1")
        for name in ("noise_std", "lr", "discriminator_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)}: must be > 0")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience {self.patience}: must be ≥ 1 (or null: no early stopping)")

    @property
    def noise(self) -> float:
        """``noise_std``, or the backbone's default when it is None."""
        return self.noise_std if self.noise_std is not None else NOISE_STD[self.backbone]


@dataclass
class SimpleNetConfig(DiscriminatorConfig):
    """Every knob of a SimpleNet export; ``configs/methods/simplenet.yaml`` mirrors these
    defaults, the official ones (40 meta-epochs × 4 epochs, validated once per meta-epoch)."""

    margin: float = 0.5  # truncated L1: normal ≥ +margin, noised ≤ −margin
    discriminator_weight_decay: float = 1e-5
    validate_every: int = 4


# --- the two heads ---------------------------------------------------------------------------


def make_adaptor(dim: int) -> nn.Linear:
    """The feature adaptor: one Linear(dim, dim), Xavier-normal weights as the official code."""
    adaptor = nn.Linear(dim, dim)
    nn.init.xavier_normal_(adaptor.weight)
    return adaptor


class Discriminator(nn.Module):
    """``[N, D]`` features → ``[N]`` scores: Linear(D, hidden) → BatchNorm → LeakyReLU(0.2) →
    Linear(hidden, 1, no bias), and a sigmoid for GLASS (which trains it with BCE)."""

    def __init__(self, dim: int, hidden: int = 1024, sigmoid: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Linear(hidden, 1, bias=False)
        self.sigmoid = sigmoid
        for layer in (self.body[0], self.tail):
            nn.init.xavier_normal_(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.body(x)).squeeze(-1)
        return out.sigmoid() if self.sigmoid else out


class PatchScorer(nn.Module):
    """Patch features ``[B, D, h, w]`` → patch scores ``[B, 1, h, w]``, higher = more
    anomalous: ``sign · D(adaptor(feature))`` per patch (SimpleNet: sign −1; GLASS: +1)."""

    def __init__(self, adaptor: nn.Module, discriminator: Discriminator, sign: float) -> None:
        super().__init__()
        self.adaptor, self.discriminator, self.sign = adaptor, discriminator, sign

    def rows(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` → ``[N]``."""
        return self.sign * self.discriminator(self.adaptor(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, dim, height, width = features.shape
        return self.rows(features.permute(0, 2, 3, 1).reshape(-1, dim)).reshape(-1, 1, height, width)


def feature_noise(features: torch.Tensor, std: float) -> torch.Tensor:
    """SimpleNet's anomalous features: ``features`` + i.i.d. N(0, std²) per element."""
    return features + std * torch.randn_like(features)


def noise_scale(noise_std: float, dim: int) -> float:
    """The noise's expected norm ``σ·√D`` relative to the official setting's (σ = 0.015 on
    1536-d WRN50 features, ≈ 0.59): the unit in which GLASS's absolute feature-space
    distances (ascent step, manifold radii) were set, so that they keep their meaning."""
    return noise_std * math.sqrt(dim) / OFFICIAL_NOISE_NORM


def truncated_l1_loss(true_scores: torch.Tensor, fake_scores: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """``mean(relu(th − D(normal))) + mean(relu(D(fake) + th))``: zero once good features
    score ≥ th and noised ones ≤ −th, so confidently right patches stop pulling."""
    return F.relu(margin - true_scores).mean() + F.relu(fake_scores + margin).mean()


# --- the frozen front end and its feature cache ----------------------------------------------


class FrozenFeatures:
    """The frozen front end (``uint8 [B, H, W, 3]`` → patch features ``[B, D, h, w]``) run in
    ONNX Runtime. It is the exported graph's own front half, traced the same way, so the
    heads learn from exactly the features the deployed model computes."""

    def __init__(self, extractor: nn.Module, size: Size) -> None:
        import onnxruntime as ort

        buffer = io.BytesIO()
        example = torch.zeros((2, *size, 3), dtype=torch.uint8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes, already weighed in graph.export_onnx
            torch.onnx.export(
                extractor.eval(),
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=["features"],
                dynamic_axes={INPUT_NAME: {0: "B"}, "features": {0: "B"}},
            )
        self.session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(images)})[0]

    def cache(self, images: np.ndarray, batch_size: int, desc: str) -> torch.Tensor:
        """Features of ``uint8 [N, H, W, 3]`` images as ``float16 [N, h, w, D]`` (a patch per
        row once flattened; half the memory of float32, far below the noise σ in precision)."""
        out: torch.Tensor | None = None
        with tqdm(total=len(images), desc=desc, unit="img", leave=False) as bar:
            for start in range(0, len(images), batch_size):
                feats = torch.from_numpy(self(images[start : start + batch_size])).permute(0, 2, 3, 1)
                if out is None:
                    out = torch.empty((len(images), *feats.shape[1:]), dtype=torch.float16)
                out[start : start + len(feats)] = feats
                bar.update(len(feats))
        return out


def load_images(files: Sequence[Path], size: Size, batch_size: int = 32) -> np.ndarray:
    """``uint8 [N, H, W, 3]`` of every file at ``size``, in order."""
    return np.concatenate(list(iter_batches(files, size, batch_size)))


def load_foregrounds(files: Sequence[Path], folder: Path | str | None, size: Size) -> np.ndarray | None:
    """``bool [N, H, W]`` foreground masks, ``folder/<image file name>`` (GLASS's
    fg_mask layout), or None without a folder. A missing mask is an error naming it."""
    if folder is None:
        return None
    masks = []
    for f in files:
        path = Path(folder) / Path(f).name
        if not path.is_file():
            raise DataError(f"--foreground {folder}: no mask {path.name} for training image {f}")
        masks.append(load_mask(path, size))
    return np.stack(masks)


def anomaly_rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """A generator per purpose and round, independent of the global RNG: the anomalies of
    round k are the same whether the run started at epoch 1 or resumed just before k."""
    return np.random.default_rng([seed, stream, index])


def synthesize(
    images: np.ndarray, rng: np.random.Generator, textures: TextureSource, foregrounds: np.ndarray | None, **las: float
) -> tuple[np.ndarray, np.ndarray]:
    """LAS on every image: (``uint8 [N, H, W, 3]``, masks ``bool [N, H, W]``)."""
    pairs = [
        local_anomaly(img, rng, textures, None if foregrounds is None else foregrounds[i], **las)
        for i, img in enumerate(tqdm(images, desc="synthetic anomalies", unit="img", leave=False))
    ]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# --- validation on held-out good images and synthetic anomalies ------------------------------


@dataclass
class SyntheticValidation:
    """Held-out good images and LAS-corrupted copies of them, as cached features."""

    features: torch.Tensor  # float16 [n, h, w, D]: the good images first, then the anomalies
    labels: np.ndarray  # bool [n, h, w]: anomalous patches
    size: Size

    def __call__(self, scorer: PatchScorer) -> float:
        """Mean of image AUROC (score = max of the smoothed map, as deployed) and patch AUROC."""
        n, height, width, dim = self.features.shape
        patch = torch.cat([scorer.rows(chunk.reshape(-1, dim).float()) for chunk in self.features.split(64)])
        patch = patch.reshape(n, 1, height, width)
        _, image_scores = AnomalyHead(self.size)(patch)
        image_auroc = metrics.image_auroc(image_scores.numpy(), self.labels.any(axis=(1, 2)))
        patch_auroc = metrics.pixel_auroc(patch.numpy(), self.labels)
        log.debug("validation: image AUROC %.4f, patch AUROC %.4f", image_auroc, patch_auroc)
        return (image_auroc + patch_auroc) / 2


def build_validation(
    frozen: FrozenFeatures, files: Sequence[Path], config: DiscriminatorConfig, textures: TextureSource
) -> SyntheticValidation:
    good = load_images(files, size_hw(config.size))
    foregrounds = load_foregrounds(files, config.foreground, size_hw(config.size))
    copies = np.concatenate([good] * VALIDATION_VARIANTS)
    fg_copies = None if foregrounds is None else np.concatenate([foregrounds] * VALIDATION_VARIANTS)
    anomalous, masks = synthesize(copies, anomaly_rng(config.seed, VALIDATION_STREAM), textures, fg_copies)
    features = frozen.cache(np.concatenate([good, anomalous]), config.batch_size, "validation features")
    grid = tuple(features.shape[1:3])
    labels = np.concatenate([np.zeros((len(good), *grid), bool), np.stack([patch_labels(m, grid) for m in masks])])
    return SyntheticValidation(features=features, labels=labels, size=size_hw(config.size))


# --- training ----------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What both methods start from: the frozen front end and the cached training features."""

    backbone: Backbone
    extractor: nn.Sequential  # ImageInput → backbone → PatchFeatures (exported as is)
    frozen: FrozenFeatures
    images: np.ndarray  # uint8 [N, H, W, 3]
    features: torch.Tensor  # float16 [N, h, w, D]
    textures: TextureSource
    validation: SyntheticValidation | None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.features.shape[-1]

    @property
    def patches(self) -> int:
        """Patches per image (h·w)."""
        return self.features.shape[1] * self.features.shape[2]

    @property
    def rows(self) -> torch.Tensor:
        """The cache as ``[N·h·w, D]`` rows (a view)."""
        return self.features.view(-1, self.dim)


def prepare(
    files: Sequence[Path], holdout: Sequence[Path], config: DiscriminatorConfig, backbone: Backbone | None = None
) -> Prepared:
    start = time.perf_counter()
    backbone = backbone or load_backbone(config.backbone, config.backbone_weights)
    extractor = feature_extractor(backbone, config)  # reads pretrain_dim / target_dim only
    frozen = FrozenFeatures(extractor, size_hw(config.size))
    textures = TextureSource(config.textures)
    images = load_images(files, size_hw(config.size))
    features = frozen.cache(images, config.batch_size, "features")
    validation = build_validation(frozen, holdout, config, textures) if holdout else None
    if validation is None:
        log.warning("no held-out good images: no model selection, the last epoch is kept")
    seconds = time.perf_counter() - start
    log.info(
        "features: %d images → %s patches × %d (float16) in %.1f s; anomalies from %s textures",
        len(images),
        "×".join(map(str, features.shape[:3])),
        features.shape[-1],
        seconds,
        textures.describe(),
    )
    return Prepared(backbone, extractor, frozen, images, features, textures, validation, {"features": seconds})


def epoch_batches(n_images: int, patches: int, batch_size: int, limit: int | None = None) -> list[torch.Tensor]:
    """One epoch's steps, each every patch of ``batch_size`` images as flat indices into the
    ``[N·h·w, D]`` cache, in a fresh random order (the global torch RNG, which checkpoints
    restore); ``limit`` caps the images an epoch visits."""
    images = torch.randperm(n_images)[:limit].split(batch_size)
    return [(index[:, None] * patches + torch.arange(patches)).reshape(-1) for index in images]


def train(
    scorer: PatchScorer,
    optimizers: dict[str, torch.optim.Optimizer],
    steps: Callable[[int], Iterable[dict[str, float]]],
    steps_per_epoch: int,
    validation: SyntheticValidation | None,
    config: DiscriminatorConfig,
    checkpoint_dir: Path | None,
    desc: str,
) -> TrainResult:
    """The shared Trainer around ``steps``; selects the epoch with the best validation.
    ``desc``: the method's name, also what its checkpoints record (run_identity)."""
    with ExitStack() as stack:
        # Model selection restores the best epoch from its checkpoint: without a folder to
        # keep, one lives for the run.
        directory = checkpoint_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{desc}-")))
        trainer = Trainer(
            {"adaptor": scorer.adaptor, "discriminator": scorer.discriminator},
            optimizers,
            directory,
            every=config.checkpoint_every,
            validate=None if validation is None else lambda: validation(scorer),
            validate_every=config.validate_every,
            patience=config.patience,
            desc=desc,
            identity=run_identity(desc, config),
        )
        if config.resume and not trainer.resume():
            log.warning("--resume: no checkpoint in %s; starting from epoch 1", directory)
        return trainer.fit(config.epochs, steps, steps_per_epoch)


def optimise(loss: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """One step of every optimiser on ``loss`` (the adaptor and the discriminator learn together)."""
    for opt in optimizers.values():
        opt.zero_grad()
    loss.backward()
    for opt in optimizers.values():
        opt.step()


def simplenet_steps(
    prepared: Prepared, scorer: PatchScorer, optimizers: dict[str, torch.optim.Optimizer], config: SimpleNetConfig
) -> Callable[[int], Iterator[dict[str, float]]]:
    adaptor, discriminator = scorer.adaptor, scorer.discriminator
    features, patches = prepared.rows, prepared.patches

    def steps(_epoch: int) -> Iterator[dict[str, float]]:
        for index in epoch_batches(len(prepared.features), patches, config.batch_size):
            true = adaptor(features[index].float())
            scores = discriminator(torch.cat([true, feature_noise(true, config.noise)]))
            true_scores, fake_scores = scores[: len(true)], scores[len(true) :]
            loss = truncated_l1_loss(true_scores, fake_scores, config.margin)
            optimise(loss, optimizers)
            yield {
                "loss": loss.item(),
                "p_true": (true_scores >= config.margin).float().mean().item(),
                "p_fake": (fake_scores <= -config.margin).float().mean().item(),
            }

    return steps


@dataclass
class DiscriminatorModel:
    graph: AnomalyGraph
    backbone: Backbone
    feature_dim: int
    result: TrainResult
    timings_s: dict[str, float]
    textures: str


def scoring_graph(extractor: nn.Sequential, scorer: PatchScorer, size: Size) -> AnomalyGraph:
    """The exported graph: ``extractor``'s backbone and patch front end, the trained heads,
    the shared head. No noise, no synthesis: those exist only in training."""
    _, backbone, front = extractor
    return AnomalyGraph(nn.Sequential(backbone, front, scorer), backbone.info.mean, backbone.info.std, size).eval()


def finish(
    prepared: Prepared, scorer: PatchScorer, result: TrainResult, config: DiscriminatorConfig, train_s: float
) -> DiscriminatorModel:
    scorer.eval()
    return DiscriminatorModel(
        graph=scoring_graph(prepared.extractor, scorer, size_hw(config.size)),
        backbone=prepared.backbone,
        feature_dim=prepared.dim,
        result=result,
        timings_s={**prepared.timings_s, "train": train_s},
        textures=prepared.textures.describe(),
    )


def fit_simplenet(
    files: Sequence[Path],
    holdout: Sequence[Path],
    config: SimpleNetConfig,
    backbone: Backbone | None = None,
    checkpoint_dir: Path | None = None,
) -> DiscriminatorModel:
    """Train SimpleNet's heads on good images ``files``; ``holdout`` (good images, may be
    empty) validates each epoch against synthetic anomalies and picks the kept epoch."""
    prepared = prepare(files, holdout, config, backbone)
    seed_everything(config.seed)
    scorer = PatchScorer(make_adaptor(prepared.dim), Discriminator(prepared.dim, config.hidden_dim), sign=-1.0)
    optimizers = {
        "adaptor": torch.optim.AdamW(scorer.adaptor.parameters(), lr=config.lr),
        "discriminator": torch.optim.Adam(
            scorer.discriminator.parameters(),
            lr=config.discriminator_lr,
            weight_decay=config.discriminator_weight_decay,
        ),
    }
    start = time.perf_counter()
    result = train(
        scorer,
        optimizers,
        simplenet_steps(prepared, scorer, optimizers, config),
        math.ceil(len(files) / config.batch_size),
        prepared.validation,
        config,
        checkpoint_dir,
        METHOD,
    )
    return finish(prepared, scorer, result, config, time.perf_counter() - start)


# --- export ------------------------------------------------------------------------------------


def export_trained(
    method: str, fit: Callable[..., DiscriminatorModel], data: Path, out: Path, config: DiscriminatorConfig
) -> Path:
    """Train ``fit`` on the good images of ``data`` minus the hold-out, write the bundle
    ``out``; checkpoints go where export.scratch.checkpoint_dir says."""
    out = Path(out)
    check_out_dir(out)
    checkpoints = checkpoint_folder(out, config)
    split = split_training_data(Path(data), config.holdout, config.seed)
    config = resolve_size(config, split.train, FEATURE_STRIDES[-1])
    log.info(
        "%s on %d images of %s (%d held out), checkpoints in %s: %s",
        method,
        len(split.train),
        split.root,
        len(split.holdout),
        checkpoints,
        config,
    )
    model = fit(split.train, split.holdout, config, checkpoint_dir=checkpoints)
    r = model.result
    params: dict[str, Any] = {
        **{k: v for k, v in asdict(config).items() if k not in ("backbone", "backbone_weights", "size", *RUN_ONLY)},
        "noise_std": config.noise,
        "textures": model.textures,
        "feature_dim": model.feature_dim,
        "epochs_run": r.epochs_run,
        "kept_epoch": r.best_epoch or r.epochs_run,
        "validation": r.best_score,
        "train_seconds": round(sum(model.timings_s.values()), 1),
        "backbone_weights": Path(model.backbone.info.weights).name,
    }
    start = time.perf_counter()
    write_bundle(
        out,
        model.graph,
        method=method,
        backbone=model.backbone.info.name,
        split=split,
        method_params=params,
        reference=config.reference,
    )
    log.info("export: bundle %s in %.1f s", out, time.perf_counter() - start)
    return out


def export_simplenet(data: Path, out: Path, config: SimpleNetConfig | None = None) -> Path:
    """Train SimpleNet on the good images of ``data`` (an MVTec category or a folder of
    images) minus the hold-out, and write the bundle directory ``out``. Returns ``out``."""
    return export_trained(METHOD, fit_simplenet, data, out, config or SimpleNetConfig())


# The feature-discriminator methods' (SimpleNet, GLASS): DiscriminatorConfig's fields.
SYNTHETIC_ANOMALY_OPTIONS = OptionGroup(
    "synthetic anomaly",
    (
        (
            ("--noise-std",),
            {
                "type": float,
                "metavar": "S",
                "help": "σ of the Gaussian noise added to features in training (default: the backbone's; 0.015 for wide_resnet50_2 as published, 1.0 for efficientnet_lite0)",
            },
        ),
        (
            ("--textures",),
            {
                "metavar": "DIR",
                "help": "texture images for synthetic anomalies, searched recursively (DTD's layout works); default: procedural textures, offline",
            },
        ),
        (
            ("--foreground",),
            {
                "metavar": "DIR",
                "help": "foreground masks named like the training images: synthetic anomalies only on the part (default: anywhere)",
            },
        ),
    ),
)


OPTIONS = OptionGroup(
    "simplenet",
    (
        (
            ("--margin",),
            {
                "type": float,
                "metavar": "M",
                "help": "truncated L1 margin: good patches pushed to D >= M, noised ones to D <= -M (default 0.5)",
            },
        ),
    ),
)
OPTION_GROUPS = (OPTIONS, SYNTHETIC_ANOMALY_OPTIONS, TRAINING_OPTIONS)
