"""edge-build-engine: build a TensorRT engine from a bundle's model.onnx on the machine that runs it.

An engine only runs on the GPU model and TensorRT version that built it, so it is built on
the target (a Jetson with JetPack, a GPU box), written into the bundle as
``model.<gpu>-trt<version>-<precision>.engine`` and recorded in bundle.yaml's ``engines:``.

No torch here, on purpose: this runs on a Jetson that has only TensorRT and the line side.
Unlike the rest of export/, it imports edge's engine-record contract (edge.engines) and
platform probe, so the writer and the reader of ``engines:`` cannot drift apart.

Written against the TensorRT 10.x builder API. TensorRT 11 removed the FP16 builder flag
(weakly typed networks), so an fp16 build there is refused with a message.
scripts/check_tensorrt_api.py type-checks this file against TensorRT's own Python bindings.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edge.backends.base import BackendError
from edge.backends.tensorrt import INPUT, probe_platform, trt_logger
from edge.bundle import BUNDLE_FILE, Bundle, BundleError, load_bundle
from edge.engines import engine_file_name, engine_record
from edge.trust import SigningKey, add_sign_key_argument, check_unchanged, load_signing_key, sign_or_warn
from edge.yamlfile import read_yaml_file

if TYPE_CHECKING:
    import tensorrt  # for the type checker only (scripts/check_tensorrt_api.py)

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"


class EngineBuildError(RuntimeError):
    """The engine could not be built; the message says why and what to do."""


def use_fp16(bundle: Bundle, fp16: bool | None) -> bool:
    """Whether to build with fp16 kernels: as asked, or by default unless the bundle says its
    model loses accuracy in fp16 (bundle.yaml ``precision``, written by its exporter)."""
    caution = bundle.fp16_caution
    if fp16 is None:
        if caution:
            log.info("building in fp32: %s (--fp16 to build in fp16 anyway)", caution)
        return caution is None
    if fp16 and caution:
        log.warning("building in fp16 as asked, although %s; check it with edge-eval before the line uses it", caution)
    return fp16


def build_engine(
    bundle_dir: str | Path,
    *,
    fp16: bool | None = None,
    max_batch: int = 32,
    opt_batch: int = 8,
    workspace_gb: float | None = None,
    device: int = 0,
    sign_key: SigningKey | None = None,
) -> dict[str, Any]:
    """Build the bundle's engine for CUDA GPU `device` (batch 1..max_batch, tuned for
    opt_batch), write it into the bundle and record it in bundle.yaml (signed with ``sign_key``).
    Returns the record. ``fp16`` None: fp16 unless the bundle advises against it (use_fp16)."""
    _check_batches(opt_batch, max_batch)
    bundle = load_bundle(bundle_dir)  # hashes checked: build only from the model bundle.yaml vouches for
    if sign_key is not None:  # before minutes of building: never vouch for files changed since they were signed
        check_unchanged(bundle.path)
    fp16 = use_fp16(bundle, fp16)
    gpu_name, trt_version, compute_capability = _probe(device)
    import tensorrt as trt  # the probe imported it

    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no FP16 builder flag (removed in TensorRT 11); "
            "use TensorRT 10.x, or build with --no-fp16"
        )
    precision = "fp16" if fp16 else "fp32"
    log.info(
        "building a %s engine for %s with TensorRT %s (batch 1..%d, opt %d): minutes, not seconds",
        precision,
        gpu_name,
        trt_version,
        max_batch,
        opt_batch,
    )
    build = {"fp16": fp16, "max_batch": max_batch, "opt_batch": opt_batch, "workspace_gb": workspace_gb}
    plan = _build_on(device, gpu_name, trt_version, bundle, build)
    path = bundle.path / engine_file_name(gpu_name, trt_version, precision)
    _write_atomic(path, plan)
    record = engine_record(
        bundle,
        path,
        gpu=gpu_name,
        compute_capability=compute_capability,
        tensorrt=trt_version,
        precision=precision,
        max_batch=max_batch,
        opt_batch=opt_batch,
    )
    record_engine(bundle.path, record, sign_key)
    return record


def _build_on(
    device: int, gpu_name: str, trt_version: str, bundle: Bundle, build: dict[str, Any]
) -> tensorrt.IHostMemory:
    """The serialized engine, built in a CUDA context of its own on GPU ``device``."""
    import pycuda.driver as cuda

    try:
        ctx = cuda.Device(device).make_context()  # TensorRT builds for the GPU of the current context
    except cuda.Error as e:
        raise EngineBuildError(f"CUDA GPU {device} ({gpu_name}): cannot create a context ({e})") from None
    failed = None
    try:
        plan = _serialize(bundle, **build)
    except Exception as e:
        # Kept as text: the exception's traceback holds _serialize's frames, and with them TensorRT's
        # builder, network and parser, which must be freed while their CUDA context is current.
        failed = (
            str(e)
            if isinstance(e, EngineBuildError)
            else f"{bundle.onnx_path}: TensorRT {trt_version} failed while building ({type(e).__name__}: {e})"
        )
    finally:
        ctx.pop()
        ctx.detach()
    if failed is not None:
        raise EngineBuildError(failed)
    return plan


def _check_batches(opt_batch: int, max_batch: int) -> None:
    if not 1 <= opt_batch <= max_batch:
        raise EngineBuildError(f"need 1 <= opt batch <= max batch, got opt {opt_batch} and max {max_batch}")


def _serialize(
    bundle: Bundle, *, fp16: bool, max_batch: int, opt_batch: int, workspace_gb: float | None
) -> tensorrt.IHostMemory:
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    # From the file, not from bytes: the parser then finds model.onnx.data beside it.
    if not parser.parse_from_file(str(bundle.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{bundle.onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")
    config = builder.create_builder_config()
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = bundle.height, bundle.width
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (1, h, w, 3), (opt_batch, h, w, 3), (max_batch, h, w, 3))
    config.add_optimization_profile(profile)
    cache_path = bundle.path / TIMING_CACHE
    _attach_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"{bundle.onnx_path}: TensorRT {trt.__version__} could not build an engine "
            "(its log above says why); with little GPU memory, try a smaller --max-batch"
        )
    _write_atomic(cache_path, config.get_timing_cache().serialize())
    return plan


def _attach_timing_cache(config: tensorrt.IBuilderConfig, path: Path) -> None:
    """Reuse the tactic timings of earlier builds (rebuilds take seconds instead of minutes);
    a cache from another GPU or TensorRT version is set aside, not trusted."""
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("%s: from another GPU or TensorRT version; starting a new timing cache", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def add_engine_record(bundle_dir: Path, record: dict[str, Any]) -> None:
    """Append `record` to bundle.yaml's engines, replacing any record of the same file; every
    other key stays as it was."""
    path = Path(bundle_dir) / BUNDLE_FILE
    meta = read_yaml_file(path)
    assert isinstance(meta, dict), f"{path}: load_bundle checked it is a mapping"
    others = [e for e in meta.get("engines") or [] if not (isinstance(e, dict) and e.get("file") == record["file"])]
    meta["engines"] = [*others, record]
    _write_atomic(path, yaml.safe_dump(meta, sort_keys=False, default_flow_style=None, width=100).encode())


def record_engine(bundle_dir: Path, record: dict[str, Any], sign_key: SigningKey | None) -> None:
    """An engine just built into the bundle: its record in bundle.yaml, and an entry in the
    bundle's signed history (written: bundle.yaml, the engine, the timing cache)."""
    add_engine_record(bundle_dir, record)
    detail = f"{record['precision']} engine {record['file']} for {record['gpu']}, TensorRT {record['tensorrt']}"
    sign_or_warn(
        bundle_dir, sign_key, "build-engine", "edge-build-engine", detail, {BUNDLE_FILE, record["file"], TIMING_CACHE}
    )


