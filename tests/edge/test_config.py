"""Line config: the good configs load as written, every bad one is one line naming the key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from edge.config import (
    BatchConfig,
    CameraConfig,
    ConfigError,
    EvidenceConfig,
    GenicamConfig,
    ImagesConfig,
    LineConfig,
    MqttConfig,
    OpcuaConfig,
    PublishConfig,
    QueueConfig,
    ReconnectConfig,
    RoiConfig,
    StreamConfig,
    StreamTriggerConfig,
    TriggerConfig,
    TrustConfig,
    VideoConfig,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DELETE = object()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A config directory holding what a minimal config points at (the files need not be valid media)."""
    (tmp_path / "bundle").mkdir()
    (tmp_path / "parts.mp4").write_bytes(b"")
    (tmp_path / "shots").mkdir()
    return tmp_path


def minimal() -> dict:
    return {"line": "line3", "station": "cam-top", "bundle": "bundle", "source": {"kind": "video", "path": "parts.mp4"}}


def patched(patch: dict) -> dict:
    """The minimal config with ``patch`` applied: dotted keys set a value, DELETE removes the key."""
    data = minimal()
    for dotted, value in patch.items():
        *parents, last = dotted.split(".")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


BAD = [
    # (patch, the key the message must name, a fragment it must contain)
    ({"batch.max_batch": "eight"}, "batch.max_batch", "must be an integer from 1 to 1024 (got 'eight')"),
    ({"batch.max_batch": 2.5}, "batch.max_batch", "(got 2.5)"),
    ({"batch.max_batch": True}, "batch.max_batch", "(got True)"),
    ({"batch.max_batch": 0}, "batch.max_batch", "from 1 to 1024"),
    ({"batch.max_batch": 1025}, "batch.max_batch", "from 1 to 1024"),
    ({"batch.max_wait_ms": -1}, "batch.max_wait_ms", "must be a number from 0 to 10000"),
    ({"batch.max_bach": 8}, "batch.max_bach", "did you mean 'max_batch'?"),
    ({"bundel": "bundle"}, "bundel", "did you mean 'bundle'?"),
    ({"line": DELETE}, "line", "required key is missing"),
    ({"station": "cam top"}, "station", "without '/' or whitespace"),
    ({"station": "status"}, "station", "other than 'status' or null (got 'status')"),
    ({"line": "a/b"}, "line", "(got 'a/b')"),
    ({"line": ""}, "line", "(got '')"),
    ({"line": 3}, "line", "(got 3)"),
    ({"bundle": "no-such-bundle"}, "bundle", "no such directory"),
    ({"bundle": DELETE}, "bundle", "required key is missing"),
    ({"source": DELETE}, "source", "required key is missing"),
    ({"source": "cam0"}, "source", "must be a mapping"),
    ({"source.kind": "usb"}, "source.kind", "one of 'video', 'images', 'camera'"),
    ({"source.kind": DELETE}, "source.kind", "required key is missing"),
    ({"source.path": "missing.mp4"}, "source.path", "no such file"),
    ({"source.path": DELETE}, "source.path", "required key is missing"),
    ({"source.kind": "images", "source.path": "parts.mp4"}, "source.path", "no such directory"),
    ({"source.url": "rtsp://127.0.0.1/x"}, "source.url", "unknown key for kind 'video'"),
    ({"source.loop": "yes"}, "source.loop", "must be true or false"),
    ({"source.fps": 0}, "source.fps", "must be a number from 0.01 to 100000 or null"),
    ({"source.fps": float("inf")}, "source.fps", "(got inf)"),
    ({"source.name": "cam:0"}, "source.name", "without '/', ':' or whitespace"),
    ({"source": {"kind": "camera"}}, "source", "exactly one of 'url' or 'index'"),
    ({"source": {"kind": "camera", "url": "rtsp://h/s", "index": 0}}, "source", "exactly one of 'url' or 'index'"),
    ({"source": {"kind": "camera", "index": -1}}, "source.index", "an integer from 0 to 9999"),
    (
        {"source": {"kind": "camera", "index": 0, "reconnect": {"initial_s": 2.0, "max_s": 1.0}}},
        "source.reconnect.max_s",
        "must be >= source.reconnect.initial_s",
    ),
    (
        {"source": {"kind": "camera", "index": 0, "reconnect": {"max": 1.0}}},
        "source.reconnect.max",
        "did you mean 'max_s'?",
    ),
    ({"backend": "cuda"}, "backend", "one of 'auto', 'onnxruntime', 'tensorrt'"),
    ({"gpu": -1}, "gpu", "an integer from 0 to 63"),
    ({"gpu": "cuda:1"}, "gpu", "(got 'cuda:1')"),
    ({"k": -1}, "k", "must be a number > 0 and <= 100 or null"),
    ({"k": "3"}, "k", "(got '3')"),
    ({"queue.size": 0}, "queue.size", "an integer from 1 to 100000"),
    ({"queue.overflow": "drop_newest"}, "queue.overflow", "one of 'drop_oldest', 'block'"),
    ({"publish.heartbeat_s": 0}, "publish.heartbeat_s", "must be a number from 0.01 to 3600"),
    ({"publish.sndhwm": 0}, "publish.sndhwm", "an integer from 1 to 1000000"),
    ({"publish.bind": "localhost:5556"}, "publish.bind", "a ZeroMQ endpoint"),
    ({"publish.wait_for_subscribers": -1}, "publish.wait_for_subscribers", "an integer from 0 to 1000"),
    ({"evidence.max_files": 0}, "evidence.max_files", "an integer from 1 to 1000000"),
    ({"log_level": "verbose"}, "log_level", "one of 'DEBUG'"),
    ({"batch": [8]}, "batch", "must be a mapping"),
    # Values that passed the old checks and then broke the daemon (issue 16): each key has a range.
    ({"batch.max_wait_ms": 1e13}, "batch.max_wait_ms", "from 0 to 10000 (got 10000000000000.0)"),
    ({"publish.heartbeat_s": 1e10}, "publish.heartbeat_s", "from 0.01 to 3600 (got 10000000000.0)"),
    ({"publish.wait_timeout_s": 1e10}, "publish.wait_timeout_s", "from 0.01 to 3600"),
    ({"source.fps": 1e-12}, "source.fps", "from 0.01 to 100000 or null (got 1e-12)"),
    (
        {"source": {"kind": "camera", "index": 0, "reconnect": {"initial_s": 1e10}}},
        "source.reconnect.initial_s",
        "from 0.01 to 600",
    ),
    ({"source": {"kind": "camera", "index": 0, "reconnect": {"max_s": 0}}}, "source.reconnect.max_s", "from 0.01"),
    ({"queue.size": 10**9}, "queue.size", "from 1 to 100000"),
    ({"k": 1e6}, "k", "> 0 and <= 100"),
    ({"metrics.bind": "127.0.0.1:99999"}, "metrics.bind", "ports 1 to 65535"),
    ({"metrics.bind": "127.0.0.1:0"}, "metrics.bind", "ports 1 to 65535"),
    ({"publish.bind": "tcp://127.0.0.1:99999"}, "publish.bind", "ports 1 to 65535"),
    ({"publish.bind": "tcp://127.0.0.1"}, "publish.bind", "tcp://HOST:PORT"),
    ({"source.roi": {"width": 10**6}}, "source.roi.width", "from 1 to 65535"),
    ({"evidence.ok_every": -1}, "evidence.ok_every", "from 0 to 1000000"),
    # Names end up in topics, frame ids and file names: no NUL or other control characters either.
    ({"station": "cam\x00top"}, "station", "nor control characters"),
    ({"line": "line\x1b3"}, "line", "nor control characters"),
    ({"source.name": "cam\x7f"}, "source.name", "nor control characters"),
    ({"source.name": "a/b"}, "source.name", "without '/'"),
]


