"""edge-eval's engine: score a labelled MVTec AD category with the deployed bundle, on the line's
own backend, and measure it (image / pixel AUROC, AUPRO to 30% FPR, F1-max, the confusion at
the calibrated threshold), overall and per defect type.

`evaluate_outputs` takes (maps, scores) from anywhere, so the PyTorch model's outputs for the
same files go through exactly the same code, and `compare` gives the differences.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from calibration.calibrate import infer_files
from calibration.defect_sizes import DefectSizeSheet
from calibration.metrics import Confusion, aupro, confusion, f1_max, image_auroc, pixel_auroc
from edge.backends import Backend
from edge.bundle import Bundle, Calibration
from edge.preprocess import IMAGE_SUFFIXES, read_image

GOOD = "good"
LAYOUT = (
    "an MVTec AD category folder has test/good/*.png, test/<defect type>/*.png and "
    "ground_truth/<defect type>/<name>_mask.png"
)
# Pixels kept for the pixel metrics, over all images: maps (float32) and masks take ~85 MB and
# the AUPRO sort peaks near 0.5 GB. Larger sets are measured on a proportionally coarser grid.
PIXEL_BUDGET = 1 << 24
# docs/methods.md: the deployed artifact may lose at most this much image AUROC (in points) to PyTorch.
AUROC_DROP_BUDGET_POINTS = 0.3
MIN_GOOD = 20


class DatasetError(ValueError):
    """The data folder is not a labelled MVTec AD category; the message names what is missing."""


@dataclass(frozen=True, slots=True)
class Item:
    image: Path
    defect: str  # "good" or the defect type (the test sub-folder's name)
    mask: Path | None  # None for good parts (their mask is empty), and where a category has no masks

    @property
    def is_defect(self) -> bool:
        return self.defect != GOOD

    @property
    def name(self) -> str:
        return f"{self.defect}/{self.image.name}"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def find_items(root: Path) -> list[Item]:
    """Every test image of an MVTec AD category, good first, with its mask file (none at all when
    the category has no ground_truth/ folder)."""
    test = root / "test"
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; {LAYOUT}")
    if not test.is_dir():
        # A common slip: the dataset root instead of one category in it.
        categories = sorted(d.name for d in root.iterdir() if (d / "test").is_dir())
        hint = f" (categories in it: {', '.join(categories)}; give one of them)" if categories else ""
        raise DatasetError(f"{test}: missing{hint}; {LAYOUT}")
    if not (test / GOOD).is_dir():
        raise DatasetError(f"{test / GOOD}: missing; {LAYOUT}")
    items = [Item(p, GOOD, None) for p in _images_in(test / GOOD)]
    if not items:
        raise DatasetError(f"{test / GOOD}: no images; AUROC needs good parts to compare against")
    defects = sorted(d.name for d in test.iterdir() if d.is_dir() and d.name != GOOD)
    if not defects:
        raise DatasetError(
            f"{test}: no defect-type folders besides good/; {LAYOUT} (for good parts only, use edge-calibrate)"
        )
    # A category without ground_truth/ at all (labelled by folder only) is measured on images alone.
    unmasked = not (root / "ground_truth").exists()
    for defect in defects:
        images = _images_in(test / defect)
        if not images:
            raise DatasetError(f"{test / defect}: no images")
        if unmasked:
            items += [Item(p, defect, None) for p in images]
            continue
        masks = [root / "ground_truth" / defect / f"{p.stem}_mask.png" for p in images]
        missing = [m for m in masks if not m.is_file()]
        if missing:
            raise DatasetError(
                f"{missing[0]}: missing ({len(missing)} of {len(masks)} masks of {defect!r} are); {LAYOUT}"
            )
        items += [Item(p, defect, m) for p, m in zip(images, masks)]
    return items


def pixel_grid(n: int, height: int, width: int, budget: int = PIXEL_BUDGET) -> tuple[int, int]:
    """The (h, w) the pixel metrics are computed on: the model's own, unless n maps of it
    exceed the budget. A function of the shapes only, so two models of one size share it."""
    scale = min(1.0, math.sqrt(budget / (n * height * width)))
    return max(1, int(height * scale)), max(1, int(width * scale))


def to_grid(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """[B, 1, H, W] or [B, H, W] → float32 [B, h, w]; area averaging when shrinking."""
    maps = np.asarray(maps, np.float32).reshape(len(maps), *np.shape(maps)[-2:])
    if maps.shape[1:] == grid:
        return maps
    return np.stack([cv2.resize(m, grid[::-1], interpolation=cv2.INTER_AREA) for m in maps])


def _check_mask_fits(item: Item, mask_hw: tuple[int, ...]) -> None:
    """A mask marks its image's pixels: of the image's size, or of its aspect (then resized, as a
    mask drawn at another resolution). Of another aspect it is another image's mask, and stretched
    onto this one it would mark the wrong pixels."""
    image, problem = read_image(item.image, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{item.image}: unreadable image ({problem})")
    (ih, iw), (mh, mw) = image.shape[:2], mask_hw[:2]
    if abs(mh * iw - mw * ih) > 0.01 * ih * mw:  # aspects 1% apart
        raise DatasetError(
            f"{item.mask}: a {mw}x{mh} mask for the {iw}x{ih} image {item.image.name} (another aspect): "
            "the mask must be drawn on this image; fix or replace it"
        )


def load_masks(items: list[Item], grid: tuple[int, int]) -> np.ndarray:
    """bool [N, h, w]; nearest neighbour keeps the masks binary and thin defects present. Masks
    are 0/255 as in MVTec AD, or label images of 0/1."""
    masks = np.zeros((len(items), *grid), bool)
    for mask, item in zip(masks, items):
        if item.mask is not None:
            m = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise DatasetError(f"{item.mask}: unreadable mask")
            _check_mask_fits(item, m.shape)
            mask[...] = cv2.resize(m, grid[::-1], interpolation=cv2.INTER_NEAREST) > (0 if m.max() == 1 else 127)
    return masks


@dataclass(frozen=True, slots=True)
class Metrics:
    n_good: int
    n_defect: int
    image_auroc: float
    pixel_auroc: float
    aupro: float  # to 30% FPR, normalised (1.0 is perfect)
    f1_max: float
    f1_threshold: float  # NG ⇔ score > f1_threshold gives f1_max
    confusion: Confusion | None  # at the calibrated threshold; None without calibration

    def to_json(self) -> dict:
        return {
            "n_good": self.n_good,
            "n_defect": self.n_defect,
            "image_auroc": self.image_auroc,
            "pixel_auroc": self.pixel_auroc,
            "aupro_30": self.aupro,
            "f1_max": self.f1_max,
            "f1_threshold": self.f1_threshold,
            "confusion": self.confusion.to_json() if self.confusion else None,
        }


COMPARED = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "f1_max": "F1-max"}


def measure(
    scores: np.ndarray, labels: np.ndarray, maps: np.ndarray, masks: np.ndarray, threshold: float | None
) -> Metrics:
    f1, f1_thr = f1_max(scores, labels)
    return Metrics(
        n_good=int((~labels).sum()),
        n_defect=int(labels.sum()),
        image_auroc=image_auroc(scores, labels),
        pixel_auroc=pixel_auroc(maps, masks),
        aupro=aupro(maps, masks),
        f1_max=f1,
        f1_threshold=f1_thr,
        confusion=None if threshold is None else confusion(scores, labels, threshold),
    )


@dataclass(slots=True)
class EvalResult:
    items: list[Item]
    scores: np.ndarray  # [N] image scores
    maps: np.ndarray = field(repr=False)  # float32 [N, h, w] on the pixel grid
    masks: np.ndarray = field(repr=False)  # bool [N, h, w]
    calibration: Calibration | None
    overall: Metrics
    per_type: dict[str, Metrics]
    meta: dict = field(default_factory=dict)  # what was measured, with what, when
    notes: list[str] = field(default_factory=list)  # caveats a reader should see first
    comparison: dict | None = None  # against the PyTorch reference (calibration/reference.py)
    defect_sizes: DefectSizeSheet | None = None  # planted defects on good parts (calibration/defect_sizes.py)

    @property
    def labels(self) -> np.ndarray:
        return np.array([i.is_defect for i in self.items])

    @property
    def threshold(self) -> float | None:
        return self.calibration.threshold if self.calibration else None

    def to_json(self) -> dict:
        cal = self.calibration
        out = {
            "schema": 1,
            **self.meta,
            "notes": self.notes,
            "pixel_grid": list(self.maps.shape[1:]),
            "calibration": None
            if cal is None
            else {
                "threshold": cal.threshold,
                "pixel_threshold": cal.pixel_threshold,
                "mu": cal.mu,
                "sigma": cal.sigma,
                "k": cal.k,
                "n": cal.n,
                "data": cal.raw.get("data"),
            },
            "overall": self.overall.to_json(),
            "per_type": {t: m.to_json() for t, m in self.per_type.items()},
            "reference_comparison": self.comparison,
            "defect_sizes": None if self.defect_sizes is None else self.defect_sizes.to_json(),
            "images": [
                {
                    "file": i.name,
                    "type": i.defect,
                    "score": float(s),
                    **({} if cal is None else {"verdict": "NG" if s > cal.threshold else "OK"}),
                }
                for i, s in zip(self.items, self.scores)
            ],
        }
        return _json_safe(out)

    def write_json(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path


def _json_safe(x):
    """NaN (an undefined metric) is not JSON: it becomes null; numpy scalars become Python ones."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate_outputs(
    items: list[Item], maps: np.ndarray, scores: np.ndarray, calibration: Calibration | None
) -> EvalResult:
    """Metrics for any model's outputs on `items` (maps [N, 1, H, W] or [N, H, W], scores [N]),
    overall and for each defect type against all the good parts."""
    if len(maps) != len(items) or len(scores) != len(items):
        raise ValueError(f"{len(items)} items but {len(maps)} maps and {len(scores)} scores")
    grid = pixel_grid(len(items), *np.shape(maps)[-2:])
    maps = to_grid(maps, grid)
    masks = load_masks(items, grid)
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.array([i.is_defect for i in items])
    threshold = calibration.threshold if calibration else None
    defects = np.array([i.defect for i in items])

    def on(subset: np.ndarray) -> Metrics:
        return measure(scores[subset], labels[subset], maps[subset], masks[subset], threshold)

    types = sorted(set(defects[labels]))
    with tqdm(total=len(types) + 1, desc="metrics", unit="set") as bar:
        overall = on(np.ones(len(items), bool))
        bar.update()
        per_type = {}
        for t in types:
            per_type[t] = on(~labels | (defects == t))
            bar.update()
    return EvalResult(
        items=list(items),
        scores=scores,
        maps=maps,
        masks=masks,
        calibration=calibration,
        overall=overall,
        per_type=per_type,
        notes=_notes(items, masks, overall, calibration),
    )


