"""Several cameras in one daemon: batched together into one model, each on its own topic, a
dead camera does not stop the others."""

from __future__ import annotations

import signal

import yaml

from edge.listen import Listener

from .conftest import make_bundle, part
from .harness import collect, free_port, pattern, start, write_video


def test_streams_share_the_model_and_keep_their_own_topics(tmp_path):
    top = write_video(tmp_path / "top.avi", pattern(30))
    side = write_video(tmp_path / "side.avi", [part(40, (60, 80)) for _ in range(20)])
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "line": "line3",
                "bundle": str(make_bundle(tmp_path / "bundle")),
                "streams": [
                    {"station": "top", "source": {"kind": "video", "name": "top", "path": str(top), "fps": 100}},
                    {"station": "side", "source": {"kind": "video", "name": "side", "path": str(side), "fps": 100}},
                    {
                        "station": "dead",
                        "source": {
                            "kind": "camera",
                            "name": "dead",
                            "url": str(tmp_path / "absent.avi"),
                            "reconnect": {"initial_s": 0.05, "max_s": 0.1},
                        },
                    },
                ],
                "batch": {"max_batch": 8, "max_wait_ms": 20},
                "queue": {"size": 64, "overflow": "block"},
                "publish": {"bind": endpoint, "heartbeat_s": 0.2, "wait_for_subscribers": 1},
            }
        )
    )
    proc = start(config)
    # Stopped once every frame of both videos is judged and the dead camera has failed twice, in
    # whichever order a loaded machine gets there: 0.3 s of video is no bound on two reconnects.
    reconnects, sent = {"dead": 0}, []

    def stop_when_done(n, status):
        if status["station"] == "dead":
            reconnects["dead"] = status["source"]["reconnects"]
        if n >= 50 and reconnects["dead"] >= 2 and not sent:
            proc.send_signal(signal.SIGTERM)
            sent.append(n)

    with Listener(endpoint, "line3/") as listener:
        verdicts, _, statuses = collect(listener, proc, streams=3, on_status=stop_when_done)
    assert proc.wait(20) == 0
    by_station = {st: [v for v in verdicts if v["station"] == st] for st in ("top", "side", "dead")}
    assert [len(v) for v in by_station.values()] == [30, 20, 0]
    assert [v["verdict"] for v in by_station["top"]] == ["NG" if i % 3 == 0 else "OK" for i in range(30)]
    assert {v["verdict"] for v in by_station["side"]} == {"OK"}
    final = {s["station"]: s for s in statuses if s["state"] == "stopped"}
    for station, got in by_station.items():
        c = final[station]["counters"]
        assert c["frames_in"] == len(got) + c["dropped"] and c["in_flight"] == 0
    assert final["dead"]["source"]["reconnects"] >= 2 and final["dead"]["source"]["state"] != "streaming"
    assert final["top"]["streams"] == 3
    assert max(s["mean_batch"] or 0 for s in statuses) > 1, "frames of both cameras batched together"
