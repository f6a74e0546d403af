"""OPC UA beside ZeroMQ: the real asyncua server inside the real daemon, real asyncua clients.
Parts announced with the Announce method get every verdict as an event; the address space holds
the last verdict and the counters under stable node ids; with Sign&Encrypt a client whose
certificate the line does not trust is refused and a trusted one reads every verdict."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from edge.config import ConfigError, parse_config
from edge.listen import Listener
from edge.plant.certs import make_certificate
from edge.plant.opcua import set_client_security

from .harness import EDGE_RUN, collect, free_port, start
from .plant_harness import camera_line, plc_sim

pytest.importorskip("asyncua", reason="the plant extra: pip install '.[plant]'")


def _stop(proc, listener) -> dict:
    proc.send_signal(signal.SIGTERM)
    _, final, _ = collect(listener, proc)
    assert proc.wait(20) == 0
    return final


def test_parts_announced_over_opcua_get_every_verdict_as_an_event_and_in_its_nodes(tmp_path):
    from asyncua import ua
    from asyncua.sync import Client

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    opcua = {"endpoint": endpoint, "security": "none"}
    config, pub, _ = camera_line(tmp_path, fps=40, deadline_ms=2000, opcua=opcua, trigger={"bind": None})
    proc = start(config)
    with Listener(pub, "line3/") as listener:
        code, out, results = plc_sim(config, tmp_path / "sim.json", "--via", "opcua", "--rate", "20", "--parts", "200")
        assert code == 0, out
        assert len(results) == 200 and all(r["outcome"] == "in_time" for r in results), out
        with Client(endpoint) as client:  # the node ids of the README's table
            idx = client.get_namespace_index("urn:edge-inspect")
            assert idx == 2

            def read(name):
                return client.get_node(f"ns=2;s=line3/st1/{name}").read_value()

            deadline = time.monotonic() + 10
            while read("PartsInTime") != 200:  # the next heartbeat brings the counters
                assert time.monotonic() < deadline, read("PartsInTime")
                time.sleep(0.1)
            assert read("LastPartId") == results[-1]["part_id"]
            assert read("LastVerdict") == ("OK", "NG").index(results[-1]["verdict"])
            assert read("State") == "running" and read("PartsAnnounced") == 200 and read("PartsDeadline") == 0
            assert read("LastModel").startswith("bundle@") and len(read("LastFirstBBox")) == 4
            enum = client.get_node("ns=2;s=line3/st1/LastVerdict").read_data_type()
            assert enum == ua.NodeId("VerdictEnum", 2)
            refused = client.get_node("ns=2;s=line3").call_method("2:Announce", "cam9", "X")
            assert refused[0] is False and "unknown stream" in refused[2]
        final = _stop(proc, listener)
    assert final["links"]["opcua"]["events"] == 200 and final["links"]["opcua"]["announcements"] == 201


def test_sign_and_encrypt_refuses_an_untrusted_client_and_serves_the_trusted_one(tmp_path):
    from asyncua import ua
    from asyncua.sync import Client

    keys, trusted = tmp_path / "keys", tmp_path / "trusted"
    server = make_certificate(keys, "opcua-server", hosts=["127.0.0.1", "localhost"])
    plc = make_certificate(keys, "plc-1")
    stranger = make_certificate(keys, "stranger")
    trusted.mkdir()
    (trusted / "plc-1.der").write_bytes(plc["der"].read_bytes())
    (tmp_path / "password").write_text("s3cret\n")
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    opcua = {
        "endpoint": endpoint,
        "certificate": str(server["der"]),
        "private_key": str(server["key"]),
        "trusted_clients": str(trusted),
        "username": "plc",
        "password_file": str(tmp_path / "password"),
    }
    config, pub, _ = camera_line(tmp_path, fps=40, opcua=opcua, trigger={"bind": None})
    proc = start(config)
    with Listener(pub, "line3/") as listener:
        assert listener.recv(60) is not None  # up (asyncua builds its address space for a while)
        stranger_client = Client(endpoint, timeout=10)  # the right user and password, a certificate not trusted
        stranger_client.application_uri = "urn:edge-inspect:stranger"
        set_client_security(stranger_client, stranger["der"], stranger["key"], server["der"])
        stranger_client.set_user("plc")
        stranger_client.set_password("s3cret")
        plain = Client(endpoint, timeout=10)
        try:
            with pytest.raises(ua.uaerrors.BadCertificateUntrusted):  # the server's trust store refuses it
                stranger_client.connect()
            with pytest.raises(ua.UaError, match="No matching endpoints"):  # no endpoint offers no security
                plain.connect()
        finally:
            stranger_client.tloop.stop()
            plain.tloop.stop()
        args = ("--via", "opcua", "--cert", str(plc["der"]), "--key", str(plc["key"]), "--rate", "20", "--parts", "20")
        code, out, results = plc_sim(config, tmp_path / "sim.json", *args)
        _stop(proc, listener)
    assert code == 0 and len(results) == 20 and all(r["outcome"] == "in_time" for r in results), out


def test_opcua_security_is_none_only_when_configured_so(tmp_path):
    (tmp_path / "parts.avi").write_bytes(b"")
    base = {"line": "l", "station": "s", "source": {"kind": "video", "path": "parts.avi"}}
    with pytest.raises(ConfigError, match=r"opcua\.certificate: required for security sign_and_encrypt"):
        parse_config({**base, "opcua": {"endpoint": "opc.tcp://0.0.0.0:4840"}}, tmp_path / "l.yaml", need_bundle=False)
    cfg = parse_config(
        {**base, "opcua": {"endpoint": "opc.tcp://0.0.0.0:4840", "security": "none"}},
        tmp_path / "l.yaml",
        need_bundle=False,
    )
    assert cfg.opcua.security == "none" and cfg.tracks_parts


def test_a_configured_link_without_its_package_stops_the_start_with_the_install_hint(tmp_path):
    import subprocess

    config, _, _ = camera_line(tmp_path, opcua={"endpoint": f"opc.tcp://127.0.0.1:{free_port()}", "security": "none"})
    blocked = "import sys; sys.modules['asyncua'] = None; " + EDGE_RUN[2]
    done = subprocess.run(
        [sys.executable, "-c", blocked, "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "opcua.endpoint is configured but asyncua is not installed: pip install 'edge-inspect[plant]'" in (
        done.stderr
    )