def _notes(items: list[Item], masks: np.ndarray, overall: Metrics, calibration: Calibration | None) -> list[str]:
    notes = []
    unmarked = [i.name for i, m in zip(items, masks) if i.is_defect and not m.any()]
    if overall.n_defect and all(i.mask is None for i in items):
        notes.append(
            "no ground_truth/ masks: image metrics only (pixel AUROC and AUPRO are n/a); add "
            "ground_truth/<defect type>/<name>_mask.png to measure where defects are found"
        )
    elif unmarked:
        notes.append(
            f"{len(unmarked)} of {overall.n_defect} defect images have no defect pixels in their mask on "
            f"the {masks.shape[1]}x{masks.shape[2]} pixel grid (e.g. {unmarked[0]}): the pixel metrics "
            "find nothing to detect there; masks should be 0/255 (or 0/1) with the defect marked"
        )
    if calibration is None:
        notes.append(
            "no calibration.yaml in the bundle: no verdicts at a calibrated threshold "
            "(run edge-calibrate on held-out good parts first)"
        )
    if overall.n_good < MIN_GOOD:
        notes.append(
            f"only {overall.n_good} good parts: the false-reject rate measured here is coarse "
            "(see its 95% interval); the calibration set says more about it"
        )
    return notes


def score_items(
    bundle: Bundle, backend: Backend, items: list[Item], batch: int = 8, desc: str = "scoring test parts"
) -> tuple[np.ndarray, np.ndarray, float]:
    """(maps float32 [N, h, w] on the pixel grid, scores float32 [N], seconds) of `items`
    through `backend`, the images read and resized as the line does. Any model that follows
    the Backend interface, PyTorch included, goes through this same path."""
    grid = pixel_grid(len(items), bundle.height, bundle.width)
    maps = np.empty((len(items), *grid), np.float32)
    scores = np.empty(len(items), np.float32)
    t0, i = time.perf_counter(), 0
    for m, s in infer_files(backend, bundle, [it.image for it in items], batch, desc):
        maps[i : i + len(s)], scores[i : i + len(s)] = to_grid(m, grid), s
        i += len(s)
    return maps, scores, time.perf_counter() - t0


