"""Line configuration: YAML loaded safely, validated, every error naming the key, the bad
value and what is allowed (see configs/line3.yaml for the documented example)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A line config (or CLI) mistake, phrased for the person who wrote it: one line,
    naming the file, the key, the bad value and what is allowed."""


@dataclass(slots=True)
class ReconnectConfig:
    initial_s: float = 0.5  # first back-off after a camera drops out
    max_s: float = 10.0  # back-off doubles up to this


@dataclass(slots=True)
class RoiConfig:
    """The part of each frame the line judges, in the camera's own pixels; the defaults are the
    whole frame."""

    x: int = 0
    y: int = 0
    width: int | None = None  # None: to the frame's right edge
    height: int | None = None  # None: to the frame's bottom edge


GENTL_PATH_VARIABLE = "GENICAM_GENTL64_PATH"  # the GenTL standard's list of producer folders


@dataclass(slots=True)
class SourceConfig:
    kind: str  # "video" | "images" | "camera" | "genicam"
    name: str = "cam0"  # stream name, used in frame ids and status
    path: Path | None = None  # video file or image folder (relative paths: to the config file)
    url: str | None = None  # camera: RTSP/HTTP URL ...
    index: int | None = None  # ... or a local device index
    loop: bool = False  # files only: start again at the end
    fps: float | None = None  # pace to this rate (a file standing in for a camera); None = as fast as read
    cti: Path | None = None  # genicam: the GenTL producer; None = the .cti files in $GENICAM_GENTL64_PATH
    device: str | None = None  # genicam: serial number, id or user-defined name; None = the first camera
    features: dict = field(default_factory=dict)  # genicam: feature name → value, written in this order
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)
    rotate: int = 0  # degrees clockwise, after the roi: 0, 90, 180 or 270


@dataclass(slots=True)
class BatchConfig:
    max_batch: int = 8
    max_wait_ms: float = 10.0


@dataclass(slots=True)
class QueueConfig:
    size: int = 64
    overflow: str = "drop_oldest"  # "drop_oldest" (live cameras) | "block" (files judged completely)


@dataclass(slots=True)
class PublishConfig:
    bind: str = "tcp://127.0.0.1:5556"
    heartbeat_s: float = 1.0
    sndhwm: int = 1000
    wait_for_subscribers: int = 0  # hold the source until this many subscribers are connected
    wait_timeout_s: float = 10.0
    curve_secret_key: Path | None = None  # server key pair file (edge-keys): turns on CURVE encryption
    curve_allowed_clients: Path | None = None  # folder of the subscribers' public .key files allowed in


@dataclass(slots=True)
class EvidenceConfig:
    dir: Path | None = None  # save NG overlays here; None = off
    max_files: int = 200  # ring: the oldest are deleted beyond this
    raw: bool = False  # NG parts: the judged image too, lossless, next to the overlay
    ok_every: int = 0  # every Nth OK part per stream, raw, into dir/ok; 0 = none


@dataclass(slots=True)
class MetricsConfig:
    bind: str | None = None  # "HOST:PORT" for a Prometheus /metrics endpoint; None = off


@dataclass(slots=True)
class HmiImagesConfig:
    bind: str | None = None  # ZeroMQ endpoint of the image topic "img/<line>/<station>"; None = off
    every_ng: bool = True  # every NG part's image (as long as the queue has room)
    ok_per_s: float = 2.0  # OK parts, at most this many per second per camera; 0 = none
    max_side: int = 480  # the JPEG's longer side, pixels
    quality: int = 80  # JPEG quality, 1..100
    queue: int = 8  # images waiting to be encoded; beyond it they are dropped and counted
    sndhwm: int = 16  # images waiting for a slow subscriber; beyond it they are dropped and counted


