"""Line configuration: YAML loaded safely into the pydantic models below, every mistake one line
naming the key, the bad value and what is allowed (edge.schema). configs/line3.yaml documents
every key, its default and its range."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator
from pydantic.json_schema import SkipJsonSchema

from edge.schema import ConfigError as ConfigError  # re-exported: the line imports it from here
from edge.schema import Model, Section, config_error, fault, validate
from edge.yamlfile import YamlBoundError, load_yaml_text

GENTL_PATH_VARIABLE = "GENICAM_GENTL64_PATH"  # the GenTL standard's list of producer folders
_EXISTS = {"file": Path.is_file, "directory": Path.is_dir}


def _path(must_be: str | None = None, bundle: bool = False) -> BeforeValidator:
    """Relative to the config file's folder; ``must_be`` "file" or "directory" (a bundle: if needed)."""

    def resolve(value: object, info: ValidationInfo) -> object:
        if not isinstance(value, (str, Path)) or not str(value).strip():
            return value  # strict validation refuses it as "a path"
        context = info.context or {}
        base = context.get("base", Path.cwd())
        path = (base / Path(value).expanduser()).resolve()
        if must_be and (not bundle or context.get("need_bundle", True)) and not _EXISTS[must_be](path):
            fix = f"fix the path (relative paths are taken from {base})"
            raise fault(f"no such {must_be} {path}", got=value, fix=fix)
        return path

    return BeforeValidator(resolve)


def _not_status(name: str) -> str:
    if name == "status":  # its verdicts would go to "<line>/status", which reads as a status topic
        raise ValueError(name)
    return name


# Names end up in ZeroMQ topics ("<line>/<station>", filtered by prefix), frame ids and file names.
_NAME = "a non-empty name without '/' or whitespace (nor control characters)"
Name = Annotated[str, Field(pattern=r"^[^/\s\p{Cc}]+$", description=_NAME)]
Station = Annotated[Name, Field(description=_NAME + ", other than 'status'"), AfterValidator(_not_status)]
K = Annotated[float, Field(gt=0, le=100)]
Bundle = Annotated[Path, _path("directory", bundle=True)]
Backoff = Annotated[float, Field(ge=0.01, le=600)]
Pixels = Annotated[int, Field(ge=1, le=65535)]
Count = Annotated[int, Field(ge=0, le=1000000)]


_PORT = r"([1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d\d|655[0-2]\d|6553[0-5])"  # 1 to 65535
_ENDPOINT = "a ZeroMQ endpoint: tcp://HOST:PORT (ports 1 to 65535), ipc://PATH or inproc://NAME"
Endpoint = Annotated[str, Field(pattern=rf"^(tcp://\S+:{_PORT}|(ipc|inproc)://\S+)$", description=_ENDPOINT)]
HostPort = Annotated[
    str, Field(pattern=rf"^[^\s:]+:{_PORT}$", description="HOST:PORT (ports 1 to 65535), e.g. '127.0.0.1:9108'")
]


class ReconnectConfig(Section):
    initial_s: Backoff = 0.5  # first back-off after a camera drops out
    max_s: Backoff = 10.0  # back-off doubles up to this

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise fault(f"must be >= {{prefix}}initial_s ({self.initial_s})", key="max_s", got=self.max_s)
        return self


class RoiConfig(Section):
    """The part of each frame the line judges, in the camera's own pixels; by default all of it."""

    x: Annotated[int, Field(ge=0, le=65535)] = 0
    y: Annotated[int, Field(ge=0, le=65535)] = 0
    width: Pixels | None = None  # None: to the frame's right edge
    height: Pixels | None = None  # None: to the frame's bottom edge


class _Source(Section):
    name: Annotated[str, Field(pattern=r"^[^/:\s\p{Cc}]+$", description=_NAME.replace("'/'", "'/', ':'"))] = "cam0"
    roi: RoiConfig = RoiConfig()
    rotate: Annotated[Literal[0, 90, 180, 270], Field(description="0, 90, 180 or 270 (degrees clockwise)")] = 0