def evaluate(bundle: Bundle, backend: Backend, root: Path, batch: int = 8) -> EvalResult:
    """Score every test image of the category at `root` with the bundle on `backend`, and measure."""
    items = find_items(root)
    maps, scores, seconds = score_items(bundle, backend, items, batch)
    grid = maps.shape[1:]
    result = evaluate_outputs(items, maps, scores, bundle.calibration)
    result.meta = {
        "model": bundle.name,
        "method": bundle.method,
        "backend": backend.describe(),
        "data": str(root.resolve()),
        "input": [bundle.height, bundle.width],
        "n_images": len(items),
        "inference_s": seconds,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if grid != (bundle.height, bundle.width):
        result.notes.append(
            f"pixel metrics on a {grid[0]}x{grid[1]} grid (maps area-averaged from "
            f"{bundle.height}x{bundle.width}) to bound memory"
        )
    calibrated_on = (bundle.calibration.raw.get("data") or {}).get("source") if bundle.calibration else None
    if calibrated_on == str((root / "test" / GOOD).resolve()):
        result.notes.append(
            "calibrated on the same good parts evaluated here: the false-reject rate below is optimistic"
        )
    return result


def _differences(deployed: Metrics, reference: Metrics) -> dict:
    return {
        k: {
            "deployed": getattr(deployed, k),
            "reference": getattr(reference, k),
            "diff": getattr(deployed, k) - getattr(reference, k),
        }
        for k in COMPARED
    }


def compare(deployed: EvalResult, reference: EvalResult) -> dict:
    """Deployed artifact vs reference (PyTorch) model on the same files: metric differences
    (deployed − reference), output differences, and the image-AUROC budget of docs/methods.md."""
    if [i.name for i in deployed.items] != [i.name for i in reference.items]:
        raise ValueError("deployed and reference results are not over the same files in the same order")
    if deployed.maps.shape != reference.maps.shape:
        raise ValueError(
            f"anomaly maps differ in shape: deployed {deployed.maps.shape}, reference {reference.maps.shape}"
        )
    drop = 100 * (reference.overall.image_auroc - deployed.overall.image_auroc)
    map_diff = np.abs(deployed.maps - reference.maps)
    return _json_safe(
        {
            "overall": _differences(deployed.overall, reference.overall),
            "per_type": {t: _differences(m, reference.per_type[t]) for t, m in deployed.per_type.items()},
            "image_auroc_drop_points": drop,
            "within_budget": bool(drop <= AUROC_DROP_BUDGET_POINTS),
            "budget_points": AUROC_DROP_BUDGET_POINTS,
            "score_max_abs_diff": float(np.abs(deployed.scores - reference.scores).max()),
            "map_max_abs_diff": float(map_diff.max()),
            "map_mean_abs_diff": float(map_diff.mean()),
        }
    )
