"""Fixtures shared across the test rooms: real image files on disk and the evaluation data
that lives beside the repository (never inside it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # ../shared beside the repository
MVTEC_BOTTLE = SHARED_DATA / "mvtec" / "bottle"


def textured_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] RGB: smooth coloured blobs plus fine noise, so that a CNN sees
    structure at several scales (pure noise makes every patch alike)."""
    coarse = rng.uniform(0, 255, size=(max(height // 8, 2), max(width // 8, 2), 3))
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 12, size=smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def write_images() -> Callable[..., list[Path]]:
    """``write_images(folder, n, size=(H, W), seed=0, gray=False)``: n PNG files named
    000.png, 001.png, ... in folder (created), returned in order."""

    def write(folder: Path, n: int, size: tuple[int, int] = (64, 64), seed: int = 0, gray: bool = False) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        paths = []
        for i in range(n):
            rgb = textured_image(rng, *size)
            path = folder / f"{i:03d}.png"
            image = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            assert cv2.imwrite(str(path), image)
            paths.append(path)
        return paths

    return write


@pytest.fixture(scope="session")
def optional_mvtec_bottle() -> Path | None:
    """The MVTec AD bottle category from ../shared/data, or None where it is absent (for
    tests that fall back to synthetic images)."""
    return MVTEC_BOTTLE if (MVTEC_BOTTLE / "train" / "good").is_dir() else None


@pytest.fixture(scope="session")
def mvtec_bottle(optional_mvtec_bottle: Path | None) -> Path:
    """The MVTec AD bottle category; the test is skipped without it."""
    if optional_mvtec_bottle is None:
        pytest.skip(f"MVTec bottle not found at {MVTEC_BOTTLE} (evaluation data lives outside the repo)")
    return optional_mvtec_bottle


@pytest.fixture(scope="session")
def wide_resnet_weights(tmp_path_factory) -> Path:
    """A wide_resnet50_2 state dict with seeded random weights, saved like torchvision's
    checkpoint: the real ImageNet file cannot be downloaded where tests run."""
    import torch
    from torchvision.models import wide_resnet50_2

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "wide_resnet50_2-random.pth"
    torch.save(wide_resnet50_2(weights=None).state_dict(), path)
    return path
