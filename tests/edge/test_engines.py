"""The GPU path's logic on CPU: engine records and staleness (records written here beside a
real tiny bundle: whether an engine fits is decided from its record, no engine needed),
`backend: auto` as a pure decision, and the clear errors of a machine without TensorRT.

Building and running a real engine needs TensorRT 10, pycuda and a CUDA GPU; those tests are
here and skip with the reason when any of them is missing (CI has none)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import yaml

from edge.backends import BackendError, choose_backend, load_backend
from edge.backends.onnxruntime import ORT_TRT_CACHE, elsewhere, provider_options
from edge.backends.tensorrt import Platform, probe_platform
from edge.bundle import load_bundle
from edge.engines import StaleEngineError, engine_file_name, engine_record, find_engine, require_engine
from export.cli import main as export_main
from export.engine import add_engine_record, build_engine, use_fp16
from export.engine import main as build_main

H100, ORIN, TRT = "NVIDIA H100 80GB HBM3", "Orin", "10.8.0"
GPU_HERE = Platform(trt_version=TRT, gpu_name=H100, compute_capability="9.0")

PLATFORM = probe_platform()
needs_gpu = pytest.mark.skipif(
    PLATFORM.problem is not None, reason=f"needs TensorRT 10, pycuda and a CUDA GPU: {PLATFORM.problem}"
)
without_tensorrt = pytest.mark.skipif(PLATFORM.problem is None, reason="TensorRT and a GPU are usable here")


def add_engine(root: Path, gpu: str = H100, trt: str = TRT, content: bytes = b"not a real engine", **changes) -> dict:
    """An engine file and its bundle.yaml record; `changes` edit the record as a stale one would read."""
    path = root / engine_file_name(gpu, trt, "fp16")
    path.write_bytes(content)
    record = {
        **engine_record(
            load_bundle(root),
            path,
            gpu=gpu,
            compute_capability="9.0",
            tensorrt=trt,
            precision="fp16",
            max_batch=8,
            opt_batch=4,
        ),
        **changes,
    }
    add_engine_record(root, record)
    return record


# -- naming and records -------------------------------------------------------------------


def test_engine_file_is_named_by_gpu_and_tensorrt_version():
    assert engine_file_name(H100, "10.8.0", "fp16") == "model.nvidia-h100-80gb-hbm3-trt10.8.0-fp16.engine"
    assert engine_file_name(ORIN, "10.3.0", "fp32") == "model.orin-trt10.3.0-fp32.engine"


def test_record_is_added_replaced_and_other_keys_kept(tiny_bundle):
    before = yaml.safe_load((tiny_bundle / "bundle.yaml").read_text())
    add_engine(tiny_bundle, content=b"first")
    orin = add_engine(tiny_bundle, gpu=ORIN)
    rebuilt = add_engine(tiny_bundle, content=b"second build")
    after = yaml.safe_load((tiny_bundle / "bundle.yaml").read_text())
    assert {k: v for k, v in after.items() if k != "engines"} == {k: v for k, v in before.items() if k != "engines"}
    assert after["engines"] == [orin, rebuilt]
    assert rebuilt["onnx_sha256"] == before["files"]["model.onnx"]["sha256"] and "onnx_data_sha256" not in rebuilt
    assert load_bundle(tiny_bundle).meta["engines"] == [orin, rebuilt]


# -- staleness ----------------------------------------------------------------------------


def test_fitting_engine_is_found(tiny_bundle):
    record = add_engine(tiny_bundle)
    assert find_engine(load_bundle(tiny_bundle), H100, TRT) == (record, [])
    assert require_engine(load_bundle(tiny_bundle), H100, TRT) == record


def _stale_file(root: Path, record: dict, how: str) -> None:
    path = root / record["file"]
    if how == "missing":
        path.unlink()
    else:  # same size, other bytes: only the hash can tell
        path.write_bytes(bytes(b ^ 1 for b in path.read_bytes()))


@pytest.mark.parametrize(
    "gpu, trt, changes, damage, why",
    [
        (ORIN, TRT, {}, None, f"built for {H100!r}, this GPU is {ORIN!r}"),
        (H100, "10.9.0", {}, None, f"built with TensorRT {TRT}, this machine has 10.9.0"),
        (H100, TRT, {"onnx_sha256": "0" * 64}, None, "built from another model.onnx (the model changed since)"),
        (H100, TRT, {"onnx_data_sha256": "0" * 64}, None, "built from another model.onnx.data"),
        (H100, TRT, {}, "missing", "listed in bundle.yaml but the file is missing"),
        (H100, TRT, {}, "altered", "content differs from its sha256 in bundle.yaml"),
    ],
)
def test_stale_engine_is_rejected_with_its_reason(tiny_bundle, gpu, trt, changes, damage, why):
    record = add_engine(tiny_bundle, **changes)
    if damage:
        _stale_file(tiny_bundle, record, damage)
    found, reasons = find_engine(load_bundle(tiny_bundle), gpu, trt)
    assert found is None
    assert len(reasons) == 1 and reasons[0].startswith(record["file"] + ": ") and why in reasons[0], reasons


def test_every_rejected_engine_is_explained_and_a_fitting_one_still_found(tiny_bundle):
    fits = add_engine(tiny_bundle)
    orin = add_engine(tiny_bundle, gpu=ORIN)
    meta = yaml.safe_load((tiny_bundle / "bundle.yaml").read_text())
    meta["engines"].append({"gpu": H100})
    (tiny_bundle / "bundle.yaml").write_text(yaml.safe_dump(meta))
    found, reasons = find_engine(load_bundle(tiny_bundle), H100, TRT)
    assert found == fits
    assert len(reasons) == 2 and "engines[2]" in reasons[0] and "not an engine record" in reasons[0], reasons
    assert reasons[1].startswith(orin["file"]), reasons


def test_no_fitting_engine_error_lists_reasons_and_rebuild_command(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(StaleEngineError, match="bundle.yaml lists no engine") as e:
        require_engine(bundle, H100, TRT)
    assert f"edge-build-engine --bundle {bundle.path}" in str(e.value)
    orin = add_engine(tiny_bundle, gpu=ORIN)
    with pytest.raises(StaleEngineError) as e:
        require_engine(load_bundle(tiny_bundle), H100, TRT)
    msg = str(e.value)
    assert orin["file"] in msg and f"this GPU is {H100!r}" in msg and "edge-build-engine --bundle" in msg
    assert "\n" not in msg


# -- backend: auto, decided from facts --------------------------------------------------------


def test_auto_without_tensorrt_runs_onnxruntime(tiny_bundle):
    add_engine(tiny_bundle)
    choice = choose_backend(load_bundle(tiny_bundle), Platform(problem="TensorRT is not installed (No module)"))
    assert choice.kind == "onnxruntime" and "TensorRT is not installed" in choice.reason


def test_auto_with_tensorrt_but_no_gpu_runs_onnxruntime(tiny_bundle):
    add_engine(tiny_bundle)
    choice = choose_backend(load_bundle(tiny_bundle), Platform(trt_version=TRT, problem="no usable CUDA GPU 0"))
    assert choice.kind == "onnxruntime" and "no usable CUDA GPU" in choice.reason


def test_auto_with_only_stale_engines_runs_onnxruntime_and_says_why(tiny_bundle):
    orin = add_engine(tiny_bundle, gpu=ORIN)
    old = add_engine(tiny_bundle, trt="10.3.0")
    choice = choose_backend(load_bundle(tiny_bundle), GPU_HERE)
    assert choice.kind == "onnxruntime" and choice.engine is None
    assert orin["file"] in choice.reason and old["file"] in choice.reason
    assert "edge-build-engine --bundle" in choice.reason


def test_auto_with_fitting_engine_runs_tensorrt(tiny_bundle):
    add_engine(tiny_bundle, gpu=ORIN)
    fits = add_engine(tiny_bundle)
    choice = choose_backend(load_bundle(tiny_bundle), GPU_HERE)
    assert choice.kind == "tensorrt" and choice.engine == fits and fits["file"] in choice.reason


def test_load_backend_auto_logs_choice_and_reason(tiny_bundle, caplog):
    add_engine(tiny_bundle, gpu="Some Other GPU")
    with caplog.at_level("INFO", logger="edge.backends"):
        backend = load_backend(load_bundle(tiny_bundle), "auto")
    backend.close()
    assert backend.name == "onnxruntime"
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.backends"]
    assert len(lines) == 1 and "auto → onnxruntime" in lines[0], lines
    if PLATFORM.problem is None:  # with TensorRT and a GPU, the stale engine is what sent it to ONNX Runtime
        assert "model.some-other-gpu" in lines[0]


def test_unknown_backend_is_refused(tiny_bundle):
    with pytest.raises(BackendError, match="'cuda' is unknown"):
        load_backend(load_bundle(tiny_bundle), "cuda")


# -- a machine without TensorRT ----------------------------------------------------------------


@without_tensorrt
def test_configured_tensorrt_without_it_is_one_clear_error(tiny_bundle):
    with pytest.raises(BackendError) as e:
        load_backend(load_bundle(tiny_bundle), "tensorrt")
    msg = str(e.value)
    assert "is not installed" in msg or "cannot be loaded" in msg
    assert "pip install" in msg and "JetPack" in msg and "\n" not in msg


@without_tensorrt
def test_build_engine_without_tensorrt_exits_2_with_one_line(tiny_bundle, capsys):
    before = (tiny_bundle / "bundle.yaml").read_text()
    assert build_main(["--bundle", str(tiny_bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-build-engine: TensorRT is not installed") and "\n" not in err, err
    assert (tiny_bundle / "bundle.yaml").read_text() == before


def test_build_engine_refuses_opt_batch_above_max(tiny_bundle, capsys):
    assert build_main(["--bundle", str(tiny_bundle), "--max-batch", "4", "--opt-batch", "8"]) == 2
    assert "opt batch <= max batch" in capsys.readouterr().err


def test_onnxruntime_gpu_providers_run_on_the_configured_gpu(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda, cpu = provider_options(providers, bundle, gpu=1, max_batch=8)
    cache = str(bundle.path / ORT_TRT_CACHE)
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "device_id": "1",
            "trt_fp16_enable": "True",
            "trt_profile_min_shapes": "image:1x32x32x3",
            "trt_profile_opt_shapes": "image:8x32x32x3",
            "trt_profile_max_shapes": "image:8x32x32x3",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache,
        },
    )
    assert (cuda, cpu) == (("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider")


def test_the_tensorrt_provider_follows_the_bundles_fp16_advice_and_may_go_without_a_cache(tiny_bundle):
    advise_fp32(tiny_bundle)
    ((_, opts),) = provider_options(["TensorrtExecutionProvider"], load_bundle(tiny_bundle), 0, 4, trt_cache=False)
    assert opts["trt_fp16_enable"] == "False" and not any("cache" in key for key in opts)


def test_a_session_that_fell_back_to_another_gpu_is_noticed():
    assert elsewhere({"CUDAExecutionProvider": {"device_id": "0"}, "CPUExecutionProvider": {}}, gpu=1)
    assert not elsewhere({"CUDAExecutionProvider": {"device_id": "1"}}, gpu=1)
    assert not elsewhere({"CPUExecutionProvider": {}}, gpu=1)


@pytest.mark.skipif(
    PLATFORM.problem is None or "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="a GPU runtime is here, where GPU 3 may not exist",
)
def test_a_configured_gpu_is_harmless_on_a_cpu_box(tiny_bundle):
    backend = load_backend(load_bundle(tiny_bundle), "auto", gpu=3)
    try:
        assert backend.name == "onnxruntime"
        images = np.zeros((2, backend.bundle.height, backend.bundle.width, 3), np.uint8)
        maps, scores = backend.infer(images)
        assert scores.shape == (2,)
    finally:
        backend.close()


def advise_fp32(root: Path, why: str = "fp16 lost 0.32 points") -> None:
    meta = yaml.safe_load((root / "bundle.yaml").read_text())
    (root / "bundle.yaml").write_text(yaml.safe_dump({**meta, "precision": {"fp16": False, "why": why}}))


def test_fp16_by_default_and_as_asked(tiny_bundle, caplog):
    bundle = load_bundle(tiny_bundle)
    assert bundle.fp16_caution is None
    assert (use_fp16(bundle, None), use_fp16(bundle, True), use_fp16(bundle, False)) == (True, True, False)
    assert not caplog.records


def test_bundle_that_loses_accuracy_in_fp16_builds_fp32_unless_told(tiny_bundle, caplog):
    advise_fp32(tiny_bundle)
    bundle = load_bundle(tiny_bundle)
    assert bundle.fp16_caution == "fp16 lost 0.32 points"
    with caplog.at_level("INFO", logger="export.engine"):
        assert use_fp16(bundle, None) is False
        assert use_fp16(bundle, True) is True
        assert use_fp16(bundle, False) is False
    (default, forced) = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert default == ("INFO", "building in fp32: fp16 lost 0.32 points (--fp16 to build in fp16 anyway)")
    assert forced[0] == "WARNING" and "fp16 lost 0.32 points" in forced[1] and "edge-eval" in forced[1]


def export_engine(tmp_path: Path, write_images, *extra: str) -> list[str]:
    """export-engine's PatchCore on 4 tiny images, ending in --build-engine; its argv."""
    write_images(tmp_path / "good", 4)
    return [
        "--method",
        "patchcore",
        "--data",
        str(tmp_path / "good"),
        "--out",
        str(tmp_path / "bundle"),
        "--size",
        "64",
        "--coreset-ratio",
        "0.05",
        "--holdout",
        "0.25",
        "--build-engine",
        *extra,
    ]


