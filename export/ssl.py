"""Self-supervised synthetic-anomaly CNN (docs/methods.md), in two stages, with no pretrained weights:

1. A ResNet-18 trained from scratch to tell three kinds of image apart: good, CutPaste,
   scar-CutPaste (export.augment). The seed's ResNet-50 is not used: a ResNet-18 is the
   variant docs/methods.md describes, and the one a CPU can train. Its down-sampling is the plain
   ResNet's strided convolutions and max-pooling (``downsample: stride``) or, as the seed's
   WaveCNet, a wavelet's low-pass band (``haar``, ``db2``, ``db3``: export.wavelet).
2. Its multi-level features through the shared 3×3 patch front end, scored PatchCore-style
   by the distance to the nearest good patch (a coreset bank, a constant of the graph).
   Levels are combined either by concatenating their features into one bank (``concat``)
   or by multiplying the per-level distance maps (``multiply``), the seed's two fusions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import colour_jitter, cutpaste, scar_cutpaste
from .backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneInfo
from .data import TrainingSplit
from .features import PatchFeatures
from .graph import AnomalyGraph, ImageInput, check_size
from .options import OptionGroup
from .patchcore import (
    BANK_OPTIONS,
    CORESET_METHODS,
    NearestNeighbourScorer,
    extract_patch_features,
    scoring_graph,
    select_coreset,
)
from .scratch import batches, bundle_params, check_run_options, cosine_lr, epoch_rng, export_scratch, load_images, train
from .sizes import size_hw
from .training import TRAINING_OPTIONS, RunOptions, TrainResult, run_identity, seed_everything
from .wavelet import WAVELETS, wavelet_downsampling

if TYPE_CHECKING:
    from torchvision.models import ResNet

METHOD = "ssl"
BACKBONE = "resnet18-ssl"  # bundle.yaml's backbone: trained here, not an ImageNet one
FUSIONS = ("concat", "multiply")
DOWNSAMPLING = ("stride", *WAVELETS)  # stride: torchvision's ResNet-18 | a wavelet: WaveCNet's DWT-LL
CLASSES = ("good", "cutpaste", "scar")
CHANNELS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
# PatchFeatures' target width; ResNet-18's levels together have at most 960 channels, so
# they always keep their native width (3×3 mean per level, levels concatenated).
NATIVE_WIDTH = 1024
VALIDATION_STREAM = 2**31  # epoch_rng "epoch" of the fixed validation views: never a real epoch
# Read only by stage 2: a finished stage 1 resumes into any of them (its checkpoint holds stage 1 alone).
STAGE_2 = ("fusion", "coreset", "coreset_ratio", "projection_dim", "chunk_size", "patches_per_image")


@dataclass(slots=True)
class SSLConfig(RunOptions):
    """Every knob of an ``ssl`` export (the run options come from RunOptions);
    ``configs/methods/ssl.yaml`` mirrors these defaults."""

    size: int | str = 128  # PX, "HxW" or "auto" (export.sizes; see ssl.yaml for why not 256)
    levels: str = "layer2,layer3"  # ResNet-18 stages whose features are scored, comma-separated
    fusion: str = "concat"  # concat: one bank of joined features | multiply: per-level maps multiplied
    downsample: str = "stride"  # stride: strided conv + max-pool | haar, db2, db3: wavelet LL (WaveCNet)
    epochs: int = 10
    lr: float = 0.03  # SGD, momentum 0.9, cosine decay to 0 (CutPaste's recipe)
    weight_decay: float = 3e-5
    jitter: float = 0.1  # colour jitter of whole images and of pasted patches
    batch_size: int = 16  # good images per step; each also yields a CutPaste and a scar view
    coreset: str = "greedy"
    coreset_ratio: float = 0.1  # bank size / all training patches (per level for multiply)
    projection_dim: int = 128
    chunk_size: int = 4096
    patches_per_image: int | None = 1024  # stage 2: random patches kept per image before the coreset; None: all
    checkpoint_every: int = 5  # half of the 10 epochs: RunOptions' 10 would checkpoint only at the end

    def __post_init__(self) -> None:
        check_run_options(self)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion {self.fusion!r}: choose from {', '.join(FUSIONS)}")
        if self.downsample not in DOWNSAMPLING:
            raise ValueError(f"downsample {self.downsample!r}: choose from {', '.join(DOWNSAMPLING)}")
        if self.coreset not in CORESET_METHODS:
            raise ValueError(f"coreset {self.coreset!r}: choose from {', '.join(CORESET_METHODS)}")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio {self.coreset_ratio}: must be in (0, 1]")
        if self.patches_per_image is not None and self.patches_per_image < 1:
            raise ValueError(f"patches_per_image {self.patches_per_image}: must be ≥ 1 (or null: every patch)")
        levels = self.level_names
        # Equal to its known names in stage order only if every name is known, once, in order.
        if not levels or list(levels) != [name for name in CHANNELS if name in levels]:
            raise ValueError(f"levels {self.levels!r}: distinct names from {', '.join(CHANNELS)}, shallow to deep")
        check_size(self.size, self.size_multiple, f"{levels[-1]}'s stride")

    @property
    def size_multiple(self) -> int:
        return STRIDES[self.level_names[-1]]

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.levels.split(",") if name.strip())


# --- stage 1: learn to see synthetic anomalies ------------------------------------------------


def labelled_views(images: np.ndarray, rng: np.random.Generator, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Each image as three views, ``uint8 [3N, H, W, 3]`` with labels ``[3N]`` (indices of
    CLASSES): the good image, then CutPaste and scar-CutPaste of it, all three colour-jittered
    as a whole first so that colour alone never tells them apart."""
    views, labels = [], []
    for image in images:
        good = colour_jitter(image, rng, jitter)
        views += [good, cutpaste(good, rng, jitter=jitter)[0], scar_cutpaste(good, rng, jitter=jitter)[0]]
        labels += range(len(CLASSES))
    return np.stack(views), np.asarray(labels, dtype=np.int64)