class _FileSource(_Source):
    loop: bool = False  # start again at the end
    fps: Annotated[float | None, Field(ge=0.01, le=100000)] = (
        None  # pace to this rate, as a camera would; None: as read
    )


class VideoConfig(_FileSource):
    kind: Literal["video"]
    path: Annotated[Path, _path("file")]


class ImagesConfig(_FileSource):
    kind: Literal["images"]
    path: Annotated[Path, _path("directory")]


class CameraConfig(_Source):
    kind: Literal["camera"]
    url: Annotated[str | None, Field(pattern=r"\S", description="a non-empty string")] = None  # RTSP/HTTP URL ...
    index: Annotated[int | None, Field(ge=0, le=9999)] = None  # ... or a local device index
    reconnect: ReconnectConfig = ReconnectConfig()

    @model_validator(mode="after")
    def _one_target(self) -> CameraConfig:
        if (self.url is None) == (self.index is None):
            raise fault(
                "a camera needs exactly one of 'url' or 'index'",
                got={"url": self.url, "index": self.index},
                fix="set url (e.g. rtsp://camera.local/stream1) or index (e.g. 0), not both",
            )
        return self

    @property
    def target(self) -> int | str:
        """What OpenCV opens: the device index or the URL (``_one_target`` guarantees one is set)."""
        if self.index is not None:
            return self.index
        assert self.url is not None
        return self.url


_DEVICE = "a serial number, device id or user-defined name (quoted when it is a number)"
_FEATURES = "a mapping of names to values (numbers, true/false or strings)"


class GenicamConfig(_Source):
    kind: Literal["genicam"]
    cti: Annotated[Path, _path("file")] | None = None  # the GenTL producer; None: those in $GENICAM_GENTL64_PATH
    device: Annotated[str | None, Field(pattern=r"\S", description=_DEVICE)] = None  # None: the first camera
    features: dict[str, str | bool | int | float] = Field(default_factory=dict, description=_FEATURES)  # in order
    reconnect: ReconnectConfig = ReconnectConfig()

    @model_validator(mode="after")
    def _producer(self) -> GenicamConfig:
        if self.cti is None and not os.environ.get(GENTL_PATH_VARIABLE):
            problem = f"no GenTL producer: cti is not set and neither is ${GENTL_PATH_VARIABLE}"
            raise fault(problem, key="cti", fix="set cti to the camera vendor's .cti file")
        return self


SourceConfig = Annotated[VideoConfig | ImagesConfig | CameraConfig | GenicamConfig, Field(discriminator="kind")]


class BatchConfig(Section):
    max_batch: Annotated[int, Field(ge=1, le=1024)] = 8
    max_wait_ms: Annotated[float, Field(ge=0, le=10000)] = 10.0


class QueueConfig(Section):
    size: Annotated[int, Field(ge=1, le=100000)] = 64
    overflow: Literal["drop_oldest", "block"] = "drop_oldest"  # block: files judged completely


class PublishConfig(Section):
    bind: Endpoint = "tcp://127.0.0.1:5556"
    heartbeat_s: Annotated[float, Field(ge=0.01, le=3600)] = 1.0
    sndhwm: Annotated[Count, Field(ge=1)] = 1000
    wait_for_subscribers: Annotated[int, Field(ge=0, le=1000)] = 0  # hold the source until this many are connected
    wait_timeout_s: Annotated[float, Field(ge=0.01, le=3600)] = 10.0
    curve_secret_key: Annotated[Path, _path("file")] | None = None  # server key pair (edge-keys): CURVE on
    curve_allowed_clients: Annotated[Path, _path("directory")] | None = None  # the subscribers' public .key files

    @model_validator(mode="after")
    def _curve_pair(self) -> PublishConfig:
        if (self.curve_secret_key is None) != (self.curve_allowed_clients is None):
            raise fault(
                "CURVE needs both curve_secret_key and curve_allowed_clients",
                got={"curve_secret_key": self.curve_secret_key, "curve_allowed_clients": self.curve_allowed_clients},
                fix="set both (make keys with edge-keys), or neither for a plain socket",
            )
        return self


