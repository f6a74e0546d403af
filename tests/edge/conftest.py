"""Line-side fixtures: a real (tiny) ONNX bundle built without torch, so the edge tests run
the real ONNX Runtime on a model whose answer is known: the anomaly map is the pixel
brightness, so bright parts are NG and dark parts OK."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml


def make_brightness_onnx(path: Path, height: int, width: int, *, fail_on_saturated: bool = False) -> None:
    """fail_on_saturated: a model that really fails inside ONNX Runtime (a Gather out of
    bounds) for any batch holding a pixel >= 250, to inject inference faults without mocks."""
    import onnx
    from onnx import TensorProto, helper

    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255])
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["m"], ["mt"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["mt", "scale"], ["map0" if fail_on_saturated else "anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    initializers = [scale]
    if fail_on_saturated:
        initializers += [
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            helper.make_tensor("limit", TensorProto.FLOAT, [], [250.0]),
            helper.make_tensor("five", TensorProto.INT64, [], [5]),
        ]
        nodes[4:4] = [
            helper.make_node("ReduceMax", ["f"], ["fmax"], keepdims=0),
            helper.make_node("GreaterOrEqual", ["fmax", "limit"], ["hot"]),
            helper.make_node("Cast", ["hot"], ["hot_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["hot_i", "five"], ["idx"]),
            helper.make_node("Gather", ["one", "idx"], ["gain"]),
            helper.make_node("Mul", ["map0", "gain"], ["anomaly_map"]),
        ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["B", height, width, 3])],
        [
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["B", 1, height, width]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["B"]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_bundle(
    root: Path, height: int = 32, width: int = 32, *, threshold: float | None = 0.5, fail_on_saturated: bool = False
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    onnx_path = root / "model.onnx"
    make_brightness_onnx(onnx_path, height, width, fail_on_saturated=fail_on_saturated)
    data = onnx_path.read_bytes()
    meta = {
        "schema_version": 1,
        "method": "brightness",
        "backbone": "none",
        "created_at": "2026-11-23T00:00:00+00:00",
        "input": {
            "name": "image",
            "height": height,
            "width": width,
            "channels": 3,
            "dtype": "uint8",
            "layout": "NHWC",
            "colour": "RGB",
        },
        "outputs": {
            "anomaly_map": {"shape": ["B", 1, height, width], "dtype": "float32"},
            "score": {"shape": ["B"], "dtype": "float32"},
        },
        "files": {"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}},
        "engines": [],
    }
    (root / "bundle.yaml").write_text(yaml.safe_dump(meta))
    if threshold is not None:
        (root / "calibration.yaml").write_text(
            yaml.safe_dump(
                {
                    "schema_version": 1,
                    "mu": threshold - 0.1,
                    "sigma": 0.1 / 3,
                    "k": 3.0,
                    "threshold": threshold,
                    "pixel_threshold": threshold,
                    "n": 20,
                    "model_sha256": meta["files"]["model.onnx"]["sha256"],
                }
            )
        )
    return root


@pytest.fixture
def tiny_bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "bundle")


def part(value: int, size: tuple[int, int] = (48, 64), spot: tuple[int, int, int] | None = None) -> np.ndarray:
    """An RGB frame of one grey level, optionally with a bright square (y, x, side) on it."""
    img = np.full((*size, 3), value, np.uint8)
    if spot:
        y, x, s = spot
        img[y : y + s, x : x + s] = 255
    return img


def oversized_png(path) -> None:
    """A PNG whose header claims 100000×100000 pixels: OpenCV raises (cv2.error, over its
    CV_IO_MAX_IMAGE_PIXELS) instead of returning no image, so the grab thread sees an exception.
    If the image reader learns to turn this into an ERROR frame, these tests need another trigger."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )


def folder_with_an_oversized_image(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "00_ok.png"), part(40))
    oversized_png(folder / "01_huge.png")
    cv2.imwrite(str(folder / "02_ok.png"), part(40))
    return folder