def resnet(downsample: str = "stride") -> ResNet:
    """An untrained ResNet-18 with ``downsample``'s down-sampling (DOWNSAMPLING): a wavelet
    replaces its max-pooling and its stride-2 convolutions (the stem's, and the first block's
    of layer2-4 with their shortcuts) by the wavelet's LL band, same feature-map sizes.
    Built so before any checkpoint is loaded into it. The wavelet modules hold no random
    weights: the convolutions' initial weights are those of ``stride`` for the same seed."""
    from torchvision.models import resnet18  # here: torchvision costs seconds to import, and --help needs none of it

    net = resnet18(weights=None)
    if downsample != "stride":
        wavelet_downsampling(net, downsample)
    return net


def stages(net: ResNet) -> dict[str, list[nn.Module]]:
    """ResNet-18's modules by stage: each level's output is its stage's last module's."""
    return {
        "layer1": [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1],
        "layer2": [net.layer2],
        "layer3": [net.layer3],
        "layer4": [net.layer4],
    }


def level_sections(net: ResNet, levels: tuple[str, ...]) -> list[nn.Sequential]:
    """``net`` cut into consecutive sections, the i-th ending at stage ``levels[i]``; nothing
    past the deepest level."""
    sections, pending = [], []
    for name, modules in stages(net).items():
        pending += modules
        if name in levels:
            sections.append(nn.Sequential(*pending))
            pending = []
        if name == levels[-1]:
            break
    return sections


def classifier(net: ResNet, levels: tuple[str, ...]) -> nn.Sequential:
    """``net`` up to the deepest of ``levels``, global average pooling, a linear layer to
    CLASSES: stages past the deepest scored level are never trained, as the exported graph
    never runs them (without layer4, a training step at 128 px costs about a third less)."""
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(CHANNELS[levels[-1]], len(CLASSES))]
    return nn.Sequential(*level_sections(net, levels), *head)


def classify(model: nn.Module, normalise: ImageInput, views: np.ndarray) -> torch.Tensor:
    return model(normalise(torch.from_numpy(views)))