class EvidenceConfig(Section):
    dir: Annotated[Path, _path()] | None = None  # save NG overlays here; None = off
    max_files: Annotated[Count, Field(ge=1)] = 200  # ring: the oldest are deleted beyond this
    raw: bool = False  # NG parts: the judged image too, lossless, next to the overlay
    ok_every: Count = 0  # every Nth OK part per stream, raw, into dir/ok; 0 = none

    @model_validator(mode="after")
    def _needs_dir(self) -> EvidenceConfig:
        if self.dir is None and (self.raw or self.ok_every):
            raise fault("required by {prefix}raw and {prefix}ok_every", "dir", fix="set dir to the folder they go into")
        return self


class MetricsConfig(Section):
    bind: HostPort | None = None  # a Prometheus /metrics endpoint; None = off


Deadline = Annotated[float, Field(gt=0, le=3_600_000)]
Password = Annotated[Path, _path("file")]


class StreamTriggerConfig(Section):
    """A camera's own part rules; after loading, the line's ``trigger`` values where not given."""

    deadline_ms: Deadline | None = None  # a part's verdict must be out this long after its announcement
    unannounced: Literal["judge", "skip"] | None = None  # frames no part claimed: published without part_id, or not


class TriggerConfig(Section):
    """Parts announced by the PLC (edge/plant): their ZeroMQ request socket and default rules."""

    bind: Endpoint | None = None  # ZeroMQ REP endpoint for announcements; None = none over ZeroMQ
    deadline_ms: Deadline = 1000.0
    unannounced: Literal["judge", "skip"] = "judge"
    max_pending: Annotated[int, Field(ge=1, le=100000)] = 256  # per stream: unanswered parts; more are refused


_MQTT_URL = "mqtt://HOST:PORT or mqtts://HOST:PORT (TLS), e.g. 'mqtts://broker:8883'"


class MqttConfig(Section):
    url: Annotated[str, Field(pattern=rf"^mqtts?://[^\s/:]+(:{_PORT})?/?$", description=_MQTT_URL)] | None = None
    topic_prefix: Annotated[str, Field(pattern=r"^[^#+\s]+$", description="a topic without '#', '+' or whitespace")] = (
        "edge"
    )
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None  # None: edge-run-<line>
    username: str | None = None
    password_file: Password | None = None  # the password, on the file's first line (kept out of the config)
    ca_file: Annotated[Path, _path("file")] | None = None  # mqtts: the broker's CA; None = the system's
    cert_file: Annotated[Path, _path("file")] | None = None  # mqtts: this client's certificate, if asked for
    key_file: Annotated[Path, _path("file")] | None = None
    buffer: Annotated[int, Field(ge=1, le=1000000)] = 1000  # held while the broker is away; beyond, oldest dropped
    keepalive_s: Annotated[int, Field(ge=5, le=65535)] = 30
    reconnect: ReconnectConfig = ReconnectConfig()

    @model_validator(mode="after")
    def _pairs(self) -> MqttConfig:
        if (self.username is None) != (self.password_file is None):
            raise fault("username and password_file go together", "username", fix="set both, or neither")
        if (self.cert_file is None) != (self.key_file is None):
            raise fault("cert_file and key_file go together", "cert_file", fix="set both, or neither")
        if self.url and not self.url.startswith("mqtts://") and (self.ca_file or self.cert_file):
            raise fault("ca_file and cert_file need TLS", "url", self.url, fix="use mqtts://")
        return self


_OPCUA_URL = "opc.tcp://HOST:PORT, e.g. 'opc.tcp://0.0.0.0:4840'"


