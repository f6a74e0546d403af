"""Bundle loading, queue and batcher, preprocessing and verdicts: the per-frame path, piece by piece."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from edge.backends import load_backend
from edge.batcher import FrameQueue
from edge.bundle import BundleError, load_bundle
from edge.preprocess import frame_problem, resize, to_input
from edge.types import Frame
from edge.verdict import Judge

from .conftest import make_bundle, part


def frame(seq: int, image=None, error=None) -> Frame:
    return Frame("cam0", seq, f"cam0:{seq}", time.time(), image, error)


def test_bundle_loads_and_names_model(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert (b.height, b.width, b.method) == (32, 32, "brightness")
    assert b.name.startswith("bundle@") and len(b.name) == len("bundle@") + 12
    assert b.calibration.threshold == pytest.approx(0.5)
    assert b.calibration.threshold_for(6.0) == pytest.approx(0.4 + 6 * 0.1 / 3)


def test_bundle_refuses_altered_model(tiny_bundle):
    with open(tiny_bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx: content differs"):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(schema_version=99), "schema_version 99"),
        (lambda m: m["input"].update(layout="NCHW"), "uint8 NHWC RGB"),
        (lambda m: m.pop("input"), "missing or bad field"),
        (lambda m: m["input"].update(height=0), "input is 0x32 pixels"),
        (lambda m: m.pop("files"), "files must map model.onnx"),
        (lambda m: m.update(files=["model.onnx"]), "files must map model.onnx"),
        (lambda m: m["files"].update({"model.onnx": None}), "files must map model.onnx"),
        (lambda m: m["files"]["model.onnx"].pop("sha256"), "files must map model.onnx"),
        (lambda m: m["files"]["model.onnx"].update(bytes="many"), "files must map model.onnx"),
        (lambda m: m["files"].update({"../model.onnx": m["files"]["model.onnx"]}), "files must map model.onnx"),
        (lambda m: m.update(precision=["fp16"]), "precision must be a mapping"),
    ],
)
def test_bundle_refuses_bad_meta(tiny_bundle, edit, match):
    meta = yaml.safe_load((tiny_bundle / "bundle.yaml").read_text())
    edit(meta)
    (tiny_bundle / "bundle.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(BundleError, match=match):
        load_bundle(tiny_bundle)


@pytest.mark.parametrize(
    "name, fix", [("bundle.yaml", "re-export the bundle"), ("calibration.yaml", "run edge-calibrate again")]
)
@pytest.mark.parametrize(
    "content", [b"\xff\xfe garbage", b"a: [\n", b"- 1\n- 2\n"], ids=["not-utf8", "not-yaml", "not-a-mapping"]
)
def test_unreadable_yaml_is_one_line_naming_the_file_and_the_fix(tiny_bundle, name, fix, content):
    (tiny_bundle / name).write_bytes(content)
    with pytest.raises(BundleError) as caught:
        load_bundle(tiny_bundle)
    message = str(caught.value)
    assert message.startswith(f"{tiny_bundle / name}: ") and message.endswith(fix) and "\n" not in message


@pytest.mark.parametrize(
    "key, value, must_be",
    [
        ("threshold", float("inf"), "a finite number"),  # every part would be OK
        ("threshold", float("nan"), "a finite number"),
        ("mu", float("nan"), "a finite number"),
        ("k", float("inf"), "a finite number"),
        ("pixel_threshold", float("nan"), "a finite number"),
        ("sigma", float("inf"), "a finite number >= 0"),
        ("sigma", -1.0, "a finite number >= 0"),
    ],
)
def test_calibration_values_must_be_finite(tiny_bundle, key, value, must_be):
    path = tiny_bundle / "calibration.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), key: value}))
    with pytest.raises(BundleError) as caught:
        load_bundle(tiny_bundle)
    assert str(caught.value) == f"{path}: {key} is {value}, not {must_be}; delete it and run edge-calibrate again"


def test_calibration_on_a_single_image_has_sigma_zero(tiny_bundle):
    path = tiny_bundle / "calibration.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "sigma": 0.0, "threshold": 0.4, "n": 1}))
    assert load_bundle(tiny_bundle).calibration.threshold_for(3.0) == pytest.approx(0.4)


def test_bundle_missing_dir_is_clear(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")


def test_queue_drops_oldest_and_counts():
    q = FrameQueue(size=3)
    for i in range(5):
        assert q.put(frame(i))
    assert (q.frames_in["cam0"], q.dropped["cam0"], len(q)) == (5, 2, 3)
    batch = q.next_batch(max_batch=8, max_wait_s=0.0, idle_timeout_s=0.1)
    assert [f.seq for f in batch.frames] == [2, 3, 4]


def test_queue_block_mode_waits_for_room():
    q = FrameQueue(size=2, overflow="block")
    q.put(frame(0))
    q.put(frame(1))
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(frame(2)), done.set()), daemon=True).start()
    assert not done.wait(0.2), "put must block while the queue is full"
    q.next_batch(1, 0.0, 0.1)
    assert done.wait(2)
    assert (q.frames_in["cam0"], q.dropped["cam0"]) == (3, 0)


def test_batcher_waits_max_wait_then_returns_partial():
    q = FrameQueue(size=16)
    q.put(frame(0))
    t0 = time.monotonic()
    batch = q.next_batch(max_batch=4, max_wait_s=0.15, idle_timeout_s=1.0)
    waited = time.monotonic() - t0
    assert len(batch.frames) == 1 and 0.1 <= waited < 1.0


def test_batcher_returns_full_batch_without_waiting():
    q = FrameQueue(size=16)
    for i in range(6):
        q.put(frame(i))
    t0 = time.monotonic()
    batch = q.next_batch(max_batch=4, max_wait_s=5.0, idle_timeout_s=1.0)
    assert [f.seq for f in batch.frames] == [0, 1, 2, 3] and time.monotonic() - t0 < 1.0


def test_batcher_idle_and_closed():
    q = FrameQueue(size=4)
    assert q.next_batch(4, 0.01, idle_timeout_s=0.05) is None
    q.put(frame(0))
    q.close()
    assert not q.put(frame(1)), "a closed queue takes nothing more"
    assert [f.seq for f in q.next_batch(4, 1.0, 1.0).frames] == [0]
    assert q.next_batch(4, 1.0, 1.0) is None and q.frames_in["cam0"] == 1


@pytest.mark.parametrize(
    "image, why",
    [
        (None, "camera timeout"),
        (np.zeros((48, 64), np.uint8), "expected HxWx3 uint8"),
        (np.zeros((48, 64, 3), np.float32), "expected HxWx3 uint8"),
        (np.zeros((4, 4, 3), np.uint8), "too small"),
    ],
)
def test_bad_frames_are_named(image, why):
    assert why in frame_problem(frame(0, image, error="camera timeout" if image is None else None))


def test_to_input_resizes_to_model_size():
    frames = [frame(0, part(10, (48, 64))), frame(1, part(200, (32, 32)))]
    x = to_input(frames, 32, 32)
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.uint8
    assert x[0].max() == 10 and x[1].min() == 200


@pytest.mark.parametrize(
    "image, model",
    [
        ((2048, 2448), (256, 256)),  # a 5 MP frame into a square model
        ((2048, 2448), (1024, 1024)),
        ((300, 1200), (256, 1024)),  # a long part at its own aspect
        ((300, 1200), (512, 512)),  # shrinks across, grows along
        ((1200, 300), (512, 512)),
        ((300, 1200), (600, 300)),  # the same at whole ratios
        ((1200, 300), (300, 600)),
        ((64, 48), (256, 1024)),  # grows both ways
    ],
)
def test_resize_keeps_brightness_and_averages_fine_texture_at_any_size_and_aspect(image, model):
    (h, w), (mh, mw) = image, model
    stripes = np.zeros((h, w, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px columns: any shrink across them must average them to mid-grey
    dst = np.empty((mh, mw, 3), np.uint8)
    out = resize(stripes, mh, mw, dst=dst)
    assert out.shape == (mh, mw, 3) and np.shares_memory(out, dst)
    assert out.mean() == pytest.approx(127.5, abs=1)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype(np.uint8)
    # Averaging k pixels divides the noise's spread by √k; a resize that samples keeps it.
    shrunk = resize(noise, mh, mw)
    assert shrunk.mean() == pytest.approx(noise.mean(), abs=1.5)
    averaged = max(h / mh, 1) * max(w / mw, 1)
    assert shrunk.std() < 1.1 * noise.std() / np.sqrt(averaged)


def test_judge_ok_ng_and_regions_in_frame_pixels():
    judge = Judge(threshold=0.5, pixel_threshold=0.4)
    amap = np.zeros((32, 32), np.float32)
    amap[8:12, 16:24] = 0.9  # one 8x4 blob at model resolution
    amap[28:30, 2:4] = 0.45
    f = frame(0, part(0, (64, 128)))  # frame is 2x model size vertically, 4x horizontally
    v = judge.judge(f, amap, 0.9)
    assert v.verdict == "NG" and len(v.regions) == 2
    top = v.regions[0]
    assert top.bbox == (64, 16, 32, 8) and top.area_px == 32 * 8 and top.peak == pytest.approx(0.9)
    assert judge.judge(f, np.zeros((32, 32), np.float32), 0.5).verdict == "OK"  # at threshold: OK


@pytest.mark.parametrize("model, image", [((288, 288), (480, 654)), ((256, 256), (480, 643)), ((64, 64), (100, 67))])
def test_region_bboxes_cover_the_region_inside_the_judged_image(model, image):
    (mh, mw), (fh, fw) = model, image
    amap = np.zeros(model, np.float32)
    amap[mh // 2 :, mw // 2 :] = 1.0  # touches the right and bottom edges
    amap[3:7, 5:9] = 1.0
    v = Judge(0.5, 0.5).judge(frame(0, np.zeros((fh, fw, 3), np.uint8)), amap, 1.0)
    boxes = sorted(r.bbox for r in v.regions)
    assert boxes[1][0] + boxes[1][2] == fw and boxes[1][1] + boxes[1][3] == fh
    x, y, w, h = boxes[0]
    assert x <= 5 * fw / mw and x + w >= 9 * fw / mw and y <= 3 * fh / mh and y + h >= 7 * fh / mh


def test_judge_never_ok_on_nan():
    v = Judge(0.5, 0.5).judge(frame(0, part(0)), np.full((32, 32), np.nan, np.float32), float("nan"))
    assert v.verdict == "ERROR" and "non-finite" in v.error


def test_pixel_threshold_never_above_image_threshold():
    assert Judge(threshold=0.5, pixel_threshold=0.9).pixel_threshold == 0.5


def test_onnxruntime_backend_runs_the_contract(tiny_bundle):
    backend = load_backend(load_bundle(tiny_bundle), "onnxruntime")
    x = to_input([frame(0, part(51)), frame(1, part(0, spot=(4, 4, 8)))], 32, 32)
    maps, scores = backend.infer(x)
    assert maps.shape == (2, 1, 32, 32) and scores.shape == (2,)
    assert scores == pytest.approx([0.2, 1.0], abs=1e-6)
    assert "CPUExecutionProvider" in backend.describe()["providers"]


def test_backend_refuses_contract_breaking_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    root = make_bundle(tmp_path / "b")
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(root / "model.onnx"))
    from edge.backends import BackendError

    with pytest.raises(BackendError, match="engine contract"):
        load_backend(load_bundle(root, verify_hashes=False))