@dataclass(slots=True)
class HmiConfig:
    """What edge-hmi (the operator's screen, its own process) reads; the daemon ignores it."""

    bind: str = "127.0.0.1:8080"  # HOST:PORT the page is served on
    users: Path | None = None  # file of reviewers with scrypt-hashed passwords (edge-hmi --add-user); None = no review
    review_dir: Path = Path("review")  # reviewed parts: good/ and <defect type>/, and log.jsonl
    curve_secret_key: Path | None = None  # the HMI's own CURVE key pair (edge-keys), for a CURVE publisher
    error_rate_limit: float = 0.05  # alarm above this share of ERROR verdicts among recent parts
    drift_z_limit: float = 3.0  # alarm when the OK scores' drift |z| exceeds this
    stale_s: float = 5.0  # alarm when no status came for this long


@dataclass(slots=True)
class StreamConfig:
    station: str  # the stream's topic is "<line>/<station>"
    source: SourceConfig
    bundle: Path | None = None  # this camera's model; after loading, the line's bundle when not given
    k: float | None = None  # this camera's k; after loading, the line's k when not given


@dataclass(slots=True)
class LineConfig:
    line: str
    bundle: Path | None = None  # the streams' model unless they name their own; edge-capture needs none
    station: str | None = None  # one camera: station + source ...
    source: SourceConfig | None = None
    streams: list[StreamConfig] = field(default_factory=list)  # ... or several; after loading, always filled
    backend: str = "auto"  # "auto" | "onnxruntime" | "tensorrt"
    gpu: int = 0  # CUDA device index, for TensorRT and ONNX Runtime's GPU providers
    k: float | None = None  # overrides calibration.yaml's k: threshold = mu + k*sigma
    batch: BatchConfig = field(default_factory=BatchConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    hmi_images: HmiImagesConfig = field(default_factory=HmiImagesConfig)
    hmi: HmiConfig = field(default_factory=HmiConfig)
    log_level: str = "INFO"
    log_format: str = "text"  # "text" for people, "json" (one object per line) for log collectors
    path: Path | None = None  # the file it was loaded from

    def topic(self, stream: StreamConfig) -> str:
        return f"{self.line}/{stream.station}"


# --- validation: one declarative table (_LINE below) drives every check and message ---


@dataclass(frozen=True, slots=True)
class _Key:
    """A scalar key: its type and the range, choices or pattern its value must fit."""

    type: type  # bool, int, float, str, Path, or dict (names → scalars)
    lo: float | None = None
    hi: float | None = None
    above: bool = False  # lo itself is not allowed (a rate or a period of 0)
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # the whole string must match
    pattern_text: str = ""  # how to say the pattern to a person
    nullable: bool = False
    required: bool = False
    exists: str | None = None  # Path only: "file" or "directory"


@dataclass(frozen=True, slots=True)
class _Section:
    """A mapping that becomes one of the dataclasses above."""

    cls: type
    keys: Mapping[str, _Key | _Section]
    required: bool = False
    tag: str | None = None  # the key whose value picks more keys from `variants`
    variants: Mapping[str, Mapping[str, _Key | _Section]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _List:
    """A non-empty list of mappings, each one a _Section."""

    item: _Section
    required: bool = False


@dataclass(frozen=True, slots=True)
class _Ctx:
    where: str  # the file, as the user named it
    base: Path  # relative paths are resolved against this


_MISSING = object()
_EXISTS = {"file": Path.is_file, "directory": Path.is_dir}
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60

# line and station form the ZeroMQ topic "<line>/<station>", and subscribers filter by prefix.
_TOPIC_PART = _Key(str, required=True, pattern=r"[^/\s]+", pattern_text="a non-empty name without '/' or whitespace")
# A station named "status" would publish its verdicts on "<line>/status", which reads as a status topic.
_STATION = _Key(str, pattern=r"(?!status$)[^/\s]+", pattern_text=_TOPIC_PART.pattern_text + ", other than 'status'")
_POSITIVE = _Key(float, lo=0, above=True)
_POSITIVE_OR_NULL = _Key(float, lo=0, above=True, nullable=True)
_ENDPOINT = _Key(
    str, pattern=r"(tcp|ipc|inproc)://\S+", pattern_text="a ZeroMQ endpoint such as 'tcp://127.0.0.1:5556'"
)
_HOST_PORT = _Key(str, pattern=r"[^\s:]+:\d{1,5}", pattern_text="HOST:PORT, e.g. '127.0.0.1:9108'")
_FILE_KEYS = {"loop": _Key(bool), "fps": _POSITIVE_OR_NULL}
_RECONNECT = _Section(ReconnectConfig, {"initial_s": _POSITIVE, "max_s": _POSITIVE})
_SOURCE_VARIANTS: dict[str, Mapping[str, _Key | _Section]] = {
    "video": {"path": _Key(Path, required=True, exists="file"), **_FILE_KEYS},
    "images": {"path": _Key(Path, required=True, exists="directory"), **_FILE_KEYS},
    "camera": {
        "url": _Key(str, nullable=True),
        "index": _Key(int, lo=0, nullable=True),
        "reconnect": _RECONNECT,
    },
    "genicam": {
        "cti": _Key(Path, nullable=True, exists="file"),
        "device": _Key(
            str,
            nullable=True,
            pattern=r".+",
            pattern_text="a serial number, device id or user-defined name (quoted when it is a number)",
        ),
        "features": _Key(dict),
        "reconnect": _RECONNECT,
    },
}
_SOURCE = _Section(
    SourceConfig,
    tag="kind",
    variants=_SOURCE_VARIANTS,
    keys={
        "kind": _Key(str, required=True, choices=tuple(_SOURCE_VARIANTS)),
        "name": _Key(str, pattern=r"[^/\s:]+", pattern_text="a non-empty name without '/', ':' or whitespace"),
        "roi": _Section(
            RoiConfig,
            {
                "x": _Key(int, lo=0),
                "y": _Key(int, lo=0),
                "width": _Key(int, lo=1, nullable=True),
                "height": _Key(int, lo=1, nullable=True),
            },
        ),
        "rotate": _Key(int, lo=0, hi=270),
    },
)
_BUNDLE = _Key(Path, nullable=True, exists="directory")
_STREAM = _Section(
    StreamConfig,
    keys={
        "station": dataclasses.replace(_STATION, required=True),
        "source": dataclasses.replace(_SOURCE, required=True),
        "bundle": _BUNDLE,
        "k": _POSITIVE_OR_NULL,
    },
)
_LINE = _Section(
    LineConfig,
    required=True,
    keys={
        "line": _TOPIC_PART,
        "station": _STATION,
        "bundle": _BUNDLE,
        "source": _SOURCE,
        "streams": _List(_STREAM),
        "backend": _Key(str, choices=("auto", "onnxruntime", "tensorrt")),
        "gpu": _Key(int, lo=0),
        "k": _POSITIVE_OR_NULL,
        "batch": _Section(BatchConfig, {"max_batch": _Key(int, lo=1, hi=1024), "max_wait_ms": _Key(float, lo=0)}),
        "queue": _Section(
            QueueConfig, {"size": _Key(int, lo=1), "overflow": _Key(str, choices=("drop_oldest", "block"))}
        ),
        "publish": _Section(
            PublishConfig,
            {
                "bind": _ENDPOINT,
                "heartbeat_s": _POSITIVE,
                "sndhwm": _Key(int, lo=1),
                "wait_for_subscribers": _Key(int, lo=0),
                "wait_timeout_s": _POSITIVE,
                "curve_secret_key": _Key(Path, nullable=True, exists="file"),
                "curve_allowed_clients": _Key(Path, nullable=True, exists="directory"),
            },
        ),
        "evidence": _Section(
            EvidenceConfig,
            {
                "dir": _Key(Path, nullable=True),
                "max_files": _Key(int, lo=1),
                "raw": _Key(bool),
                "ok_every": _Key(int, lo=0),
            },
        ),
        "metrics": _Section(
            MetricsConfig,
            {"bind": dataclasses.replace(_HOST_PORT, nullable=True)},
        ),
        "hmi_images": _Section(
            HmiImagesConfig,
            {
                "bind": dataclasses.replace(_ENDPOINT, nullable=True),
                "every_ng": _Key(bool),
                "ok_per_s": _Key(float, lo=0),
                "max_side": _Key(int, lo=16, hi=4096),
                "quality": _Key(int, lo=1, hi=100),
                "queue": _Key(int, lo=1),
                "sndhwm": _Key(int, lo=1),
            },
        ),
        "hmi": _Section(
            HmiConfig,
            {
                "bind": _HOST_PORT,
                "users": _Key(Path, nullable=True),
                "review_dir": _Key(Path),
                "curve_secret_key": _Key(Path, nullable=True, exists="file"),
                "error_rate_limit": _Key(float, lo=0, hi=1),
                "drift_z_limit": _POSITIVE,
                "stale_s": _POSITIVE,
            },
        ),
        "log_level": _Key(str, choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        "log_format": _Key(str, choices=("text", "json")),
    },
)


def _error(where: str, key: str, problem: str, fix: str = "", got: object = _MISSING) -> ConfigError:
    message = f"{where}: {key}: {problem}"
    if got is not _MISSING:
        message += f" (got {_repr.repr(got)})"
    if fix:
        message += f"; {fix}"
    # One line, whatever a YAML key or a parser message contained: logs and PLC screens show one line.
    return ConfigError(" ".join(message.splitlines()))


def _allowed(key: _Key) -> str:
    if key.type is dict:
        return "a mapping of names to values (numbers, true/false or strings)"
    if key.choices:
        text = "one of " + ", ".join(map(repr, key.choices))
    elif key.type is bool:
        text = "true or false"
    elif key.type is Path:
        text = "a path"
    elif key.type is str:
        text = key.pattern_text or "a non-empty string"
    else:
        text = "an integer" if key.type is int else "a number"
        if key.hi is not None:
            text += f" from {key.lo} to {key.hi}"
        elif key.lo is not None:
            text += f" {'>' if key.above else '>='} {key.lo}"
    return text + (" or null" if key.nullable else "")


def _fits(key: _Key, value: object) -> bool:
    if value is None:
        return key.nullable
    if key.type is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and (isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v)))
            for k, v in value.items()
        )
    if key.type is bool or isinstance(value, bool):
        # YAML's true/false are Python bools, which are also ints: keep them apart both ways.
        return key.type is bool and isinstance(value, bool)
    if key.type in (int, float):
        if not isinstance(value, int if key.type is int else (int, float)) or not math.isfinite(value):
            return False
        above_lo = key.lo is None or (value > key.lo if key.above else value >= key.lo)
        return above_lo and (key.hi is None or value <= key.hi)
    if not isinstance(value, str) or not value.strip():
        return False
    if key.choices:
        return value in key.choices
    return key.pattern is None or re.fullmatch(key.pattern, value) is not None