class OpcuaConfig(Section):
    endpoint: Annotated[str, Field(pattern=rf"^opc\.tcp://[^\s/:]+:{_PORT}/?\S*$", description=_OPCUA_URL)] | None = (
        None
    )
    security: Literal["sign_and_encrypt", "none"] = "sign_and_encrypt"  # none: only when configured so
    certificate: Annotated[Path, _path("file")] | None = None  # this server's certificate (edge-keys --opcua)
    private_key: Annotated[Path, _path("file")] | None = None
    trusted_clients: Annotated[Path, _path("directory")] | None = None  # client certificates allowed in
    username: str | None = None  # with password_file: clients must also log in
    password_file: Password | None = None

    @model_validator(mode="after")
    def _security(self) -> OpcuaConfig:
        if not self.endpoint:
            return self
        if (self.username is None) != (self.password_file is None):
            raise fault("username and password_file go together", "username", fix="set both, or neither")
        if self.security == "none":
            if self.username is not None:
                raise fault(
                    "a password would travel in clear with security none", "username", fix="use sign_and_encrypt"
                )
            return self
        for key in ("certificate", "private_key", "trusted_clients"):
            if getattr(self, key) is None:
                raise fault(
                    "required for security sign_and_encrypt",
                    key,
                    fix="make a server certificate with `edge-keys keys/ opcua-server --opcua`, put the clients' "
                    "certificates into trusted_clients, or set security: none (an open server) explicitly",
                )
        return self


class HmiImagesConfig(Section):
    """JPEGs of judged parts for the operator's screen (edge.images), on a socket of their own."""

    bind: Endpoint | None = None  # the image topic "img/<line>/<station>"; None = off
    every_ng: bool = True  # every NG part's image (as long as the queue has room)
    ok_per_s: Annotated[float, Field(ge=0, le=1000)] = 2.0  # OK parts, at most this many per second per camera
    max_side: Annotated[int, Field(ge=16, le=4096)] = 480  # the JPEG's longer side, pixels
    quality: Annotated[int, Field(ge=1, le=100)] = 80
    queue: Annotated[Count, Field(ge=1)] = 8  # images waiting to be encoded; beyond it, dropped and counted
    sndhwm: Annotated[Count, Field(ge=1)] = 16  # images waiting for a slow subscriber; beyond it, dropped and counted


class HmiConfig(Section):
    """What edge-hmi (the operator's screen, its own process) reads; the daemon ignores it."""

    bind: HostPort = "127.0.0.1:8080"  # where the page is served
    users: Annotated[Path, _path()] | None = None  # reviewers, scrypt-hashed (edge-hmi --add-user); None = no review
    review_dir: Annotated[Path, _path()] = Path("review")  # reviewed parts: good/, <defect type>/, log.jsonl
    curve_secret_key: Annotated[Path, _path("file")] | None = None  # the HMI's own CURVE key pair, for a CURVE daemon
    error_rate_limit: Annotated[float, Field(ge=0, le=1)] = 0.05  # alarm above this share of recent ERROR verdicts
    drift_z_limit: Annotated[float, Field(gt=0, le=100)] = 3.0  # alarm when the drift |z| exceeds this
    stale_s: Annotated[float, Field(gt=0, le=3600)] = 5.0  # alarm when no status came for this long
    # When shifts start (local time): the page's shift counts start again at each.
    shifts: list[Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")]] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"], min_length=1
    )


class TrustConfig(Section):
    keys: Annotated[Path, _path("directory")] | None = None  # the signers' public keys (NAME.pub); None = unchecked


class StreamConfig(Model):
    station: Station  # the stream's topic is "<line>/<station>"
    source: SourceConfig
    bundle: Bundle | None = None  # this camera's model; after loading, the line's bundle when not given
    k: K | None = None  # this camera's k; after loading, the line's k when not given
    trigger: StreamTriggerConfig = StreamTriggerConfig()