def fit_classifier(
    images: np.ndarray, validation: np.ndarray, config: SSLConfig, folder: Path
) -> tuple[ResNet, TrainResult]:
    """Stage 1: ResNet-18 from scratch, 3-way cross-entropy on good / CutPaste / scar views.
    Model selection: cross-entropy on fixed views of ``validation`` (good images the network
    never trains on), negated so that higher is better; never the test set."""
    seed_everything(config.seed)
    net = resnet(config.downsample)
    model = classifier(net, config.level_names)
    normalise = ImageInput(IMAGENET_MEAN, IMAGENET_STD)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    n_steps = len(batches(len(images), config.batch_size, epoch_rng(config.seed, 0)))
    val_views, val_labels = labelled_views(validation, epoch_rng(config.seed, VALIDATION_STREAM), config.jitter)

    def steps(epoch: int) -> Iterator[dict[str, float]]:
        rng = epoch_rng(config.seed, epoch)
        for step, index in enumerate(batches(len(images), config.batch_size, rng)):
            cosine_lr(optimizer, config.lr, epoch, step, n_steps, config.epochs)
            views, labels = labelled_views(images[index], rng, config.jitter)
            loss = F.cross_entropy(classify(model, normalise, views), torch.from_numpy(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            yield {"loss": loss.item()}

    def validate() -> float:
        logits = torch.cat([classify(model, normalise, val_views[i : i + 48]) for i in range(0, len(val_views), 48)])
        return -F.cross_entropy(logits, torch.from_numpy(val_labels)).item()

    result = train(
        {"classifier": model},
        {"sgd": optimizer},
        folder,
        config,
        steps,
        n_steps,
        validate,
        f"{METHOD} stage 1",
        run_identity(METHOD, config, STAGE_2),
    )
    return net.eval(), result


# --- stage 2: patch density on the trained features -------------------------------------------


def trained_backbone(net: ResNet, levels: tuple[str, ...], weights: str) -> Backbone:
    """The trained network up to its deepest requested stage as a frozen Backbone whose
    levels are ``levels``: what the exported graph runs."""
    info = BackboneInfo(
        name=BACKBONE,
        channels=tuple(CHANNELS[name] for name in levels),
        strides=tuple(STRIDES[name] for name in levels),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=weights,
    )
    return Backbone(level_sections(net, levels), info)


class LevelProduct(nn.Module):
    """Patch features ``[B, ΣC, h, w]`` (the levels' features side by side, as the native
    patch front end lays them out) → the product over levels of each level's distance to
    its own nearest good patch, ``[B, 1, h, w]``: a patch must look normal at every level."""

    def __init__(self, banks: list[torch.Tensor], channels: tuple[int, ...], chunk_size: int) -> None:
        super().__init__()
        self.channels = list(channels)
        self.scorers = nn.ModuleList(NearestNeighbourScorer(bank, chunk_size) for bank in banks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        product = None
        for scorer, level in zip(self.scorers, features.split(self.channels, dim=1)):
            distance = scorer(level)
            product = distance if product is None else product * distance
        return product


def fused_graph(backbone: Backbone, files: list[Path], config: SSLConfig) -> tuple[AnomalyGraph, dict[str, Any]]:
    """Stage 2: bank(s) of good patch features and the exported graph for ``config.fusion``."""
    front = PatchFeatures(backbone.info.channels, NATIVE_WIDTH, NATIVE_WIDTH)
    extractor = nn.Sequential(ImageInput(backbone.info.mean, backbone.info.std), backbone, front).eval()
    features = extract_patch_features(
        extractor, files, size_hw(config.size), config.batch_size, config.patches_per_image, config.seed
    )
    if config.fusion == "concat":
        bank = torch.from_numpy(features[select_coreset(features, config)])
        # PatchCore's graph builder and coreset read only fields SSLConfig shares with its config.
        return scoring_graph(extractor, bank, config), {
            "bank_size": len(bank),
            "feature_dim": features.shape[1],
            "training_patches": len(features),
        }
    per_level = np.split(features, np.cumsum(backbone.info.channels)[:-1], axis=1)
    banks = [torch.from_numpy(level[select_coreset(level, config)]) for level in per_level]
    scorer = nn.Sequential(backbone, front, LevelProduct(banks, backbone.info.channels, config.chunk_size))
    graph = AnomalyGraph(scorer, backbone.info.mean, backbone.info.std, size_hw(config.size)).eval()
    return graph, {
        "bank_size": [len(b) for b in banks],
        "feature_dim": list(backbone.info.channels),
        "training_patches": len(features),
    }


def fit_graph(split: TrainingSplit, config: SSLConfig, folder: Path) -> tuple[AnomalyGraph, dict[str, Any]]:
    """Both stages on ``split``: returns the scoring graph and the bundle's method_params.
    Validation uses the hold-out's good images (or the training images when there is no
    hold-out), with synthetic anomalies drawn on them."""
    images = load_images(split.train, config.size)
    validation = load_images(split.holdout, config.size) if split.holdout else images
    net, result = fit_classifier(images, validation, config, folder)
    backbone = trained_backbone(net, config.level_names, str(folder))
    graph, facts = fused_graph(backbone, split.train, config)
    return graph, bundle_params(config, result, facts)


def export_ssl(data: Path, out: Path, config: SSLConfig | None = None) -> Path:
    """Train the self-supervised CNN on the good images of ``data`` minus the hold-out and
    write the bundle directory ``out``. Returns ``out``."""
    config = config or SSLConfig()
    return export_scratch(data, out, config, METHOD, BACKBONE, lambda split, folder: fit_graph(split, config, folder))


OPTIONS = OptionGroup(
    "ssl",
    (
        (
            ("--fusion",),
            {
                "choices": ("concat", "multiply"),
                "help": "how the network's levels are combined: one nearest-neighbour bank of their joined features (concat; default) or the product of per-level distance maps (multiply)",
            },
        ),
        (
            ("--levels",),
            {
                "metavar": "L1,L2",
                "help": "ResNet-18 stages scored, comma-separated, from layer1..layer4 (default layer2,layer3)",
            },
        ),
        (
            ("--downsample",),
            {
                "choices": ("stride", "haar", "db2", "db3"),
                "help": "how the ResNet-18 halves its feature maps: strided convolutions and max-pooling (stride; default) or, as the seed's WaveCNet, the low-pass (LL) band of a wavelet transform (haar, db2, db3: longer, smoother filters), which aliases less noise into the features; same feature sizes and bundle contract, plain Conv ops. Costs about 1.5x the backbone's FLOPs (its strided convolutions run at stride 1) and 1.3-1.8x the training time; measured on bottle: no clear gain over stride (BENCHMARKS.md)",
            },
        ),
    ),
)
OPTION_GROUPS = (OPTIONS, TRAINING_OPTIONS, BANK_OPTIONS)