@without_tensorrt
def test_export_engine_build_engine_without_tensorrt_stops_before_training(tmp_path, write_images, capsys):
    assert export_main(export_engine(tmp_path, write_images)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("export-engine: error: --build-engine: TensorRT is not installed") and "\n" not in err
    assert "nothing was trained" in err and "edge-build-engine" in err
    assert not (tmp_path / "bundle").exists()


def test_export_engine_refuses_opt_batch_above_max_before_training(tmp_path, write_images, capsys):
    assert export_main(export_engine(tmp_path, write_images, "--max-batch", "4", "--opt-batch", "8")) == 2
    assert "opt batch <= max batch" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_engine_builder_needs_no_torch():
    """It runs on a Jetson with only TensorRT and the line side."""
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'torchvision', 'timm'}:\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import export.engine\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# -- on a GPU: a real engine ---------------------------------------------------------------------


@needs_gpu
def test_built_engine_fits_and_matches_onnxruntime_at_every_batch_size(tiny_bundle):
    record = build_engine(tiny_bundle, max_batch=4, opt_batch=2)
    bundle = load_bundle(tiny_bundle)
    assert record["file"] == engine_file_name(PLATFORM.gpu_name, PLATFORM.trt_version, "fp16")
    assert find_engine(bundle, PLATFORM.gpu_name, PLATFORM.trt_version) == (record, [])
    assert (tiny_bundle / "timing.cache").is_file()
    trt, ort = load_backend(bundle, "auto"), load_backend(bundle, "onnxruntime")
    try:
        assert trt.name == "tensorrt" and trt.describe()["max_batch"] == 4
        buffers = {name: host.ctypes.data for name, host in trt._host.items()}
        rng = np.random.default_rng(0)
        for n in (1, 3, 4, 6):  # partial, full, and more than the engine's max batch
            images = rng.integers(0, 256, (n, bundle.height, bundle.width, 3), dtype=np.uint8)
            (maps, scores), (ref_maps, ref_scores) = trt.infer(images), ort.infer(images)
            assert maps.dtype == scores.dtype == np.float32
            assert maps.shape == (n, 1, bundle.height, bundle.width) and scores.shape == (n,)
            np.testing.assert_allclose(maps, ref_maps, rtol=1e-2, atol=1e-3)
            np.testing.assert_allclose(scores, ref_scores, rtol=1e-2, atol=1e-3)
        assert {name: host.ctypes.data for name, host in trt._host.items()} == buffers
    finally:
        trt.close()
        ort.close()