class LineConfig(Model):
    line: Name
    bundle: Bundle | None = None  # the streams' model unless they name their own; edge-capture needs none
    station: Station | None = None  # one camera: station + source ...
    source: SourceConfig | None = None
    streams: list[StreamConfig] = Field(default_factory=list, min_length=1)  # ... or several; after loading, filled
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    gpu: Annotated[int, Field(ge=0, le=63)] = 0  # CUDA device index, for TensorRT and ONNX Runtime's GPU providers
    k: K | None = None  # overrides calibration.yaml's k: threshold = mu + k*sigma
    batch: BatchConfig = BatchConfig()
    queue: QueueConfig = QueueConfig()
    publish: PublishConfig = PublishConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    metrics: MetricsConfig = MetricsConfig()
    trigger: TriggerConfig = TriggerConfig()
    mqtt: MqttConfig = MqttConfig()
    opcua: OpcuaConfig = OpcuaConfig()
    hmi_images: HmiImagesConfig = HmiImagesConfig()
    hmi: HmiConfig = HmiConfig()
    trust: TrustConfig = TrustConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log collectors
    path: SkipJsonSchema[Path | None] = None  # the file it was loaded from (not a key: parse_config sets it)

    def topic(self, stream: StreamConfig) -> str:
        return f"{self.line}/{stream.station}"

    @property
    def tracks_parts(self) -> bool:
        """Whether the PLC can announce parts (over ZeroMQ, MQTT or OPC UA)."""
        return bool(self.trigger.bind or self.mqtt.url or self.opcua.endpoint)

    @model_validator(mode="after")
    def _fill_streams(self, info: ValidationInfo) -> LineConfig:
        """One camera (station + source) or several (streams): after this, streams holds them,
        each with its bundle and k."""
        if self.streams and (self.station is not None or self.source is not None):
            fix = "move station and source into a streams entry"
            raise fault("give either station + source (one camera) or streams (several), not both", "streams", fix=fix)
        if not self.streams:
            if self.station is None or self.source is None:
                fix = "add station: and source: (one camera), or streams: (several)"
                raise fault("required key is missing", "station" if self.station is None else "source", fix=fix)
            self.streams = [StreamConfig(station=self.station, source=self.source)]
        for what, values in (
            ("station", [s.station for s in self.streams]),
            ("source.name", [s.source.name for s in self.streams]),
        ):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise fault(
                    "must differ between streams", f"streams[].{what}", twice, f"give each stream its own {what}"
                )
        for i, stream in enumerate(self.streams):
            stream.bundle = stream.bundle or self.bundle
            stream.k = self.k if stream.k is None else stream.k
            rules = stream.trigger = stream.trigger.model_copy()  # the line's defaults fill this stream's own
            rules.deadline_ms = self.trigger.deadline_ms if rules.deadline_ms is None else rules.deadline_ms
            rules.unannounced = rules.unannounced or self.trigger.unannounced
            if stream.bundle is None and (info.context or {}).get("need_bundle", True):
                fix = "add the bundle directory made by export-engine (with streams: one bundle for all, or a bundle in each entry)"
                raise fault(
                    "required key is missing", "bundle" if self.source is not None else f"streams[{i}].bundle", fix=fix
                )
        return self


def parse_config(data: object, path: Path | None = None, need_bundle: bool = True) -> LineConfig:
    """Validates already-loaded YAML data; relative paths resolve against path's directory
    (the working directory when path is None). ``need_bundle`` False: the bundle key may be
    left out and is not checked (edge-capture)."""
    where = str(path) if path is not None else "<config>"
    if isinstance(data, dict) and "path" in data:  # LineConfig.path is where it was read from
        raise config_error(where, "path", "unknown key", "a source's path goes under source:", data["path"])
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    cfg = validate(LineConfig, data, where, {"base": base, "need_bundle": need_bundle})
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
        fix = "check the path and its permissions"
        raise config_error(str(path), "file", f"cannot read the config file: {e.strerror or e}", fix) from e
    except UnicodeDecodeError as e:
        raise config_error(str(path), "file", "is not UTF-8 text", "save it as UTF-8") from e
    try:
        data = load_yaml_text(text)
    except YamlBoundError as e:
        raise config_error(str(path), "file", f"refused: {e}", "write the config without such aliases") from e
    except yaml.YAMLError as e:
        where, problem = yaml_problem(e)
        fix = "check the indentation, the ':' after each key and the quotes"
        raise config_error(str(path), where, f"YAML syntax error: {problem}", fix) from e
    return parse_config(data, path, need_bundle)
