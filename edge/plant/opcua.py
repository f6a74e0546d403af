"""OPC UA beside ZeroMQ (asyncua, the ``plant`` extra): the line's address space, one event per
verdict, and the Announce method.

The server runs on an asyncio loop in a thread of its own; the judging loop only appends to a
bounded buffer (the oldest dropped and counted beyond it) and wakes it. Every node id is a string
in the namespace ``urn:edge-inspect`` (index 2 on this server, which registers no other), built
from the line and station names: ``ns=2;s=<line>/<station>/<Name>`` (the table in the README).
Security: Basic256Sha256 Sign&Encrypt with this server's certificate, client certificates checked
against ``trusted_clients`` (others refused), optionally a user and password; ``none`` only when
configured so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from asyncua.sync import Client as SyncClient

from edge.config import LineConfig, OpcuaConfig
from edge.plant.certs import APPLICATION_URI
from edge.plant.hub import PlantLinkError
from edge.plant.mqtt import read_password
from edge.plant.tracking import Announced
from edge.plcsim import Reply

log = logging.getLogger(__name__)

NAMESPACE = "urn:edge-inspect"
VERDICTS = ("OK", "NG", "ERROR")  # the VerdictEnum's values 0, 1, 2
_BUFFER = 1000
V = ua.VariantType
# (name, type) of each station variable, in the README's order; Verdict is the enumeration.
LAST_VERDICT = (
    ("PartId", V.String),
    ("Verdict", V.Int32),
    ("Score", V.Double),
    ("Threshold", V.Double),
    ("Regions", V.Int32),
    ("FirstBBox", V.Int32),  # [x, y, w, h]; zeros without a region
    ("Time", V.DateTime),
    ("Model", V.String),
    ("Error", V.String),
    ("Seq", V.Int64),
)
STATUS = (
    ("State", V.String),
    ("Heartbeat", V.DateTime),
    ("ScoreDriftZ", V.Double),
    ("FramesIn", V.Int64),
    ("Ok", V.Int64),
    ("Ng", V.Int64),
    ("Error", V.Int64),
    ("Dropped", V.Int64),
    ("PartsAnnounced", V.Int64),
    ("PartsInTime", V.Int64),
    ("PartsDeadline", V.Int64),
    ("PartsLate", V.Int64),
)
EVENT_FIELDS = (*LAST_VERDICT[:6], ("Model", V.String), ("Error", V.String), ("Station", V.String), ("Late", V.Boolean))


def _nid(name: str, idx: int) -> ua.NodeId:
    """A string node id in our namespace (the README's table)."""
    return ua.NodeId(ua.String(name), ua.Int16(idx))


class _Users(UserManager):
    def __init__(self, username: str, password: str):
        self._username, self._password = username, password

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        return User(role=UserRole.User) if (username, password) == (self._username, self._password) else None


def _verdict_values(msg: dict) -> dict[str, object]:
    regions = msg.get("regions") or []
    return {
        "PartId": msg.get("part_id") or "",
        "Verdict": VERDICTS.index(msg["verdict"]),
        "Score": math.nan if msg.get("score") is None else float(msg["score"]),
        "Threshold": float(msg["threshold"]),
        "Regions": len(regions),
        "FirstBBox": list(regions[0]["bbox"]) if regions else [0, 0, 0, 0],
        "Time": datetime.fromtimestamp(msg["t_publish"], timezone.utc),
        "Model": msg["model"],
        "Error": msg.get("error") or "",
        "Seq": -1 if msg.get("seq") is None else int(msg["seq"]),
    }


def _status_values(msg: dict) -> dict[str, object]:
    c, parts = msg["counters"], msg.get("parts", {})
    z = msg["score_drift"].get("z")
    return {
        "State": msg["state"],
        "Heartbeat": datetime.fromtimestamp(msg["t"], timezone.utc),
        "ScoreDriftZ": math.nan if z is None else float(z),
        **{name: int(c[key]) for name, key in (("FramesIn", "frames_in"), ("Ok", "ok"), ("Ng", "ng"))},
        **{name: int(c[key]) for name, key in (("Error", "error"), ("Dropped", "dropped"))},
        **{f"Parts{k.title().replace('_', '')}": int(parts.get(k, 0)) for k in ("announced", "in_time", "deadline")},
        "PartsLate": int(parts.get("late", 0)),
    }


@dataclass(slots=True)
class _Station:
    verdict: dict[str, Node] = field(default_factory=dict)
    status: dict[str, Node] = field(default_factory=dict)
    events: Any = None  # its EventGenerator


class OpcuaLink:
    def __init__(self, cfg: OpcuaConfig, line: str, topics: list[str], announce: Callable[..., Announced]):
        self._cfg, self._line, self._announce = cfg, line, announce
        self._stations = [topic.split("/", 1)[1] for topic in topics]
        self._password = read_password(cfg.password_file, "opcua.password_file") if cfg.password_file else None
        self._outbox: deque[tuple[str, dict]] = deque()
        self._lock = threading.Lock()
        self.counters = {"verdicts": 0, "events": 0, "dropped": 0, "announcements": 0}
        self.last_error: str | None = None
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        logging.getLogger("asyncua").setLevel(max(logging.WARNING, log.getEffectiveLevel()))  # chatty at INFO
        # Served from here on, as the ZeroMQ socket is bound: a port taken or bad keys stop the start-up.
        self._thread.start()
        if not self._ready.wait(30) or self._failed is not None:
            self.close()
            raise PlantLinkError(f"opcua.endpoint {cfg.endpoint}: the server did not start: {self._failed}")

    # -- the judging loop's side --------------------------------------------------------------
    def start(self) -> None:
        """Serving already (see __init__)."""

    def verdict(self, msg: dict) -> None:
        self._put("verdict", msg)

    def status(self, msg: dict) -> None:
        self._put("status", msg)

    def _put(self, kind: str, msg: dict) -> None:
        with self._lock:
            if len(self._outbox) >= _BUFFER:
                self._outbox.popleft()
                self.counters["dropped"] += 1
            self._outbox.append((kind, msg))
        if self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def describe(self) -> dict:
        return {"endpoint": self._cfg.endpoint, "security": self._cfg.security, **self.counters}

    def close(self) -> None:
        if self._thread.is_alive() and self._wake is not None:
            self._stopping = True
            self._loop.call_soon_threadsafe(self._wake.set)
            self._thread.join(10)

    # -- the server's thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # reported by start(), or logged once it served
            self._failed = e
            self._ready.set()
            log.error("opcua server %s stopped: %s", self._cfg.endpoint, e)
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._wake = asyncio.Event()
        server = await self._server()
        async with server:
            stations = {name: await self._station(server, name) for name in self._stations}
            self._ready.set()
            log.info("opcua: serving %s (%s) for %s", self._cfg.endpoint, self._cfg.security, ", ".join(stations))
            while not self._stopping or self._outbox:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    with self._lock:
                        kind, msg = self._outbox.popleft()
                    station = stations.get(msg["station"])
                    if station is not None:
                        await (self._write_verdict if kind == "verdict" else self._write_status)(station, msg)

    async def _server(self) -> Server:
        cfg = self._cfg
        users = _Users(cfg.username, self._password) if cfg.username and self._password else None
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(cfg.endpoint or "")
        server.set_server_name(f"edge-inspect {self._line}")
        await server.set_application_uri(APPLICATION_URI.format(name=f"edge-run-{self._line}"))
        if cfg.security == "none":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await server.load_certificate(str(cfg.certificate))
            await server.load_private_key(str(cfg.private_key))
            store = TrustStore([Path(cfg.trusted_clients or "")], [])
            await store.load()
            options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
            server.set_certificate_validator(CertificateValidator(options, store).validate)
        if users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace(NAMESPACE)
        self._idx = idx
        self._event_type = await self._verdict_event_type(server)
        self._enum = await server.nodes.enum_data_type.add_data_type(_nid("VerdictEnum", idx), f"{idx}:VerdictEnum")
        await self._enum.write_data_type_definition(
            ua.EnumDefinition(Fields=[ua.EnumField(Name=n, Value=i) for i, n in enumerate(VERDICTS)])
        )
        self._line_node = await server.nodes.objects.add_object(_nid(self._line, idx), f"{idx}:{self._line}")
        await self._announce_methods(self._line_node)
        return server

    async def _verdict_event_type(self, server: Server) -> Node:
        idx = self._idx
        etype = await server.nodes.base_event_type.add_object_type(
            _nid("VerdictEventType", idx), f"{idx}:VerdictEventType"
        )
        for name, vtype in EVENT_FIELDS:
            await etype.add_property(
                _nid(f"VerdictEventType/{name}", idx), f"{idx}:{name}", ua.get_default_value(vtype), vtype
            )
        return etype

    async def _announce_methods(self, line: Node) -> None:
        idx = self._idx

        def arg(name: str, vtype: ua.VariantType) -> ua.Argument:
            return ua.Argument(Name=name, DataType=ua.NodeId(ua.Int32(vtype.value)), ValueRank=-1)

        def call(_parent, *args: ua.Variant) -> list[ua.Variant]:
            stream, part_id, deadline_ms = (*(a.Value for a in args), None)[:3]
            reply = self._announce(stream, part_id, deadline_ms or None)
            self.counters["announcements"] += 1
            return [
                ua.Variant(reply.accepted, V.Boolean),
                ua.Variant(-1 if reply.seq is None else reply.seq, V.Int64),
                ua.Variant(reply.error or "", V.String),
            ]

        outputs = [arg("Accepted", V.Boolean), arg("Seq", V.Int64), arg("Error", V.String)]
        inputs = [arg("Stream", V.String), arg("PartId", V.String)]
        await line.add_method(_nid(f"{self._line}/Announce", idx), f"{idx}:Announce", call, inputs, outputs)
        await line.add_method(
            _nid(f"{self._line}/AnnounceWithDeadline", idx),
            f"{idx}:AnnounceWithDeadline",
            call,
            [*inputs, arg("DeadlineMs", V.Double)],
            outputs,
        )

    async def _station(self, server: Server, name: str) -> _Station:
        idx, base = self._idx, f"{self._line}/{name}"
        obj = await self._line_node.add_object(_nid(base, idx), f"{idx}:{name}")
        station = _Station()
        for table, names in ((station.verdict, LAST_VERDICT), (station.status, STATUS)):
            for var, vtype in names:
                key = f"{base}/{'Last' if names is LAST_VERDICT else ''}{var}"
                default = [0, 0, 0, 0] if var == "FirstBBox" else ua.get_default_value(vtype)
                table[var] = await obj.add_variable(_nid(key, idx), f"{idx}:{key.rsplit('/', 1)[1]}", default, vtype)
        await station.verdict["Verdict"].write_attribute(
            ua.AttributeIds.DataType, ua.DataValue(ua.Variant(self._enum.nodeid, V.NodeId))
        )
        station.events = await server.get_event_generator(self._event_type, ua.ObjectIds.Server)
        station.events.event.SourceNode, station.events.event.SourceName = obj.nodeid, name
        return station

    async def _write_verdict(self, station: _Station, msg: dict) -> None:
        values = _verdict_values(msg)
        late = bool(msg.get("late"))
        if not late:  # a late verdict is not the part's answer: the last verdict stays its ERROR
            for name, value in values.items():
                await station.verdict[name].write_value(value, dict(LAST_VERDICT)[name])
            self.counters["verdicts"] += 1
        event, fields = station.events.event, {**values, "Station": msg["station"], "Late": late}
        for name, _ in EVENT_FIELDS:
            setattr(event, name, fields[name])
        await station.events.trigger(message=f"{msg['station']} {msg['verdict']} {values['PartId']}".strip())
        self.counters["events"] += 1

    async def _write_status(self, station: _Station, msg: dict) -> None:
        for name, value in _status_values(msg).items():
            await station.status[name].write_value(value, dict(STATUS)[name])


def set_client_security(client: SyncClient, cert: Path, key: Path, server_cert: Path | None) -> None:
    """Basic256Sha256 Sign&Encrypt for an ``asyncua.sync.Client``: files given as paths (``.pem``
    read as PEM, others as DER), all by keyword. Positionally, asyncua's fourth argument is the
    key's password and its fifth the server's certificate: a mode there (an IntEnum, 3) is opened as
    file descriptor 3, which closes the client's own event loop (EBADF). Without ``server_cert`` the
    client takes the certificate the server's endpoint offers."""
    client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(cert),
        private_key=str(key),
        server_certificate=None if server_cert is None else str(server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )


class OpcuaVia:
    """edge-plc-sim's OPC UA side: calls Announce, hears every verdict as an event."""

    def __init__(self, cfg: LineConfig, host: str, cert: Path | None = None, key: Path | None = None):
        ua_cfg = cfg.opcua
        if not ua_cfg.endpoint:
            raise PlantLinkError(f"{cfg.path}: opcua.endpoint: not set, so the line serves no OPC UA")
        self._line = cfg.line
        self._inbox: queue.Queue[Reply | dict] = queue.Queue()
        self.client = SyncClient(ua_cfg.endpoint.replace("0.0.0.0", host), timeout=10)
        if ua_cfg.security != "none":
            if cert is None or key is None:
                raise PlantLinkError("the line's OPC UA server needs a client certificate: give --cert and --key")
            self.client.application_uri = APPLICATION_URI.format(name=cert.stem)
            set_client_security(self.client, cert, key, ua_cfg.certificate)
        if ua_cfg.username and ua_cfg.password_file:
            self.client.set_user(ua_cfg.username)
            self.client.set_password(read_password(ua_cfg.password_file, "opcua.password_file"))
        self._connect(ua_cfg.endpoint, time.monotonic() + 20)
        idx = self.client.get_namespace_index(NAMESPACE)
        self._node = lambda s: self.client.get_node(ua.NodeId(s, idx))
        self._sub = self.client.create_subscription(20, self)
        self._sub.subscribe_events(self.client.nodes.server, self._node("VerdictEventType"))

    def _connect(self, endpoint: str, deadline: float) -> None:
        """Connects, trying again while nothing listens yet (the line still starting) until ``deadline``."""
        while True:
            try:
                return self.client.connect()
            except Exception as e:  # asyncua raises what its transport and the server's checks raise
                if isinstance(e, OSError) and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                self.client.tloop.stop()  # its thread would keep the process alive
                raise PlantLinkError(f"OPC UA {endpoint}: cannot connect: {type(e).__name__}: {e}") from None

    def event_notification(self, event) -> None:  # asyncua's subscription handler, on its thread
        fields = event.get_event_props_as_fields_dict()
        value = {name: fields[name].Value for name in ("PartId", "Verdict", "Error", "Late") if name in fields}
        self._inbox.put(
            {
                "part_id": value["PartId"],
                "verdict": VERDICTS[value["Verdict"]],
                "error": value["Error"] or None,
                "late": value["Late"],
            }
        )

    def ready(self, timeout_s: float) -> bool:
        """The line is up when one of its stations' heartbeats is recent."""
        deadline = time.monotonic() + timeout_s
        stations = self.client.get_node(self._node(self._line).nodeid).get_children()
        while time.monotonic() < deadline:
            for station in stations:
                if station.read_node_class() == ua.NodeClass.Object:
                    beat = self._node(f"{station.nodeid.Identifier}/Heartbeat").read_value()
                    if beat and abs(beat.replace(tzinfo=timezone.utc).timestamp() - time.time()) < 10:
                        return True
            time.sleep(0.2)
        return False

    def announce(self, stream: str, station: str, part_id: str, deadline_ms: float | None) -> None:
        line = self._node(self._line)
        if deadline_ms is None:
            accepted, _, error = line.call_method(self._node(f"{self._line}/Announce"), stream, part_id)
        else:
            accepted, _, error = line.call_method(
                self._node(f"{self._line}/AnnounceWithDeadline"), stream, part_id, float(deadline_ms)
            )
        self._inbox.put(Reply(part_id, accepted, error or None))

    def poll(self, timeout_s: float) -> Iterator[Reply | dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                yield self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return

    def close(self) -> None:
        self.client.disconnect()