def _scalar(key: _Key, value: object, dotted: str, ctx: _Ctx) -> object:
    if not _fits(key, value):
        raise _error(ctx.where, dotted, f"must be {_allowed(key)}", got=value)
    if value is None:
        return None
    if key.type is float:
        return float(value)
    if key.type is not Path:
        return value
    path = (ctx.base / Path(value).expanduser()).resolve()
    if key.exists and not _EXISTS[key.exists](path):
        raise _error(
            ctx.where,
            dotted,
            f"no such {key.exists} {path}",
            got=value,
            fix=f"fix the path (relative paths are taken from {ctx.base})",
        )
    return path


def _one(spec: _Key | _Section | _List, data: dict, name: str, dotted: str, ctx: _Ctx) -> object:
    if name not in data:
        if spec.required:
            what = f"a mapping ('{name}:' with its keys)" if isinstance(spec, _Section) else _allowed(spec)
            raise _error(ctx.where, dotted, "required key is missing", fix=f"add it: {what}")
        return _MISSING
    if isinstance(spec, _Section):
        return _build(spec, data[name], dotted, ctx)
    if isinstance(spec, _List):
        items = data[name]
        if not isinstance(items, list) or not items:
            raise _error(
                ctx.where,
                dotted,
                "must be a non-empty list of mappings",
                got=items,
                fix="see configs/line3.yaml for the layout",
            )
        return [_build(spec.item, item, f"{dotted}[{i}]", ctx) for i, item in enumerate(items)]
    return _scalar(spec, data[name], dotted, ctx)


