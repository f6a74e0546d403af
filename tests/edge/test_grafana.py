"""configs/grafana-edge-inspect.json asks only for metrics the daemon's /metrics really serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edge.metrics import render
from edge.status import Counters

from .test_parts import status

DASHBOARD = Path(__file__).parents[2] / "configs" / "grafana-edge-inspect.json"


def test_every_metric_the_dashboard_queries_is_one_the_daemon_serves() -> None:
    text = render([status(Counters(5, 3, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 4, 1))])
    served = set(re.findall(r"^# TYPE (\S+)", text, re.M))  # families, also those with no sample yet
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    asked = {name for e in exprs for name in re.findall(r"\bedge_[a-z_]+", e)}
    assert asked and asked <= served, asked - served
    assert {"edge_verdicts_total", "edge_latency_ms", "edge_score_drift_z", "edge_images_dropped_total"} <= asked