@pytest.mark.parametrize("patch, key, fragment", BAD, ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD)])
def test_bad_config_is_one_line_naming_the_key(home: Path, patch: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(patched(patch), home / "line3.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{home / 'line3.yaml'}: {key}: "), message
    assert fragment in message, message


@pytest.mark.parametrize("data, where", [([1, 2], "top level"), (None, "top level"), ("line: 3", "top level")])
def test_top_level_must_be_a_mapping(data: object, where: str) -> None:
    with pytest.raises(ConfigError, match=f"^<config>: {where}: must be a mapping"):
        parse_config(data)


def test_good_config_round_trip(home: Path) -> None:
    data = {
        "line": "line7",
        "station": "s2",
        "bundle": "bundle",
        "backend": "onnxruntime",
        "gpu": 1,
        "k": 4,
        "log_level": "DEBUG",
        "source": {
            "kind": "camera",
            "name": "top",
            "url": "rtsp://127.0.0.1:8554/s",
            "reconnect": {"initial_s": 1, "max_s": 30},
        },
        "batch": {"max_batch": 16, "max_wait_ms": 0},
        "queue": {"size": 8, "overflow": "block"},
        "publish": {
            "bind": "tcp://0.0.0.0:6000",
            "heartbeat_s": 0.5,
            "sndhwm": 10,
            "wait_for_subscribers": 2,
            "wait_timeout_s": 3,
        },
        "evidence": {"dir": "out/ng", "max_files": 5},
    }
    path = home / "line7.yaml"
    path.write_text(yaml.safe_dump(data))
    expected = LineConfig(
        line="line7",
        station="s2",
        bundle=home.resolve() / "bundle",
        backend="onnxruntime",
        gpu=1,
        k=4.0,
        log_level="DEBUG",
        source=CameraConfig(
            kind="camera",
            name="top",
            url="rtsp://127.0.0.1:8554/s",
            reconnect=ReconnectConfig(initial_s=1.0, max_s=30.0),
        ),
        batch=BatchConfig(max_batch=16, max_wait_ms=0.0),
        queue=QueueConfig(size=8, overflow="block"),
        publish=PublishConfig(
            bind="tcp://0.0.0.0:6000", heartbeat_s=0.5, sndhwm=10, wait_for_subscribers=2, wait_timeout_s=3.0
        ),
        evidence=EvidenceConfig(dir=home.resolve() / "out" / "ng", max_files=5),
        path=path,
    )
    filled = StreamTriggerConfig(deadline_ms=1000.0, unannounced="judge")  # the line's trigger defaults
    expected.streams = [
        StreamConfig(station="s2", source=expected.source, bundle=expected.bundle, k=4.0, trigger=filled)
    ]
    cfg = load_config(path)
    assert cfg == expected
    assert type(cfg.k) is float and type(cfg.batch.max_wait_ms) is float
    assert cfg.topic(cfg.streams[0]) == "line7/s2"


def test_several_streams(home: Path) -> None:
    cams = [{"station": f"s{i}", "source": {"kind": "camera", "name": f"c{i}", "index": i}} for i in range(3)]
    cfg = parse_config({"line": "l", "bundle": "bundle", "streams": cams}, home / "c.yaml")
    assert [cfg.topic(s) for s in cfg.streams] == ["l/s0", "l/s1", "l/s2"]
    assert [s.source.index for s in cfg.streams] == [0, 1, 2] and cfg.station is None


@pytest.mark.parametrize(
    "data, key, says",
    [
        (
            {"streams": [{"station": "a", "source": {"kind": "camera", "index": 0}}], "station": "b"},
            "streams",
            "not both",
        ),
        ({"streams": []}, "streams", "non-empty list"),
        ({"streams": [{"station": "a"}]}, r"streams\[0\]\.source", "required key is missing"),
        (
            {
                "streams": [
                    {"station": "a", "source": {"kind": "camera", "index": 0}},
                    {"station": "a", "source": {"kind": "camera", "name": "c1", "index": 1}},
                ]
            },
            r"streams\[\]\.station",
            "must differ",
        ),
        (
            {
                "streams": [
                    {"station": "a", "source": {"kind": "camera", "index": 0}},
                    {"station": "b", "source": {"kind": "camera", "index": 1}},
                ]
            },
            r"streams\[\]\.source\.name",
            "must differ",
        ),
        ({"streams": [{"station": "a", "source": {"kind": "camera"}}]}, r"streams\[0\]\.source", "exactly one of"),
        (
            {"streams": [{"station": "status", "source": {"kind": "camera", "index": 0}}]},
            r"streams\[0\]\.station",
            "other than 'status'",
        ),
        (
            {"streams": [{"station": "a\tb", "source": {"kind": "camera", "index": 0}}]},
            r"streams\[0\]\.station",
            "without '/' or whitespace",
        ),
        ({}, "station", "station: and source:"),
    ],
)
def test_bad_streams(home: Path, data: dict, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(str(home / 'c.yaml'))}: {key}: .*{says}"):
        parse_config({"line": "l", "bundle": "bundle", **data}, home / "c.yaml")


def test_defaults_fill_what_is_left_out(home: Path) -> None:
    cfg = parse_config({**minimal(), "batch": None}, home / "c.yaml")
    assert (cfg.batch, cfg.queue, cfg.publish, cfg.evidence) == (
        BatchConfig(),
        QueueConfig(),
        PublishConfig(),
        EvidenceConfig(),
    )
    assert (cfg.backend, cfg.k, cfg.source.loop, cfg.source.fps, cfg.source.name) == ("auto", None, False, None, "cam0")


def test_relative_paths_resolve_against_the_config_file_not_the_cwd(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "sub").mkdir()
    config = home / "sub" / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **minimal(),
                "bundle": "../bundle",
                "evidence": {"dir": "ng"},
                "source": {"kind": "images", "path": "../shots"},
            }
        )
    )
    monkeypatch.chdir(home / "bundle")
    cfg = load_config(Path("../sub/line.yaml"))
    assert cfg.bundle == home.resolve() / "bundle"
    assert cfg.source.path == home.resolve() / "shots"
    assert cfg.evidence.dir == home.resolve() / "sub" / "ng"
    absolute = parse_config(
        {**minimal(), "bundle": str(home / "bundle"), "source": {"kind": "video", "path": str(home / "parts.mp4")}},
        Path("/elsewhere/l.yaml"),
    )
    assert absolute.bundle == home.resolve() / "bundle"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file: cannot read the config file: No such file"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("line: line3\nstation: cam-top\nbatch:\n  max_batch: [8\n  max_wait_ms: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: line 5, column ") and "YAML syntax error" in message, message


def install(name: str, root: Path) -> Path:
    """Copies an example config to root/configs and creates the bundle it points at."""
    (root / "configs").mkdir()
    (root / "bundles" / "bottle-patchcore").mkdir(parents=True)
    return Path(shutil.copy(CONFIGS / name, root / "configs" / name))


def test_line3_example_parses(tmp_path: Path) -> None:
    cfg = load_config(install("line3.yaml", tmp_path))
    assert cfg.bundle == tmp_path.resolve() / "bundles" / "bottle-patchcore"
    assert cfg.source.kind == "camera" and cfg.source.url.startswith("rtsp://") and cfg.source.index is None
    assert cfg.queue.overflow == "drop_oldest"


def test_demo_example_parses(tmp_path: Path) -> None:
    path = install("demo.yaml", tmp_path)
    (path.parent / "parts.mp4").write_bytes(b"")
    cfg = load_config(path)
    assert cfg.source == VideoConfig(
        kind="video", name="cam0", path=path.parent.resolve() / "parts.mp4", loop=False, fps=None
    )
    assert cfg.queue.overflow == "block"
    assert cfg.publish.wait_for_subscribers == 1


def test_line3_documents_every_key() -> None:
    text = (CONFIGS / "line3.yaml").read_text()
    documented = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert all("#" in line for line in documented), [line for line in documented if "#" not in line]
    sections = (
        LineConfig,
        StreamConfig,
        VideoConfig,
        ImagesConfig,
        CameraConfig,
        GenicamConfig,
        ReconnectConfig,
        RoiConfig,
        BatchConfig,
        QueueConfig,
        PublishConfig,
        EvidenceConfig,
        StreamTriggerConfig,
        TriggerConfig,
        MqttConfig,
        OpcuaConfig,
        TrustConfig,
    )
    # LineConfig.path is not a YAML key, but source.path is, so every field name must appear.
    keys = {name for section in sections for name in section.model_fields}
    missing = [key for key in sorted(keys) if f"{key}:" not in text]
    assert not missing, missing
