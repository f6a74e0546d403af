"""The demo's procedural data set: MVTec layout, exact masks, determinism, and the video writer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from demo import synth
from demo.synth import (
    DEFECTS,
    SHAFT_DEFECTS,
    DatasetInfo,
    main,
    make_dataset,
    part_seed,
    render_long_part,
    render_part,
    write_video,
)

SMALL = dict(n_train=3, n_calib=2, n_test_good=2, n_test_defect_each=2)


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> DatasetInfo:
    return make_dataset(tmp_path_factory.mktemp("synth") / "data")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    capture.release()
    return frames


def test_layout_and_counts(default_set: DatasetInfo) -> None:
    root = default_set.root
    assert default_set.train_dir == root / "train" / "good"
    assert default_set.calib_dir == root / "calib" / "good"
    assert _names(default_set.train_dir) == [f"{i:03d}.png" for i in range(60)]
    assert _names(default_set.calib_dir) == [f"{i:03d}.png" for i in range(24)]
    assert _names(root / "test") == sorted(["good", *DEFECTS])
    assert _names(root / "test" / "good") == [f"{i:03d}.png" for i in range(12)]
    for defect in DEFECTS:
        assert _names(root / "test" / defect) == [f"{i:03d}.png" for i in range(6)]
        assert _names(root / "ground_truth" / defect) == [f"{i:03d}_mask.png" for i in range(6)]
    assert "Seed 0" in (root / "README.txt").read_text()

    labels = [label for _, label, _ in default_set.test_items]
    assert labels == ["good"] * 12 + [d for d in DEFECTS for _ in range(6)]
    for image_path, label, mask_path in default_set.test_items:
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert image_path.parent.name == label
        if label == "good":
            assert mask_path is None
            continue
        assert mask_path == root / "ground_truth" / label / f"{image_path.stem}_mask.png"
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (256, 256)
        assert set(np.unique(mask)) == {0, 255}


def test_masks_are_exactly_the_pixels_the_defect_changed(default_set: DatasetInfo) -> None:
    for image_path, label, mask_path in default_set.test_items:
        if label == "good":
            continue
        seed = part_seed(0, label, int(image_path.stem))
        image = cv2.imread(str(image_path))
        clean, no_mask = render_part(seed)
        assert no_mask is None
        assert np.array_equal(image, render_part(seed, label)[0])
        changed = (image != clean).any(axis=2)
        assert np.array_equal(changed, cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0), image_path


def test_good_parts_all_differ(default_set: DatasetInfo) -> None:
    good = list(default_set.train_dir.iterdir()) + list(default_set.calib_dir.iterdir())
    good += [p for p, label, _ in default_set.test_items if label == "good"]
    assert len({p.read_bytes() for p in good}) == len(good)


def test_same_seed_writes_the_same_bytes(default_set: DatasetInfo, tmp_path: Path) -> None:
    # A smaller set with the same seed holds the first parts of each group, byte for byte.
    small = make_dataset(tmp_path / "same", **SMALL)
    pngs = sorted(p.relative_to(small.root) for p in small.root.rglob("*.png"))
    assert len(pngs) == 3 + 2 + 2 + 2 * 2 * len(DEFECTS)
    for rel in pngs:
        assert (small.root / rel).read_bytes() == (default_set.root / rel).read_bytes(), rel

    other = make_dataset(tmp_path / "other", seed=1, **SMALL)
    assert (other.train_dir / "000.png").read_bytes() != (small.train_dir / "000.png").read_bytes()


def test_rewrite_replaces_the_previous_set_but_not_foreign_folders(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", **SMALL)
    make_dataset(tmp_path / "data", **{**SMALL, "n_train": 1})
    assert _names(tmp_path / "data" / "train" / "good") == ["000.png"]

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_writes_the_set_with_the_seed(tmp_path: Path) -> None:
    main([str(tmp_path / "cli"), "--seed", "7"])
    assert "Seed 7" in (tmp_path / "cli" / "README.txt").read_text()
    assert len(list((tmp_path / "cli" / "train" / "good").iterdir())) == 60


# Mean absolute error measured on these frames: 0 (FFV1, lossless), 1.7 (MJPG), 2.8 (mp4v).
@pytest.mark.parametrize("codec", synth._VIDEO_CODECS, ids=[c[0] for c in synth._VIDEO_CODECS])
def test_every_fallback_codec_round_trips(
    codec: tuple[str, str, int], default_set: DatasetInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "_VIDEO_CODECS", (codec,))
    images = [p for p, _, _ in default_set.test_items[::3]]
    written = write_video(images, tmp_path / "line.video", fps=10)
    assert written.suffix == codec[1] and written.exists()
    frames = _read_frames(written)
    assert len(frames) == len(images)
    errors = [np.abs(f.astype(np.int16) - cv2.imread(str(p))).mean() for f, p in zip(frames, images)]
    assert max(errors) < 3.0


def test_write_video_prefers_lossless(default_set: DatasetInfo, tmp_path: Path) -> None:
    images = [p for p, _, _ in default_set.test_items]
    written = write_video(images, tmp_path / "line.mp4")
    assert written == tmp_path / "line.avi"
    frames = _read_frames(written)
    assert len(frames) == len(images)
    assert all(np.array_equal(f, cv2.imread(str(p))) for f, p in zip(frames, images))


@pytest.fixture(scope="module")
def long_set(tmp_path_factory: pytest.TempPathFactory) -> DatasetInfo:
    return make_dataset(tmp_path_factory.mktemp("long") / "data", part="shaft", size=300, **SMALL)


def test_long_parts_are_1200_by_300_with_small_defects_and_exact_masks(long_set: DatasetInfo) -> None:
    assert "1200x300" in (long_set.root / "README.txt").read_text()
    assert _names(long_set.root / "test") == sorted(["good", *SHAFT_DEFECTS])
    for image_path, label, mask_path in long_set.test_items:
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (300, 1200, 3)
        if label == "good":
            continue
        seed = part_seed(0, label, int(image_path.stem))
        clean, _ = render_long_part(seed)
        assert np.array_equal(image, render_long_part(seed, label)[0])
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal((image != clean).any(axis=2), mask), image_path
        ys, xs = np.nonzero(mask)
        # Small at the camera's resolution: a scratch up to 20 px long, a pit up to 7 px across.
        extent = max(np.ptp(ys), np.ptp(xs)) + 1
        assert (3 <= extent <= 21) if label == "scratch" else (3 <= extent <= 7), (image_path, extent)


def test_long_parts_are_deterministic(long_set: DatasetInfo) -> None:
    again = render_long_part(part_seed(0, "pit", 1), "pit")
    assert np.array_equal(again[0], cv2.imread(str(long_set.root / "test" / "pit" / "001.png")))
    assert np.array_equal(again[1], cv2.imread(str(long_set.root / "ground_truth" / "pit" / "001_mask.png"), 0))
