"""edge-eval on a real ONNX bundle whose answers are known (the brightness model), over a synthetic
MVTec-layout folder; and on real MVTec bottle with an exported PatchCore bundle when the data is there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import calibration.eval_cli
from calibration.cli import main as calibrate_main
from calibration.eval_cli import main
from calibration.evaluate import DatasetError, compare, evaluate, evaluate_outputs, find_items, pixel_grid, to_grid
from calibration.report import write_report
from edge.backends import load_backend
from edge.bundle import load_bundle

from ..edge.conftest import make_bundle, part

GOOD_VALUES = (40, 50, 60, 70, 80)  # scores v/255, all below the bundle's threshold 0.5
SPOT = (16, 16, 16)  # y, x, side at 64 px: an 8-px square at the model's 32 px
MISSED_VALUE = 45  # "missed" defects are plain and dark: scored like good parts


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def make_category(root: Path) -> Path:
    """64-px parts, so images shrink and masks are resized to the 32-px model as on real data.
    spot: 3 parts with a bright square (found everywhere); missed: 2 dark plain parts whose mask
    is a 8-px corner the model cannot see."""
    for i, v in enumerate(GOOD_VALUES):
        write_png(root / "test" / "good" / f"{i:03d}.png", part(v, (64, 64)))
    for i in range(3):
        write_png(root / "test" / "spot" / f"{i:03d}.png", part(50, (64, 64), SPOT))
        mask = np.zeros((64, 64), np.uint8)
        mask[16:32, 16:32] = 255
        write_png(root / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask)
    for i in range(2):
        write_png(root / "test" / "missed" / f"{i:03d}.png", part(MISSED_VALUE, (64, 64)))
        mask = np.zeros((64, 64), np.uint8)
        mask[:8, :8] = 255
        write_png(root / "ground_truth" / "missed" / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture
def category(tmp_path) -> Path:
    return make_category(tmp_path / "cat")


def run(bundle_dir: Path, data: Path):
    bundle = load_bundle(bundle_dir)
    return evaluate(bundle, load_backend(bundle, "onnxruntime"), data, batch=4)


def test_known_answers(tmp_path, category):
    r = run(make_bundle(tmp_path / "b"), category)
    assert [i.name for i in r.items][:2] == ["good/000.png", "good/001.png"] and len(r.items) == 10
    good = np.array(GOOD_VALUES) / 255
    # Good first, then defect types in name order.
    np.testing.assert_allclose(r.scores, [*good, MISSED_VALUE / 255, MISSED_VALUE / 255, 1, 1, 1], rtol=1e-6)
    # Overall: each spot beats all 5 good, each missed beats one (40): (3·5 + 2·1) / (5·5).
    assert r.overall.image_auroc == pytest.approx(17 / 25)
    assert r.overall.pixel_auroc == pytest.approx(roc_auc_score(r.masks.ravel(), r.maps.ravel()))
    # Best F1 flags the 3 spots (P 1, R 3/5 → 0.75); the line threshold sits between 80/255 and 1.
    assert r.overall.f1_max == pytest.approx(0.75)
    assert r.overall.f1_threshold == pytest.approx((1 + 80 / 255) / 2)
    spot, missed = r.per_type["spot"], r.per_type["missed"]
    assert (spot.image_auroc, spot.pixel_auroc, spot.aupro, spot.f1_max) == pytest.approx((1, 1, 1, 1))
    assert missed.image_auroc == pytest.approx(1 / 5)
    # Missed defect pixels (45) tie with their own parts' other pixels and beat only the 40 part:
    # (1024 + ½·2016) / (5·1024 + 2016); no region is found before FPR 0.3, so AUPRO is 0.
    assert missed.pixel_auroc == pytest.approx((1024 + 0.5 * 2016) / (5 * 1024 + 2016))
    assert missed.aupro == pytest.approx(0.0)
    # At the calibrated threshold 0.5: spots NG, missed OK, every good part OK.
    c = r.overall.confusion
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 0, 5, 2) and c.false_accept_rate == pytest.approx(0.4)
    assert spot.confusion.false_accept_rate == 0 and missed.confusion.false_accept_rate == 1
    assert any("only 5 good parts" in n for n in r.notes)


def test_json_holds_every_number(tmp_path, category):
    r = run(make_bundle(tmp_path / "b"), category)
    data = json.loads(r.write_json(tmp_path / "eval.json").read_text())
    assert data["overall"]["image_auroc"] == pytest.approx(17 / 25)
    assert set(data["per_type"]) == {"missed", "spot"}
    assert data["per_type"]["missed"]["confusion"]["fn"] == 2
    assert data["calibration"]["threshold"] == 0.5 and data["pixel_grid"] == [32, 32]
    assert data["overall"]["confusion"]["false_reject_rate_95"][0] == 0.0
    assert [(i["file"], i["verdict"]) for i in data["images"]][5:8] == [
        ("missed/000.png", "OK"),
        ("missed/001.png", "OK"),
        ("spot/000.png", "NG"),
    ]


def test_same_code_path_for_reference_outputs_and_compare(tmp_path, category):
    deployed = run(make_bundle(tmp_path / "b"), category)
    cal = deployed.calibration
    same = evaluate_outputs(deployed.items, deployed.maps[:, None], deployed.scores, cal)
    d = compare(deployed, same)
    assert d["image_auroc_drop_points"] == 0 and d["within_budget"] and d["map_max_abs_diff"] == 0
    # A reference that also ranks the missed parts above the good ones: deployed loses AUROC.
    scores = deployed.scores.copy()
    scores[5:7] = 0.9
    better = evaluate_outputs(deployed.items, deployed.maps, scores, cal)
    d = compare(deployed, better)
    assert better.overall.image_auroc == 1.0
    assert d["image_auroc_drop_points"] == pytest.approx(100 * (1 - 17 / 25)) and not d["within_budget"]
    assert d["overall"]["image_auroc"]["diff"] == pytest.approx(17 / 25 - 1)
    assert d["score_max_abs_diff"] == pytest.approx(0.9 - MISSED_VALUE / 255)
    with pytest.raises(ValueError, match="same files"):
        compare(deployed, evaluate_outputs(deployed.items[::-1], deployed.maps, deployed.scores, cal))


def test_pixel_grid_bounds_memory():
    assert pixel_grid(83, 256, 256) == (256, 256)
    h, w = pixel_grid(4000, 512, 512)
    assert 4000 * h * w <= 1 << 24 and h == w and h < 512
    maps = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    np.testing.assert_allclose(to_grid(maps, (2, 2))[0], [[2.5, 4.5], [10.5, 12.5]])  # area means


def test_a_category_without_masks_is_measured_on_images_alone(tmp_path, category):
    shutil.rmtree(category / "ground_truth")
    r = run(make_bundle(tmp_path / "b"), category)
    assert all(i.mask is None for i in r.items) and r.overall.n_defect == 5
    assert r.overall.image_auroc == pytest.approx(17 / 25)  # as with the masks: images only
    assert np.isnan(r.overall.pixel_auroc) and np.isnan(r.overall.aupro)
    assert any("no ground_truth/ masks: image metrics only" in n for n in r.notes)
    assert not any("have no defect pixels" in n for n in r.notes)
    write_report(r, tmp_path / "report.html")  # n/a pixel metrics do not break the report


def test_layout_errors_name_what_is_missing(tmp_path, category):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty/test: missing; an MVTec AD category"):
        find_items(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"categories in it: cat; give one of them"):
        find_items(category.parent)
    (category / "ground_truth" / "spot" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"ground_truth/spot/001_mask.png: missing \(1 of 3"):
        find_items(category)
    for p in (category / "test" / "spot", category / "test" / "missed"):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    with pytest.raises(DatasetError, match="no defect-type folders"):
        find_items(category)


def test_cli_writes_json_and_a_self_contained_report(tmp_path, category, capsys):
    bundle = make_bundle(tmp_path / "b")
    assert main(["--bundle", str(bundle), "--data", str(category), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "spot" in out and "missed" in out and "report.html" in out
    data = json.loads((bundle / "eval" / "eval.json").read_text())
    assert data["overall"]["n_defect"] == 5
    page = (bundle / "eval" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "data:image/jpeg;base64," in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # nothing fetched
    assert "FALSE ACCEPT" in page and "missed/000.png" in page


def test_cli_user_errors_are_one_line(tmp_path, category, capsys):
    bundle = make_bundle(tmp_path / "b")
    assert main(["--bundle", str(bundle), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-eval: ") and "test: missing" in err and "\n" not in err
    assert main(["--bundle", str(tmp_path / "nope"), "--data", str(category)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_calibrating_on_the_evaluated_good_parts_is_flagged(tmp_path, category):
    bundle = make_bundle(tmp_path / "b", threshold=None)
    assert calibrate_main(["--bundle", str(bundle), "--data", str(category / "test" / "good")]) == 0
    assert any("optimistic" in n for n in run(bundle, category).notes)


def test_without_calibration_still_measures_and_reports(tmp_path, category):
    r = run(make_bundle(tmp_path / "b", threshold=None), category)
    assert r.overall.confusion is None and r.to_json()["calibration"] is None
    assert any("no calibration.yaml" in n for n in r.notes)
    page = write_report(r, tmp_path / "r.html").read_text()
    assert "F1-max threshold" in page and "false accepts</th>" not in page


def test_unreadable_or_non_finite_test_parts_are_data_errors(tmp_path, category, capsys, overflowing):
    bundle = make_bundle(tmp_path / "b")
    (category / "test" / "good" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert main(["--bundle", str(bundle), "--data", str(category)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("edge-eval: ") and "good/._000.png: unreadable image" in err
    (category / "test" / "good" / "._000.png").unlink()
    overflowing(calibration.eval_cli, GOOD_VALUES[2], "score")
    assert main(["--bundle", str(bundle), "--data", str(category)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("edge-eval: ") and "1 of 10 images" in err and "test/good/002.png" in err
    assert "not finite" in err
    assert not (bundle / "eval").exists()


def test_masks_stored_as_0_1_count_as_0_255(tmp_path, category):
    bundle = make_bundle(tmp_path / "b")
    standard = run(bundle, category)
    for path in (category / "ground_truth").rglob("*_mask.png"):
        cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) // 255)
    labels = run(bundle, category)
    np.testing.assert_array_equal(labels.masks, standard.masks)
    assert labels.overall == standard.overall and not any("mask" in n for n in labels.notes)


def test_defect_without_defect_pixels_is_noted(tmp_path, category):
    write_png(category / "ground_truth" / "spot" / "001_mask.png", np.zeros((64, 64), np.uint8))
    r = run(make_bundle(tmp_path / "b"), category)
    assert any("1 of 5 defect images have no defect pixels" in n and "spot/001.png" in n for n in r.notes), r.notes


BOTTLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec" / "bottle"


@pytest.mark.mvtec
@pytest.mark.slow
@pytest.mark.skipif(not BOTTLE.is_dir(), reason="MVTec AD bottle not in ../shared/data/mvtec")
def test_bottle_patchcore_bundle(tmp_path):
    export_cli = pytest.importorskip("export.cli", reason="export-engine not available")
    bundle = tmp_path / "bottle"
    # A small random coreset keeps export in seconds; the metrics need only be sane, not best.
    assert (
        export_cli.main(
            [
                "--method",
                "patchcore",
                "--data",
                str(BOTTLE),
                "--out",
                str(bundle),
                "--coreset",
                "random",
                "--coreset-ratio",
                "0.01",
                "--reference",
            ]
        )
        == 0
    )
    assert calibrate_main(["--bundle", str(bundle), "--holdout"]) == 0
    assert main(["--bundle", str(bundle), "--data", str(BOTTLE), "--out", str(tmp_path / "eval")]) == 0
    data = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert data["overall"]["n_good"] == 20 and data["overall"]["n_defect"] == 63
    assert set(data["per_type"]) == {"broken_large", "broken_small", "contamination"}
    assert data["overall"]["image_auroc"] > 0.9 and data["overall"]["pixel_auroc"] > 0.9
    assert 0.5 < data["overall"]["aupro_30"] <= 1 and data["overall"]["f1_max"] > 0.9
    assert data["overall"]["confusion"]["tp"] + data["overall"]["confusion"]["fn"] == 63
    assert (tmp_path / "eval" / "report.html").stat().st_size > 100_000
    # The deployed ONNX model against the PyTorch model it was exported from, on all 83 parts.
    diff = data["reference_comparison"]
    assert diff["within_budget"] and abs(diff["image_auroc_drop_points"]) < 0.01
    assert abs(diff["overall"]["pixel_auroc"]["diff"]) < 1e-4
    assert diff["score_max_abs_diff"] < 1e-3 * data["overall"]["f1_threshold"]


def test_names_from_the_data_are_shown_as_text_in_the_report(tmp_path):
    # A defect type's folder and a file name are the data's, not the report's: markup in them is text.
    root = make_category(tmp_path / "cat")
    kind, name = "<script>alert(1)", '<img src=x onerror="alert(2)">'  # a folder name holds no "/"
    for top, file in (("test", "000.png"), ("ground_truth", "000_mask.png")):
        folder = (root / top / "spot").rename(root / top / kind)
        (folder / file).rename(folder / file.replace("000", name))
    result = run(make_bundle(tmp_path / "b"), root)
    assert kind in result.per_type
    page = write_report(result, tmp_path / "r.html").read_text()
    assert "<script" not in page and "<img src=x" not in page  # no live tag
    assert "<td>&lt;script&gt;alert(1)</td>" in page  # the type, in its table row
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;.png" in page  # the file, in its gallery caption