@needs_gpu
def test_reload_then_run_and_close_on_another_thread(tiny_bundle):
    """The daemon's model reload: a second engine opens while the first is still open, the first
    closes, and the second goes on; the second then runs and closes on a thread that did not open it."""
    build_engine(tiny_bundle, max_batch=2, opt_batch=1)
    bundle = load_bundle(tiny_bundle)
    images = np.random.default_rng(0).integers(0, 256, (2, bundle.height, bundle.width, 3), dtype=np.uint8)
    old, new = load_backend(bundle, "tensorrt"), load_backend(bundle, "tensorrt")
    ref_maps, ref_scores = old.infer(images)
    old.close()
    with ThreadPoolExecutor(1) as other_thread:
        maps, scores = other_thread.submit(new.infer, images).result()
        other_thread.submit(new.close).result()
    np.testing.assert_allclose(maps, ref_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


@needs_gpu
def test_export_engine_build_engine_trains_then_builds_a_fitting_engine(tmp_path, write_images):
    assert export_main(export_engine(tmp_path, write_images, "--max-batch", "2", "--opt-batch", "1")) == 0
    bundle = load_bundle(tmp_path / "bundle")
    record, rejected = find_engine(bundle, PLATFORM.gpu_name, PLATFORM.trt_version)
    assert rejected == [] and (record["precision"], record["max_batch"], record["opt_batch"]) == ("fp16", 2, 1)


@needs_gpu
def test_bundle_advising_fp32_gets_an_fp32_engine(tiny_bundle):
    advise_fp32(tiny_bundle)
    record = build_engine(tiny_bundle, max_batch=2, opt_batch=1)
    assert record["precision"] == "fp32" and record["file"].endswith("-fp32.engine")


@needs_gpu
def test_rebuild_replaces_its_record(tiny_bundle):
    first = build_engine(tiny_bundle, max_batch=2, opt_batch=1)
    second = build_engine(tiny_bundle, max_batch=2, opt_batch=1)
    assert first["file"] == second["file"]
    assert load_bundle(tiny_bundle).meta["engines"] == [second]


@needs_gpu
def test_configured_tensorrt_refuses_stale_engine(tiny_bundle):
    add_engine(tiny_bundle, gpu="Some Other GPU", trt=PLATFORM.trt_version)
    with pytest.raises(StaleEngineError, match="edge-build-engine --bundle"):
        load_backend(load_bundle(tiny_bundle), "tensorrt")
