"""MQTT beside ZeroMQ, against a real mosquitto started by the tests on a loopback port: every
verdict with its part id, a retained status and last will, announcements as commands, TLS with a
password, and a broker that dies mid-run while the line judges on."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from edge.listen import Listener
from edge.plant.certs import make_certificate

from .harness import collect, start
from .plant_harness import PLC_SIM, Broker, Subscriber, camera_line, plc_sim

pytest.importorskip("paho.mqtt", reason="the plant extra: pip install '.[plant]'")


def test_parts_announced_over_mqtt_get_their_verdicts_there_with_their_part_ids(tmp_path):
    with Broker(tmp_path) as broker:
        mqtt = {"url": f"mqtt://127.0.0.1:{broker.port}", "topic_prefix": "plant1"}
        config, endpoint, _ = camera_line(tmp_path, fps=40, deadline_ms=2000, mqtt=mqtt, trigger={"bind": None})
        proc = start(config)
        with Listener(endpoint, "line3/") as listener:
            code, out, results = plc_sim(
                config, tmp_path / "sim.json", "--via", "mqtt", "--rate", "20", "--parts", "200"
            )
            proc.send_signal(signal.SIGTERM)
            verdicts, final, _ = collect(listener, proc)
        assert proc.wait(20) == 0
        assert code == 0, out
        assert len(results) == 200 and all(r["outcome"] == "in_time" for r in results), out
        assert sorted(v["part_id"] for v in verdicts) == sorted(r["part_id"] for r in results)  # ZeroMQ too
        assert final["links"]["mqtt"]["announcements"] == 200 and final["links"]["mqtt"]["dropped"] == 0
        # Afterwards an integrator's client finds the retained last status and the will's word.
        late = Subscriber(broker.port, "plant1/line3/#")
        late.wait_for(lambda m: {"plant1/line3/st1/status", "plant1/line3/state"} <= {t for t, _ in m})
        retained = dict(late.messages)
        late.close()
        assert retained["plant1/line3/state"] == "offline"
        assert retained["plant1/line3/st1/status"]["state"] == "stopped"
        assert retained["plant1/line3/st1/status"]["parts"]["in_time"] == 200


def test_a_broker_outage_never_stops_the_line_and_what_mqtt_missed_is_counted(tmp_path):
    with Broker(tmp_path) as broker:
        mqtt = {"url": f"mqtt://127.0.0.1:{broker.port}", "buffer": 5, "reconnect": {"initial_s": 1, "max_s": 1}}
        config, endpoint, _ = camera_line(tmp_path, fps=40, deadline_ms=2000, mqtt=mqtt)
        proc = start(config)
        watcher = Subscriber(broker.port, "edge/line3/st1/verdict")
        with Listener(endpoint, "line3/") as listener:
            sim = subprocess.Popen(
                [*PLC_SIM, "--config", str(config), "--rate", "20", "--parts", "200", "--quiet"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            watcher.wait_for(lambda m: len(m) >= 20)
            broker.kill()
            during = _zmq_parts_while(listener, lambda st: st["links"]["mqtt"]["connected"], more=40)
            broker.start()
            seen = len(watcher.messages)
            watcher.wait_for(lambda m: len(m) > seen + 10)  # verdicts reach MQTT again
            out, _ = sim.communicate(timeout=60)
            proc.send_signal(signal.SIGTERM)
            _, final, _ = collect(listener, proc)
        watcher.close()
        assert proc.wait(20) == 0
        assert sim.returncode == 0 and "200 answered in time" in out, out  # the line judged on meanwhile
        assert during >= 40
        link = final["links"]["mqtt"]
        assert link["connected"] and link["reconnects"] >= 1
        assert link["dropped"] >= 30, link  # 40+ verdicts while away, 5 kept
        assert all("part_id" in m for _, m in watcher.messages)


def _zmq_parts_while(listener: Listener, connected, more: int, timeout_s: float = 30) -> int:
    """Part verdicts the line publishes on ZeroMQ once its status says MQTT is away, until ``more`` came."""
    away, count, deadline = False, 0, time.monotonic() + timeout_s
    while count < more:
        assert time.monotonic() < deadline, f"only {count} verdicts while the broker was away"
        msg = listener.recv(1.0)
        if msg is None:
            continue
        if msg.is_status:
            away = away or not connected(msg.data)
        elif away and "part_id" in msg.data:
            count += 1
    return count


def test_mqtts_with_a_password_and_a_client_without_it_is_refused(tmp_path):
    certs = make_certificate(tmp_path / "keys", "broker", hosts=["localhost", "127.0.0.1"])
    (tmp_path / "password").write_text("s3cret\n")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "users"), "line3", "s3cret"], check=True)
    settings = (
        f"allow_anonymous false\npassword_file {tmp_path / 'users'}\ncertfile {certs['pem']}\nkeyfile {certs['key']}\n"
    )
    with Broker(tmp_path, settings) as broker:
        mqtt = {
            "url": f"mqtts://localhost:{broker.port}",
            "ca_file": str(certs["pem"]),
            "username": "line3",
            "password_file": str(tmp_path / "password"),
        }
        config, endpoint, _ = camera_line(tmp_path, fps=40, mqtt=mqtt, trigger={"bind": None})
        proc = start(config)
        with Listener(endpoint, "line3/") as listener:
            code, out, results = plc_sim(
                config, tmp_path / "sim.json", "--via", "mqtt", "--rate", "20", "--parts", "20"
            )
            (tmp_path / "password").write_text("wrong\n")  # the same settings, a wrong password
            refused, refused_out, _ = plc_sim(
                config, tmp_path / "refused.json", "--via", "mqtt", "--ready-timeout", "3"
            )
            proc.send_signal(signal.SIGTERM)
            collect(listener, proc)
        assert proc.wait(20) == 0
        assert code == 0 and len(results) == 20 and all(r["outcome"] == "in_time" for r in results), out
        assert refused != 0 and "no heartbeat" in refused_out
