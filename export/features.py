"""The shared patch front end (PatchCore, SimpleNet, GLASS): backbone levels → one locally
aware feature per cell of the finest grid.

PatchCore's reference does, per level: unfold 3×3 neighbourhoods (stride 1, zero padding),
upsample the deeper levels' unfolded maps bilinearly to the finest grid, adaptive-average-
pool each flattened ``C·3·3`` patch to the pretrain dimension; then stack the levels and
adaptive-average-pool the flattened stack to the target dimension. Every step after the
unfold is linear, and bilinear upsampling acts on each channel alone, so it commutes with
the channel maps: the whole chain is one 3×3 convolution per level with a constant weight,
an upsample and a sum. That form has no unfold and no adaptive pooling, so it exports to
ONNX and TensorRT as plain Conv/Resize/Add.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 3


def adaptive_pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``[n_out, n_in]`` matrix ``A`` with ``A @ x == adaptive_avg_pool1d(x, n_out)``:
    output i averages inputs ``floor(i·n_in/n_out)`` to ``ceil((i+1)·n_in/n_out)``."""
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def reduced_patch_weights(channels: Sequence[int], pretrain_dim: int, target_dim: int) -> list[torch.Tensor]:
    """Per level, the ``[target_dim, C, 3, 3]`` conv weight equal to unfold → pool to
    ``pretrain_dim`` → (that level's slice of) stack-and-pool to ``target_dim``."""
    aggregate = adaptive_pool_matrix(len(channels) * pretrain_dim, target_dim)
    weights = []
    for level, c in enumerate(channels):
        # unfold lays a patch out channel-major: index c·9 + ky·3 + kx, the layout of a conv weight.
        per_level = adaptive_pool_matrix(c * PATCH_SIZE**2, pretrain_dim)
        block = aggregate[:, level * pretrain_dim : (level + 1) * pretrain_dim]
        weights.append((block @ per_level).reshape(target_dim, c, PATCH_SIZE, PATCH_SIZE).float())
    return weights


class PatchFeatures(nn.Module):
    """``[level maps]`` → ``float [B, D, h, w]`` on the first (finest) level's grid.

    ``D = target_dim``, except for a narrow backbone (total channels < target_dim, e.g.
    EfficientNet-Lite0's 40 + 112): there each level is pooled to its own width (which is
    exactly a 3×3 mean) and the levels are concatenated, ``D = sum(channels)``, rather than
    stretching 152 numbers over 1024 slots that carry no more information. (Equal widths
    take the reference path: WRN50's 512 + 1024 into SimpleNet's 1536 pools 3 of every 9
    patch values, not whole 3×3 windows.)
    """

    def __init__(self, channels: Sequence[int], pretrain_dim: int, target_dim: int) -> None:
        super().__init__()
        self.native = sum(channels) < target_dim
        self.dim = sum(channels) if self.native else target_dim
        weights = [] if self.native else reduced_patch_weights(channels, pretrain_dim, target_dim)
        for level, weight in enumerate(weights):
            self.register_buffer(f"weight{level}", weight)
        self.n_levels = len(channels)

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        if self.native:
            return F.avg_pool2d(x, PATCH_SIZE, stride=1, padding=PATCH_SIZE // 2, count_include_pad=True)
        return F.conv2d(x, getattr(self, f"weight{level}"), padding=PATCH_SIZE // 2)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        grid = levels[0].shape[-2:]
        maps = [self._level(0, levels[0])]
        for level in range(1, self.n_levels):
            maps.append(
                F.interpolate(self._level(level, levels[level]), size=grid, mode="bilinear", align_corners=False)
            )
        return torch.cat(maps, dim=1) if self.native else sum(maps[1:], maps[0])
