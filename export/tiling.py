"""Tiling inside the graph: a model that stays at the resolution it was trained at (``tile``
× ``tile`` pixels) judges a larger frame cut into overlapping tiles. The engine contract does
not change (uint8 frame in, full-size map and score out): the cut, the one batch of tiles
through the method's patch scorer and the stitching are all graph ops.

Stitching happens on the patch-score grid, before AnomalyHead upsamples and smooths: the
frame gets one smoothing pass with no seams at tile borders, overlapping cells are averaged,
and the score stays the maximum of the whole map. Tile origins and the overlap are therefore
multiples of the scorer's cell (its output stride), and the training tiles are cut by the
same ``tile_origins`` as the graph's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sizes import Size


def axis_origins(length: int, tile: int, overlap: int, cell: int) -> list[int]:
    """Starts of tiles of ``tile`` px covering ``[0, length)``, at most ``tile − overlap``
    apart, each a multiple of ``cell``; the last one ends at ``length``."""
    if tile > length:
        raise ValueError(f"tile {tile}: larger than the frame's side {length}")
    if length == tile:
        return [0]
    # Flooring evenly spread starts to the cell keeps every gap ≤ the step, itself a multiple
    # of the cell: neighbours overlap by at least ``overlap``, and no cell is left uncovered.
    step = (tile - overlap) // cell * cell
    count = -(-(length - tile) // step) + 1
    starts = np.linspace(0, length - tile, count)
    return sorted({int(s // cell) * cell for s in starts[:-1]} | {length - tile})


def tile_origins(frame: Size, tile: int, overlap: int, cell: int) -> list[tuple[int, int]]:
    """(top, left) of every tile, row by row."""
    rows = axis_origins(frame[0], tile, overlap, cell)
    cols = axis_origins(frame[1], tile, overlap, cell)
    return [(y, x) for y in rows for x in cols]


def check_tiling(frame: Size, tile: int, overlap: int, cell: int, multiple: int) -> None:
    """Refuse a tiling the graph cannot stitch, in the config, before training."""
    if tile % multiple:
        raise ValueError(f"tile {tile}: must be a multiple of {multiple} (the deepest feature stride)")
    if overlap % cell or not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap {overlap}: must be a multiple of {cell} (the patch grid) in [0, tile)")
    if frame[0] % cell or frame[1] % cell:
        raise ValueError(f"size {frame[0]}x{frame[1]}: sides must be multiples of {cell} to tile")
    if tile > min(frame):
        raise ValueError(f"tile {tile}: larger than the frame {frame[0]}x{frame[1]} (drop --tile or raise --size)")


def cut_tiles(images: np.ndarray, origins: list[tuple[int, int]], tile: int) -> np.ndarray:
    """``uint8 [N, H, W, 3]`` → ``[N·T, tile, tile, 3]``, image by image (training side)."""
    return np.stack([image[y : y + tile, x : x + tile] for image in images for y, x in origins])


class TiledScorer(nn.Module):
    """Normalised frame ``[B, 3, H, W]`` → stitched patch scores ``[B, 1, H/cell, W/cell]``:
    the tiles are cut, run through ``scorer`` as one batch of ``B·T`` and put back, cells
    covered by several tiles averaged."""

    inverse_coverage: torch.Tensor  # [1, 1, H/cell, W/cell]: 1 / how many tiles cover each cell

    def __init__(self, scorer: nn.Module, frame: Size, tile: int, overlap: int, cell: int) -> None:
        super().__init__()
        self.scorer = scorer
        self.origins = tile_origins(frame, tile, overlap, cell)
        self.tile, self.cell = tile, cell
        self.grid = (frame[0] // cell, frame[1] // cell)
        coverage = torch.zeros(1, 1, *self.grid)
        side = tile // cell
        for y, x in self.origins:
            coverage[..., y // cell : y // cell + side, x // cell : x // cell + side] += 1
        self.register_buffer("inverse_coverage", 1.0 / coverage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tile
        # Tile-major batch: tile i of every image is rows i·B .. i·B + B − 1.
        crops = torch.cat([x[:, :, y : y + t, left : left + t] for y, left in self.origins], dim=0)
        scores = self.scorer(crops)
        if isinstance(scores, tuple):
            raise TypeError("a tiled scorer takes patch scores only (no image-score weight)")
        side = t // self.cell
        per_tile = scores.reshape(len(self.origins), -1, 1, side, side)
        height, width = self.grid
        stitched = torch.zeros_like(self.inverse_coverage)
        for i, (y, left) in enumerate(self.origins):
            gy, gx = y // self.cell, left // self.cell
            stitched = stitched + F.pad(per_tile[i], (gx, width - gx - side, gy, height - gy - side))
        return stitched * self.inverse_coverage


@dataclass(frozen=True, slots=True)
class Tiling:
    """How a frame is cut: the training side cuts images with ``cut``, the graph wraps the
    method's scorer with ``wrap``; both use the same origins."""

    frame: Size
    tile: int
    overlap: int
    cell: int  # the patch scorer's output stride, px

    @property
    def origins(self) -> list[tuple[int, int]]:
        return tile_origins(self.frame, self.tile, self.overlap, self.cell)

    def cut(self, images: np.ndarray) -> np.ndarray:
        return cut_tiles(images, self.origins, self.tile)

    def wrap(self, scorer: nn.Module) -> TiledScorer:
        return TiledScorer(scorer, self.frame, self.tile, self.overlap, self.cell)

    def describe(self) -> dict[str, int]:
        """bundle.yaml's ``tiling`` section."""
        return {"tile": self.tile, "overlap": self.overlap, "tiles": len(self.origins)}
