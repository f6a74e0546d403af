from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from export.data import (
    DataError,
    ImageReadError,
    fingerprint,
    iter_batches,
    load_image,
    load_mask,
    mvtec_test_samples,
    split_holdout,
    split_training_data,
    training_images,
)


def test_colour_order_is_rgb(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), (0, 0, 255), np.uint8))  # BGR on disk
    assert load_image(path, (8, 8))[0, 0].tolist() == [255, 0, 0]


def test_grayscale_becomes_three_equal_channels(tmp_path: Path, write_images) -> None:
    [path] = write_images(tmp_path, 1, size=(40, 56), gray=True)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2
    image = load_image(path, (32, 32))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert image.std() > 5  # the texture survived, not a blank


def test_odd_sizes_shrink_by_area_and_grow(tmp_path: Path) -> None:
    # A one-pixel checkerboard: area averaging gives flat grey, point sampling would alias
    # it into stripes of 0 and 255.
    board = (np.indices((99, 77)).sum(0) % 2 * 255).astype(np.uint8)
    path = tmp_path / "board.png"
    cv2.imwrite(str(path), board)
    small = load_image(path, (32, 32))
    assert small.shape == (32, 32, 3)
    assert small.min() > 100 and small.max() < 155
    grown = load_image(path, (128, 160))
    assert grown.shape == (128, 160, 3)


def test_unreadable_files_raise_naming_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not a png")
    empty = tmp_path / "empty.png"
    empty.touch()
    for path in (corrupt, empty, tmp_path / "missing.png"):
        with pytest.raises(ImageReadError) as err:
            load_image(path, (16, 16))
        assert str(path) in str(err.value)
        assert err.value.path == path


def test_unreadable_file_inside_a_batch_names_it(tmp_path: Path, write_images) -> None:
    files = write_images(tmp_path, 3)
    files[1].write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageReadError, match="001.png"):
        list(iter_batches(files, (32, 32), batch_size=2))


def test_mvtec_layout(tmp_path: Path, write_images) -> None:
    category = tmp_path / "widget"
    good = write_images(category / "train" / "good", 4)
    write_images(category / "test" / "good", 2)
    cracks = write_images(category / "test" / "crack", 2, seed=1)
    (category / "ground_truth" / "crack").mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 30:40] = 255
    for path in cracks:
        cv2.imwrite(str(category / "ground_truth" / "crack" / f"{path.stem}_mask.png"), mask)

    assert training_images(category) == [p.resolve() for p in good]
    samples = mvtec_test_samples(category)
    assert [(s.defect, s.path.name, s.label) for s in samples] == [
        ("crack", "000.png", 1),
        ("crack", "001.png", 1),
        ("good", "000.png", 0),
        ("good", "001.png", 0),
    ]
    assert samples[2].mask is None
    mask = load_mask(samples[0].mask, (32, 32))
    assert mask.dtype == bool and mask.sum() == 5 * 5 and mask[7, 17]

    (category / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DataError, match="001_mask.png"):
        mvtec_test_samples(category)


def test_plain_folder_lists_images_only_sorted(tmp_path: Path, write_images) -> None:
    files = write_images(tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    shutil.copy(files[0], tmp_path / "sub" / "nested.png")
    shutil.copy(files[0], tmp_path / "A.JPG.png")
    assert [p.name for p in training_images(tmp_path)] == ["000.png", "001.png", "002.png", "A.JPG.png"]


def test_bad_data_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        training_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        training_images(tmp_path / "empty")


def test_fingerprint_tracks_the_file_list_not_the_location(tmp_path: Path, write_images) -> None:
    files = write_images(tmp_path / "a", 4)
    base = fingerprint(files)
    assert base.count == 4 and len(base.sha256) == 64
    assert fingerprint(list(reversed(files))) == base

    moved = shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    assert fingerprint(sorted(moved.iterdir())) == base

    files[3].rename(files[3].with_name("renamed.png"))
    assert fingerprint(sorted((tmp_path / "a").iterdir())).sha256 != base.sha256
    assert fingerprint(files[:3]) != base


def test_holdout_is_deterministic_disjoint_and_order_free(tmp_path: Path, write_images) -> None:
    files = write_images(tmp_path, 20)
    train, held = split_holdout(files, 0.25, seed=0)
    assert len(held) == 5 and len(train) == 15
    assert sorted(train + held) == sorted(files) and not set(train) & set(held)
    assert split_holdout(list(reversed(files)), 0.25, seed=0) == (train, held)
    assert split_holdout(files, 0.25, seed=1)[1] != held
    assert split_holdout(files, 0.0, seed=0) == (sorted(files), [])
    assert len(split_holdout(files[:1], 0.5, seed=0)[0]) == 1  # never trains on nothing
    with pytest.raises(DataError):
        split_holdout(files, 1.0, seed=0)


def test_training_split_fingerprints_what_the_model_sees(tmp_path: Path, write_images) -> None:
    write_images(tmp_path / "cat" / "train" / "good", 10)
    split = split_training_data(tmp_path / "cat", 0.2, seed=3)
    assert split.root == (tmp_path / "cat").resolve()
    assert len(split.train) == 8 and len(split.holdout) == 2
    assert all(p.is_absolute() for p in split.train + split.holdout)
    assert split.fingerprint == fingerprint(split.train, split.root)


def test_symlinks_out_of_the_data_folder_keep_their_names_inside_it(tmp_path: Path, write_images) -> None:
    # Datasets often link their images, or a whole train/good, from a shared pool elsewhere.
    pool = write_images(tmp_path / "pool", 3)
    (tmp_path / "cat" / "train").mkdir(parents=True)
    (tmp_path / "cat" / "train" / "good").symlink_to(tmp_path / "pool")
    (tmp_path / "plain").mkdir()
    for path in pool:
        (tmp_path / "plain" / path.name).symlink_to(path)
    copy = shutil.copytree(tmp_path / "pool", tmp_path / "copy" / "train" / "good")
    for data, unlinked in (
        (tmp_path / "cat", fingerprint(sorted(copy.iterdir()), tmp_path / "copy")),
        (tmp_path / "plain", fingerprint(pool)),
    ):
        split = split_training_data(data, 0.0, seed=0)
        assert [p.name for p in split.train] == [p.name for p in pool]
        assert all(p.is_relative_to(split.root) for p in split.train)
        assert split.fingerprint == unlinked


def test_hidden_files_are_not_images(tmp_path: Path, write_images) -> None:
    files = write_images(tmp_path, 2)
    (tmp_path / "._000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(100))  # macOS AppleDouble
    shutil.copy(files[0], tmp_path / ".thumbnail.png")
    assert [p.name for p in training_images(tmp_path)] == ["000.png", "001.png"]


def test_training_resizes_exactly_as_the_line(tmp_path: Path) -> None:
    from edge.preprocess import to_input
    from edge.types import Frame

    # 200×300 → 256²: the height grows and the width shrinks, where the two used to pick
    # different filters.
    rgb = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    line = to_input([Frame(stream="s", seq=0, frame_id="wide.png", t_grab=0.0, image=rgb)], 256, 256)[0]
    assert np.array_equal(load_image(path, (256, 256)), line)


def test_a_jpeg_cut_short_is_refused_for_training(tmp_path) -> None:
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(80, 100, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "half.jpg").write_bytes(data.tobytes()[: len(data) // 2])
    assert cv2.imread(str(tmp_path / "half.jpg")) is not None, "OpenCV reads it, its lower half grey"
    with pytest.raises(ImageReadError, match="half.jpg.*cut short"):
        load_image(tmp_path / "half.jpg", (32, 32))
