"""What an operator sees: Prometheus metrics and JSON logs from a real daemon."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

from edge.listen import Listener
from edge.metrics import render
from edge.stats import Drift, Percentiles
from edge.status import Counters, Reloads, SourceStatus, StreamStatus

from .conftest import make_bundle
from .harness import assert_accounted, collect, free_port, pattern, start, write_config, write_video


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_prometheus_metrics_and_json_logs(tmp_path):
    port = free_port()
    video = write_video(tmp_path / "v.avi", pattern(30))
    config, endpoint = write_config(
        tmp_path,
        make_bundle(tmp_path / "bundle"),
        {"kind": "video", "path": str(video), "loop": True, "fps": 200},
        metrics={"bind": f"127.0.0.1:{port}"},
        log_format="json",
        evidence={"dir": str(tmp_path / "evidence"), "ok_every": 10},
    )
    proc = start(config)
    scraped = {}
    labels = 'line="line3",station="st1"'

    def judged(samples: dict[str, float]) -> float:
        return sum(samples.get(f'edge_verdicts_total{{{labels},verdict="{v}"}}', 0) for v in ("OK", "NG"))

    def scrape_then_stop(n, _msg):
        if n == 120:
            # The metrics move with the heartbeat (0.2 s), which a loaded machine can delay: wait
            # for one that counts these 120 verdicts rather than sleeping a fixed time.
            deadline = time.monotonic() + 20
            while judged(samples := scrape(port)) < 120 and time.monotonic() < deadline:
                time.sleep(0.05)
            scraped.update(samples)
            proc.send_signal(signal.SIGTERM)

    with Listener(endpoint, "line3/") as listener:
        verdicts, final, _ = collect(listener, proc, on_verdict=scrape_then_stop)
    assert proc.wait(20) == 0
    assert_accounted(verdicts, final)
    ok, ng = (
        scraped[f'edge_verdicts_total{{{labels},verdict="OK"}}'],
        scraped[f'edge_verdicts_total{{{labels},verdict="NG"}}'],
    )
    assert ok + ng >= 120 and ng > 0 and scraped[f"edge_source_up{{{labels}}}"] == 1
    assert scraped[f'edge_latency_ms{{{labels},quantile="0.99"}}'] > 0
    assert scraped[f"edge_frames_in_total{{{labels}}}"] >= ok + ng
    assert [(k, v) for k, v in scraped.items() if k.startswith("edge_model_info")] == [
        (f'edge_model_info{{{labels},model="{final["model"]}"}}', 1)
    ]
    assert scraped[f"edge_evidence_saved_total{{{labels}}}"] <= ng  # the writer may lag, never lead
    assert scraped[f"edge_ok_samples_saved_total{{{labels}}}"] <= ok // 10
    logs = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    assert any("stopped" in e["msg"] for e in logs) and all({"t", "level", "logger", "msg"} <= set(e) for e in logs)


# The text exposition format: a label value is quoted, with backslash, double quote and newline escaped.
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"[a-zA-Z_:][a-zA-Z0-9_:]*\{{{_LABEL}(?:,{_LABEL})*\}} \S+")


def test_metric_labels_are_escaped():
    station, model = 'cam\\top"1', 'bundle "new"\nline@0123456789ab'
    status = StreamStatus(
        schema=1,
        line="line3",
        station=station,
        t=0.0,
        state="running",
        uptime_s=1.0,
        counters=Counters(frames_in=1, ok=1, ng=0, error=0, dropped=0, publish_failed=0, in_flight=0, grab_errors=0),
        latency_ms=Percentiles(1.0, 2.0, 1),
        infer_ms=Percentiles(1.0, 2.0, 1),
        mean_batch=1.0,
        queue_depth=0,
        streams=1,
        source=SourceStatus("cam0", "streaming", 0, None),
        score_drift=Drift(0.3, 0.2, 0.1, 1),
        threshold=0.5,
        model=model,
        reloads=Reloads(),
        backend={},
    )
    samples = [line for line in render([status]).splitlines() if not line.startswith("#")]
    assert samples and [line for line in samples if not _SAMPLE.fullmatch(line)] == []
    unescape = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
    info = next(line for line in samples if line.startswith("edge_model_info"))
    labels = {
        name: re.sub(r'\\[\\"n]', lambda m: unescape[m.group()], value) for name, value in re.findall(_LABEL, info)
    }
    assert labels == {"line": "line3", "station": station, "model": model}
