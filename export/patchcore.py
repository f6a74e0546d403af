"""PatchCore (Roth et al., CVPR 2022): a memory bank of good patch features, thinned by a
greedy k-center coreset; a patch's anomaly score is its distance to the nearest bank
feature, computed inside the exported graph with the bank as a constant. Optionally the
image score is reweighted by the density of the bank around the worst patch's match (the
paper's eq. 7).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .backbones import FEATURE_STRIDES, Backbone, load_backbone
from .bundle import check_out_dir, write_bundle
from .data import iter_batches, split_training_data
from .features import PatchFeatures
from .graph import AnomalyGraph, ImageInput, check_size
from .options import OptionGroup
from .sizes import DEFAULT_PIXEL_BUDGET, Size, parse_size, resolve_size, size_hw
from .tiling import Tiling, check_tiling
from .training import RUN_ONLY

log = logging.getLogger(__name__)

METHOD = "patchcore"
CORESET_METHODS = ("greedy", "random")
# In bundle.yaml elsewhere (backbone, input size) or as the tiling section.
UNRECORDED = ("backbone", "backbone_weights", "size", "tile", "tile_overlap")


@dataclass(slots=True)
class PatchCoreConfig:
    """Every knob of a PatchCore export; ``configs/methods/patchcore.yaml`` mirrors these
    defaults (official ones where the paper has them)."""

    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    size: int | str = 256  # model input: PX (square), "HxW" or "auto" (export.sizes); sides multiples of 16
    pixel_budget: int = DEFAULT_PIXEL_BUDGET  # size auto: pixels of the working resolution
    coreset: str = "greedy"
    coreset_ratio: float = 0.1  # bank size / all training patches; 0.01–0.25 is the useful range
    projection_dim: int = 128  # random projection the greedy search measures distances in
    pretrain_dim: int = 1536  # per-level pooled width (wide backbones only)
    target_dim: int = 1024  # feature width after aggregation (wide backbones only)
    chunk_size: int = 1024  # bank rows per distance block in the graph (BENCHMARKS.md: chunk size)
    patches_per_image: int | None = 1024  # random patches kept per training image before the coreset; None: all
    tile: int | None = None  # px: the model runs on tile × tile cuts of the frame (export.tiling); None: whole frame
    tile_overlap: int = 32  # px shared by neighbouring tiles (averaged where they overlap)
    reweight_neighbours: int = 0  # b of the paper's eq. 7 (anomalib: 9); 0 = score is the map's max
    holdout: float = 0.1  # fraction of good images kept for calibration
    seed: int = 0
    batch_size: int = 8
    reference: bool = False  # also score DATA's labelled test set in PyTorch (reference.npz)

    def __post_init__(self) -> None:
        if self.coreset not in CORESET_METHODS:
            raise ValueError(f"coreset {self.coreset!r}: choose from {', '.join(CORESET_METHODS)}")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio {self.coreset_ratio}: must be in (0, 1]")
        check_size(self.size, FEATURE_STRIDES[-1], "the deepest feature stride")
        for name in ("projection_dim", "pretrain_dim", "target_dim", "chunk_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be ≥ 1")
        if self.reweight_neighbours == 1 or self.reweight_neighbours < 0:
            # b = 1: the softmax over the match alone is 1, so every score would be 0.
            raise ValueError(
                f"reweight_neighbours {self.reweight_neighbours}: must be 0 (off) or ≥ 2 "
                f"(the paper's neighbourhood size; 9 in anomalib)"
            )
        if self.patches_per_image is not None and self.patches_per_image < 1:
            raise ValueError(f"patches_per_image {self.patches_per_image}: must be ≥ 1 (or null: every patch)")
        if self.tile is not None:
            check_size(self.tile, FEATURE_STRIDES[-1], "the deepest feature stride")
            if self.reweight_neighbours:
                raise ValueError("reweight_neighbours: not with tile (a tiled score is the stitched map's maximum)")
            if parse_size(self.size) != "auto":
                check_tiling(size_hw(self.size), self.tile, self.tile_overlap, FEATURE_STRIDES[0], FEATURE_STRIDES[-1])

    @property
    def tiling(self) -> Tiling | None:
        if self.tile is None:
            return None
        return Tiling(size_hw(self.size), self.tile, self.tile_overlap, FEATURE_STRIDES[0])


@dataclass(slots=True)
class PatchCoreModel:
    graph: AnomalyGraph
    backbone: Backbone
    feature_dim: int
    bank_size: int
    n_patches: int  # training patches the coreset was drawn from
    timings_s: dict[str, float] = field(default_factory=dict)


def neighbour_table(bank: torch.Tensor, k: int, block_bytes: int = 2**26) -> torch.Tensor:
    """``int64 [M, k]``: each bank row's own index, then its ``k − 1`` nearest other rows,
    nearest first. Built block by block (``block_bytes`` of distances at a time), so a
    50000-row bank needs tens of MB here, never the ``M × M`` matrix."""
    bank = bank.float()
    bank = bank - bank.mean(dim=0)  # as in the scorer: ‖a‖² − 2ab + ‖b‖² stays accurate
    squared = (bank * bank).sum(dim=1)
    rows = max(1, block_bytes // (4 * len(bank)))
    table = torch.empty(len(bank), k, dtype=torch.int64)
    for start in range(0, len(bank), rows):
        block = bank[start : start + rows]
        distances = squared[start : start + rows, None] - 2.0 * block @ bank.T + squared
        # The row itself goes first whatever its duplicates: eq. 7's numerator is m* itself.
        distances[torch.arange(len(block)), torch.arange(start, start + len(block))] = -math.inf
        table[start : start + len(block)] = distances.topk(k, dim=1, largest=False).indices
    return table


class NearestNeighbourScorer(nn.Module):
    """Patch features ``[B, D, h, w]`` → distance to the nearest bank row ``[B, 1, h, w]``.

    ``min_j ‖a − b_j‖² = ‖a‖² + min_j (‖b_j‖² − 2 a·b_j)``: one matmul per block of
    ``chunk_size`` bank rows, reduced to its minimum at once, so memory is
    ``B·h·w·chunk_size`` floats however large the bank (never ``B·h·w·M·D``). Bank and
    features are centred on the bank mean first: distances do not change, magnitudes
    shrink, which keeps ‖a‖² − 2ab + ‖b‖² accurate in fp16 engines.

    With ``reweight_neighbours = b ≥ 2`` it returns ``(patch scores, weight [B])`` instead,
    the image score's factor of the paper's eq. 7 (see ``density_weight``).
    """

    def __init__(self, bank: torch.Tensor, chunk_size: int = 1024, reweight_neighbours: int = 0) -> None:
        super().__init__()
        bank = bank.float()
        mean = bank.mean(dim=0)
        centred = bank - mean
        self.register_buffer("mean", mean.reshape(1, 1, -1))
        # Stored as −2·chunkᵀ, pre-split: the graph holds one plain MatMul constant per chunk
        # and spends no multiply on the B·P·chunk product.
        for i, chunk in enumerate(centred.split(chunk_size)):
            self.register_buffer(f"bank_t{i}", -2.0 * chunk.T.contiguous())
            self.register_buffer(f"bank_sq{i}", (chunk * chunk).sum(dim=1))
        self.n_chunks = math.ceil(len(bank) / chunk_size)
        self.dim = bank.shape[1]
        self.reweight_neighbours = reweight_neighbours
        if reweight_neighbours:
            if reweight_neighbours > len(bank):
                raise ValueError(f"reweight_neighbours {reweight_neighbours}: the bank has only {len(bank)} rows")
            start = time.perf_counter()
            # Neighbours within the bank are fixed at export: the graph only looks them up.
            self.register_buffer("support", neighbour_table(centred, reweight_neighbours))
            log.info(
                "reweighting: %d nearest neighbours of %d bank rows in %.1f s",
                reweight_neighbours,
                len(bank),
                time.perf_counter() - start,
            )

    def _expanded(self, a: torch.Tensor, i: int) -> torch.Tensor:
        """``‖b_j‖² − 2 a·b_j`` for chunk ``i``'s rows: ``[..., chunk]``."""
        return a @ getattr(self, f"bank_t{i}") + getattr(self, f"bank_sq{i}")

    def forward(self, features: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = features.shape[-2:]
        a = features.flatten(2).transpose(1, 2) - self.mean  # [B, P, D]
        best = None
        for i in range(self.n_chunks):
            partial = self._expanded(a, i).amin(dim=-1)
            best = partial if best is None else torch.minimum(best, partial)
        a_squared = (a * a).sum(dim=-1)
        scores = (best + a_squared).clamp_min(0.0).sqrt()  # [B, P]
        patch_scores = scores.reshape(-1, 1, height, width)
        if not self.reweight_neighbours:
            return patch_scores
        return patch_scores, self.density_weight(a, a_squared, scores)

    def density_weight(self, a: torch.Tensor, a_squared: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Eq. 7's factor ``1 − softmax(‖a* − n‖ for n in N_b(m*))[m*]``, ``[B]``: a* is the
        worst patch (raw scores, before smoothing), m* its nearest bank row, N_b(m*) = m* and
        its b − 1 nearest bank rows (the precomputed table). Lies in [1 − 1/b, 1): m* is a*'s
        nearest row, so its term is the softmax's smallest."""
        worst = scores.argmax(dim=1, keepdim=True)  # [B, 1]
        # Tile by a constant width, not expand(-1, -1, D), which exports as shape arithmetic
        # (Equal, Where) for TensorRT's parser to resolve.
        a_worst = a.gather(1, worst.unsqueeze(-1).repeat(1, 1, self.dim))  # [B, 1, D]
        # a*'s expanded distance to every bank row, [B, 1, M]: the scorer's own arithmetic
        # (centred, so fp16-safe), B rows instead of B·P, and B·M floats in memory.
        # The support distances are then gathered from it: no second copy of the bank.
        expanded = torch.cat([self._expanded(a_worst, i) for i in range(self.n_chunks)], dim=-1)
        nearest = expanded.argmin(dim=-1).squeeze(1)  # [B]
        support = self.support.index_select(0, nearest).unsqueeze(1)  # [B, 1, b]
        squared = expanded.gather(2, support).squeeze(1) + a_squared.gather(1, worst)
        distances = squared.clamp_min(0.0).sqrt()  # [B, b]; column 0 is m*
        # softmax subtracts the row's maximum first: exp never overflows, even in fp16.
        return 1.0 - distances.softmax(dim=-1)[:, 0]


def feature_extractor(backbone: Backbone, config: PatchCoreConfig) -> nn.Sequential:
    """``uint8 [B, H, W, 3]`` → patch features ``[B, D, h, w]``: the exported graph's own
    front half, so the bank is built from exactly what the deployed model computes."""
    front = PatchFeatures(backbone.info.channels, config.pretrain_dim, config.target_dim)
    return nn.Sequential(ImageInput(backbone.info.mean, backbone.info.std), backbone, front).eval()


def scoring_graph(extractor: nn.Sequential, bank: torch.Tensor, config: PatchCoreConfig) -> AnomalyGraph:
    """The exported graph: ``extractor``'s backbone and patch front end, nearest-neighbour
    distance to ``bank`` (a constant of the graph), the shared head."""
    _, backbone, front = extractor
    # SSL's config comes through here too and has no reweighting.
    reweight = getattr(config, "reweight_neighbours", 0)
    scorer: nn.Module = nn.Sequential(backbone, front, NearestNeighbourScorer(bank, config.chunk_size, reweight))
    tiling = getattr(config, "tiling", None)
    if tiling is not None:
        scorer = tiling.wrap(scorer)
    return AnomalyGraph(scorer, backbone.info.mean, backbone.info.std, size_hw(config.size)).eval()


@torch.no_grad()
def extract_patch_features(
    extractor: nn.Module,
    files: Sequence[Path],
    size: Size,
    batch_size: int,
    per_image: int | None = None,
    seed: int = 0,
    tiling: Tiling | None = None,
) -> np.ndarray:
    """Patch features of every image, ``float32 [rows, D]``, in file order: all of them, or
    ``per_image`` of each image's patches drawn at random (seeded per image), so that memory
    is ``len(files) · per_image · D`` floats whatever the resolution. With ``tiling``, an
    image's patches are those of all its tiles, each tile run through ``extractor`` alone."""
    out: np.ndarray | None = None
    row = 0
    image = 0
    with tqdm(total=len(files), desc="features", unit="img") as bar:
        for batch in iter_batches(files, size, batch_size):
            inputs = batch if tiling is None else tiling.cut(batch)
            feats = extractor(torch.from_numpy(inputs))
            per = feats.permute(0, 2, 3, 1).reshape(len(batch), -1, feats.shape[1]).numpy()
            keep = per.shape[1] if per_image is None else min(per_image, per.shape[1])
            if out is None:
                out = np.empty((len(files) * keep, per.shape[2]), dtype=np.float32)
            for patches in per:
                if keep < len(patches):
                    picked = np.random.default_rng([seed, image]).choice(len(patches), keep, replace=False)
                    patches = patches[np.sort(picked)]
                out[row : row + keep] = patches
                row, image = row + keep, image + 1
            bar.update(len(batch))
    assert out is not None
    return out


def greedy_coreset(features: np.ndarray, n: int, projection_dim: int = 128, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows chosen by greedy k-center (farthest point first), measured in a
    seeded random projection to ``projection_dim`` dimensions; the first row is a seeded
    random pick. Cost: ``n`` matrix-vector passes over the projected rows."""
    rng = np.random.default_rng(seed)
    x = np.asarray(features, dtype=np.float32)
    if projection_dim < x.shape[1]:
        projection = rng.standard_normal((x.shape[1], projection_dim), dtype=np.float32)
        x = x @ (projection / np.float32(math.sqrt(projection_dim)))
    # Column-major ([dim, N]): BLAS streams it at about twice the speed of the row-major
    # matrix-vector product here, and this loop is bound by reading it once per step.
    xt = np.ascontiguousarray(x.T)
    squared = np.einsum("dn,dn->n", xt, xt)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = rng.integers(len(squared))
    # Squared distance of every row to its nearest chosen row; float32, updated in place.
    nearest = np.full(len(squared), np.inf, dtype=np.float32)
    step = np.empty_like(nearest)
    for i in tqdm(range(n), desc="coreset", unit="pt", mininterval=1.0):
        if i:
            chosen[i] = nearest.argmax()
        centre = chosen[i]
        np.matmul(xt[:, centre] * np.float32(-2.0), xt, out=step)
        step += squared
        step += squared[centre]
        np.minimum(nearest, step, out=nearest)
    return chosen


def random_coreset(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows drawn uniformly without replacement (the weaker baseline)."""
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def select_coreset(features: np.ndarray, config: PatchCoreConfig) -> np.ndarray:
    n = max(1, round(config.coreset_ratio * len(features)))
    if config.coreset == "random":
        return random_coreset(len(features), n, config.seed)
    return greedy_coreset(features, n, config.projection_dim, config.seed)


def fit_patchcore(files: Sequence[Path], config: PatchCoreConfig, backbone: Backbone | None = None) -> PatchCoreModel:
    """Build the memory bank from good images ``files`` and return the scoring graph."""
    backbone = backbone or load_backbone(config.backbone, config.backbone_weights)
    extractor = feature_extractor(backbone, config)
    timings = {}

    start = time.perf_counter()
    features = extract_patch_features(
        extractor,
        files,
        size_hw(config.size),
        config.batch_size,
        config.patches_per_image,
        config.seed,
        config.tiling,
    )
    timings["features"] = time.perf_counter() - start
    log.info(
        "features: %d images → %d patches × %d held (≤ %s per image: %.0f MB) in %.1f s",
        len(files),
        *features.shape,
        config.patches_per_image or "all",
        features.nbytes / 2**20,
        timings["features"],
    )

    start = time.perf_counter()
    bank = torch.from_numpy(features[select_coreset(features, config)])
    timings["coreset"] = time.perf_counter() - start
    log.info(
        "coreset (%s, %.3g): %d of %d patches in %.1f s",
        config.coreset,
        config.coreset_ratio,
        len(bank),
        len(features),
        timings["coreset"],
    )

    return PatchCoreModel(
        graph=scoring_graph(extractor, bank, config),
        backbone=backbone,
        feature_dim=features.shape[1],
        bank_size=len(bank),
        n_patches=len(features),
        timings_s=timings,
    )


def export_patchcore(data: Path, out: Path, config: PatchCoreConfig | None = None) -> Path:
    """Train PatchCore on the good images of ``data`` (an MVTec category or a folder of
    images) minus the hold-out, and write the bundle directory ``out``. Returns ``out``."""
    config = config or PatchCoreConfig()
    check_out_dir(Path(out))
    split = split_training_data(Path(data), config.holdout, config.seed)
    config = resolve_size(config, split.train, FEATURE_STRIDES[-1])
    log.info("patchcore on %d images of %s (%d held out): %s", len(split.train), split.root, len(split.holdout), config)
    model = fit_patchcore(split.train, config)
    params = {
        **{k: v for k, v in asdict(config).items() if k not in (*UNRECORDED, *RUN_ONLY)},
        "tiling": None if config.tiling is None else config.tiling.describe(),
        "bank_size": model.bank_size,
        "feature_dim": model.feature_dim,
        "training_patches": model.n_patches,
        "backbone_weights": Path(model.backbone.info.weights).name,
    }
    start = time.perf_counter()
    write_bundle(
        Path(out),
        model.graph,
        method=METHOD,
        backbone=model.backbone.info.name,
        split=split,
        method_params=params,
        reference=config.reference,
    )
    log.info("export: bundle %s in %.1f s", out, time.perf_counter() - start)
    return Path(out)


OPTIONS = OptionGroup(
    "patchcore",
    (
        (
            ("--coreset",),
            {
                "choices": ("greedy", "random"),
                "help": "how to thin the memory bank: greedy k-center (PatchCore; default) or uniform random sampling (faster, weaker)",
            },
        ),
        (
            ("--coreset-ratio",),
            {
                "type": float,
                "metavar": "R",
                "help": "bank size as a fraction of all training patches (default 0.1; 0.01-0.25 is useful; greedy time grows linearly with it)",
            },
        ),
        (
            ("--reweight",),
            {
                "type": int,
                "metavar": "B",
                "dest": "reweight_neighbours",
                "help": "image score = max of the map × PatchCore's neighbourhood-density weight (paper eq. 7, over the worst patch's nearest bank feature and its B-1 nearest bank neighbours; the paper's code and anomalib use 9); 0 = off, the plain maximum (default). The map is unchanged. Costs a one-off B-nearest-neighbour search over the bank at export, an int table of bank size × B in the model, and one more distance pass over the bank per image, for its worst patch only",
            },
        ),
        (
            ("--tile",),
            {
                "type": int,
                "metavar": "PX",
                "help": "judge the --size frame as overlapping PX × PX tiles, cut and stitched inside the graph "
                "(the bank is built from tiles of the good images); default: the whole frame at once",
            },
        ),
        (
            ("--tile-overlap",),
            {
                "type": int,
                "metavar": "PX",
                "help": "with --tile: pixels neighbouring tiles share, a multiple of 8 (default 32); their "
                "scores are averaged",
            },
        ),
    ),
)
# Shared with ssl, whose stage-2 bank is built the same way.
BANK_OPTIONS = OptionGroup(
    "bank",
    (
        (
            ("--patches-per-image",),
            {
                "type": int,
                "metavar": "N",
                "help": "patches drawn at random from each training image before the coreset (default 1024: "
                "all of them at 256² px for patchcore): bounds the bank's training memory at N × images × "
                "feature width × 4 bytes and the greedy coreset's time at any --size",
            },
        ),
    ),
)
OPTION_GROUPS = (OPTIONS, BANK_OPTIONS)