def _write_atomic(path: Path, data: Any) -> None:
    # A daemon starting meanwhile sees the old file or the new one, never half of one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def add_engine_arguments(group: argparse._ArgumentGroup) -> None:
    """The build options, shared by edge-build-engine and export-engine --build-engine."""
    group.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        help="let TensorRT use fp16 kernels, or not (--no-fp16: an fp32 engine); default: fp16 "
        "unless bundle.yaml's precision says the model loses accuracy in fp16",
    )
    group.add_argument(
        "--max-batch", type=int, default=32, metavar="N", help="largest batch the engine takes (default %(default)s)"
    )
    group.add_argument(
        "--opt-batch",
        type=int,
        default=8,
        metavar="N",
        help="batch the engine is tuned for: the line config's batch.max_batch (default %(default)s)",
    )
    group.add_argument(
        "--workspace-gb",
        type=float,
        metavar="GB",
        help="cap TensorRT's build workspace, e.g. 2 on a small Jetson (default: TensorRT's own)",
    )
    group.add_argument("--device", type=int, default=0, metavar="N", help="CUDA GPU index (default %(default)s)")


def check_can_build(args: argparse.Namespace) -> None:
    """Raise EngineBuildError now if ``args`` could not build an engine on this machine: what
    export-engine asks before it spends minutes training."""
    _check_batches(args.opt_batch, args.max_batch)
    _probe(args.device)


def _probe(device: int) -> tuple[str, str, str]:
    """(gpu_name, trt_version, compute_capability) of CUDA GPU ``device``, or an EngineBuildError
    saying why TensorRT cannot build here."""
    try:
        return probe_platform(device).require()
    except BackendError as e:
        raise EngineBuildError(str(e)) from None


def build_from_args(bundle_dir: str | Path, args: argparse.Namespace, sign_key: SigningKey | None = None) -> str:
    """Build with add_engine_arguments' options; the one-line summary of what was built."""
    record = build_engine(
        bundle_dir,
        fp16=args.fp16,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        workspace_gb=args.workspace_gb,
        device=args.device,
        sign_key=sign_key,
    )
    return (
        f"{Path(bundle_dir) / record['file']}: {record['precision']} engine for {record['gpu']}, TensorRT "
        f"{record['tensorrt']}, batch 1..{record['max_batch']} (opt {record['opt_batch']}), "
        f"{record['bytes'] / 2**20:.1f} MiB; recorded in {Path(bundle_dir) / BUNDLE_FILE}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="edge-build-engine",
        description="Build a TensorRT engine from a bundle's model.onnx on this machine (engines only run on the "
        "GPU model and TensorRT version that built them), write it into the bundle and record it in "
        "bundle.yaml, where `backend: auto` finds it. Needs TensorRT 10.x and pycuda.",
        epilog="Example: edge-build-engine --bundle bundles/bottle-patchcore --max-batch 16 --opt-batch 4",
    )
    p.add_argument("--bundle", required=True, help="bundle directory written by export-engine")
    add_engine_arguments(p.add_argument_group("engine"))
    add_sign_key_argument(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        sign_key = load_signing_key(args.sign_key) if args.sign_key else None
        print(build_from_args(args.bundle, args, sign_key))
    except (EngineBuildError, BundleError, OSError) as e:
        print(f"edge-build-engine: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