def _dotted(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _build(section: _Section, data: object, prefix: str, ctx: _Ctx) -> object:
    if data is None and not section.required:
        data = {}  # a section with every key commented out means "all defaults"
    if not isinstance(data, dict):
        raise _error(
            ctx.where,
            prefix or "top level",
            "must be a mapping of keys",
            got=data,
            fix="see configs/line3.yaml for the layout",
        )
    keys = dict(section.keys)
    values: dict[str, object] = {}
    variant = ""
    if section.tag is not None:
        values[section.tag] = _one(keys[section.tag], data, section.tag, _dotted(prefix, section.tag), ctx)
        keys.update(section.variants[values[section.tag]])
        variant = f" for {section.tag} {values[section.tag]!r}"
    for name in data:
        if name not in keys:
            close = difflib.get_close_matches(str(name), list(keys), n=1)
            fix = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(keys)
            raise _error(ctx.where, _dotted(prefix, name), f"unknown key{variant}", got=data[name], fix=fix)
    for name, spec in keys.items():
        if name not in values:
            values[name] = _one(spec, data, name, _dotted(prefix, name), ctx)
    return section.cls(**{name: value for name, value in values.items() if value is not _MISSING})


def _resolve_streams(cfg: LineConfig, ctx: _Ctx) -> None:
    """One camera (station + source) or several (streams): after this, cfg.streams holds them."""
    single = cfg.station is not None or cfg.source is not None
    if cfg.streams and single:
        raise _error(
            ctx.where,
            "streams",
            "give either station + source (one camera) or streams (several), not both",
            fix="move station and source into a streams entry",
        )
    if not cfg.streams:
        for key in ("station", "source"):
            if getattr(cfg, key) is None:
                raise _error(
                    ctx.where,
                    key,
                    "required key is missing",
                    fix="add station: and source: (one camera), or streams: (several)",
                )
        cfg.streams = [StreamConfig(cfg.station, cfg.source)]
    for what, values in (
        ("station", [s.station for s in cfg.streams]),
        ("source.name", [s.source.name for s in cfg.streams]),
    ):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise _error(
                ctx.where,
                f"streams[].{what}",
                "must differ between streams",
                got=twice,
                fix=f"give each stream its own {what}",
            )


def _check_across_keys(cfg: LineConfig, ctx: _Ctx, need_bundle: bool) -> None:
    _resolve_streams(cfg, ctx)
    for i, stream in enumerate(cfg.streams):
        stream.bundle = stream.bundle or cfg.bundle
        stream.k = cfg.k if stream.k is None else stream.k
        if need_bundle and stream.bundle is None:
            raise _error(
                ctx.where,
                "bundle" if cfg.source is not None else f"streams[{i}].bundle",
                "required key is missing",
                fix="add the bundle directory made by export-engine (with "
                "streams: one bundle for all, or a bundle in each entry)",
            )
    for i, stream in enumerate(cfg.streams):
        source = stream.source
        where = "source" if len(cfg.streams) == 1 and cfg.source is not None else f"streams[{i}].source"
        if source.kind == "camera" and (source.url is None) == (source.index is None):
            raise _error(
                ctx.where,
                where,
                "a camera needs exactly one of 'url' or 'index'",
                got={"url": source.url, "index": source.index},
                fix="set url (e.g. rtsp://camera.local/stream1) or index (e.g. 0), not both",
            )
        if source.kind == "genicam" and source.cti is None and not os.environ.get(GENTL_PATH_VARIABLE):
            raise _error(
                ctx.where,
                f"{where}.cti",
                f"no GenTL producer: cti is not set and neither is ${GENTL_PATH_VARIABLE}",
                fix="set cti to the camera vendor's .cti file",
            )
        if source.rotate % 90:
            raise _error(
                ctx.where, f"{where}.rotate", "must be 0, 90, 180 or 270 (degrees clockwise)", got=source.rotate
            )
        backoff = source.reconnect
        if backoff.max_s < backoff.initial_s:
            raise _error(
                ctx.where,
                f"{where}.reconnect.max_s",
                f"must be >= {where}.reconnect.initial_s ({backoff.initial_s})",
                got=backoff.max_s,
            )
    if cfg.evidence.dir is None and (cfg.evidence.raw or cfg.evidence.ok_every):
        raise _error(
            ctx.where,
            "evidence.dir",
            "required by evidence.raw and evidence.ok_every",
            fix="set dir to the folder the pictures go into",
        )
    pub = cfg.publish
    if (pub.curve_secret_key is None) != (pub.curve_allowed_clients is None):
        raise _error(
            ctx.where,
            "publish",
            "CURVE needs both curve_secret_key and curve_allowed_clients",
            got={"curve_secret_key": pub.curve_secret_key, "curve_allowed_clients": pub.curve_allowed_clients},
            fix="set both (make keys with edge-keys), or neither for a plain socket",
        )


# edge-capture records a line's cameras before it has a bundle: bundles are neither needed nor checked.
_UNCHECKED_BUNDLE = _Key(Path, nullable=True)
_LINE_WITHOUT_BUNDLE = dataclasses.replace(
    _LINE,
    keys={
        **_LINE.keys,
        "bundle": _UNCHECKED_BUNDLE,
        "streams": _List(dataclasses.replace(_STREAM, keys={**_STREAM.keys, "bundle": _UNCHECKED_BUNDLE})),
    },
)


def parse_config(data: object, path: Path | None = None, need_bundle: bool = True) -> LineConfig:
    """Validates already-loaded YAML data; relative paths resolve against path's directory
    (the working directory when path is None). ``need_bundle`` False: the bundle key may be
    left out and is not checked (edge-capture)."""
    ctx = _Ctx(
        where=str(path) if path is not None else "<config>",
        base=Path(path).resolve().parent if path is not None else Path.cwd(),
    )
    cfg = _build(_LINE if need_bundle else _LINE_WITHOUT_BUNDLE, data, "", ctx)
    _check_across_keys(cfg, ctx, need_bundle)
    cfg.path = Path(path) if path is not None else None
    return cfg


def yaml_problem(e: yaml.YAMLError) -> tuple[str, str]:
    """Where a YAML parse failed and why, without the multi-line excerpt str(e) carries."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
    return where, getattr(e, "problem", None) or " ".join(str(e).split())


def load_config(path: str | Path, need_bundle: bool = True) -> LineConfig:
    """Reads, parses and validates a line config; every mistake is one ConfigError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise _error(
            str(path),
            "file",
            f"cannot read the config file: {e.strerror or e}",
            fix="check the path and its permissions",
        ) from e
    except UnicodeDecodeError as e:
        raise _error(str(path), "file", "is not UTF-8 text", fix="save it as UTF-8") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where, problem = yaml_problem(e)
        raise _error(
            str(path),
            where,
            f"YAML syntax error: {problem}",
            fix="check the indentation, the ':' after each key and the quotes",
        ) from e
    return parse_config(data, path, need_bundle)
