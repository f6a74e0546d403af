"""edge-hmi: the operator's screen as a web page, served by its own process (Starlette + uvicorn,
the ``hmi`` extra). The live page streams the state as server-sent events; the review needs a login."""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from edge.config import LineConfig
from hmi.auth import Sessions
from hmi.review import Review, ReviewError
from hmi.state import LiveState

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "edge_hmi_session"
PUSH_EVERY_S = 0.25  # the page is at most this late behind the daemon's messages
KEEPALIVE_S = 1.0  # a snapshot at least this often, so that stale-status alarms show up


def _relative(cfg: LineConfig, path: Path) -> Path:
    return path if path.is_absolute() or cfg.path is None else cfg.path.parent / path


class Hmi:
    """The page's routes over the live state, the review and the sessions."""

    def __init__(self, cfg: LineConfig, state: LiveState) -> None:
        self.cfg, self.state = cfg, state
        self.review = Review(cfg.evidence.dir, _relative(cfg, cfg.hmi.review_dir))
        self.sessions = Sessions(cfg.hmi.users)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.page),
                Route("/review", self.review_page),
                Route("/events", self.events),
                Route("/api/state", self.api_state),
                Route("/image/{image_id}", self.image),
                Route("/evidence/{kind}/{name}", self.evidence),
                Route("/api/parts", self.api_parts),
                Route("/api/mark", self.api_mark, methods=["POST"]),
                Route("/api/preview", self.api_preview, methods=["POST"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
            ]
        )

    def _user(self, request: Request) -> str | None:
        return self.sessions.user(request.cookies.get(COOKIE))

    async def page(self, request: Request) -> Response:
        return self.templates.TemplateResponse(request, "live.html", {"line": self.cfg.line})

    async def review_page(self, request: Request) -> Response:
        context = {"line": self.cfg.line, "user": self._user(request), "logins": self.sessions.enabled}
        return self.templates.TemplateResponse(request, "review.html", context)

    async def api_state(self, request: Request) -> Response:
        return JSONResponse(self.state.snapshot())

    async def events(self, request: Request) -> Response:
        async def stream():
            sent, waited = -1, 0.0
            while not await request.is_disconnected():
                if self.state.version != sent or waited >= KEEPALIVE_S:
                    snapshot = self.state.snapshot()
                    sent, waited = snapshot["version"], 0.0
                    yield f"data: {json.dumps(snapshot)}\n\n"
                await asyncio.sleep(PUSH_EVERY_S)
                waited += PUSH_EVERY_S

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def image(self, request: Request) -> Response:
        jpeg = self.state.image(request.path_params["image_id"])
        if jpeg is None:
            return Response("image gone (the screen keeps the last 200)", status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def evidence(self, request: Request) -> Response:
        kind, name = request.path_params["kind"], request.path_params["name"]
        if kind not in ("ng", "ok"):
            return Response("kind: ng or ok", status_code=404)
        try:
            path = self.review.image(kind, name, raw=request.query_params.get("raw") == "1")
        except ReviewError as e:
            return Response(str(e), status_code=404)
        return FileResponse(path, media_type="image/png")

    async def api_parts(self, request: Request) -> Response:
        q = request.query_params
        try:
            since, until = float(q.get("since", 0)), float(q.get("until", "inf"))
            parts = await run_in_threadpool(self.review.parts, since, until)
        except (ValueError, ReviewError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"parts": [asdict(p) for p in parts], "log": self.review.log()[-50:]})

    async def api_mark(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return JSONResponse({"error": "log in to review"}, status_code=401)
        body: dict[str, Any] = await request.json()
        if body.get("kind") not in ("ng", "ok") or body.get("mark") not in ("good", "defect"):
            return JSONResponse({"error": "kind: ng|ok and mark: good|defect"}, status_code=400)
        try:
            target = await run_in_threadpool(
                self.review.mark, body["kind"], str(body.get("name", "")), body["mark"], user, body.get("defect_type")
            )
        except ReviewError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        log.info("%s marked %s %s: %s", user, body["kind"], body.get("name"), target)
        return JSONResponse({"moved_to": str(target)})

    async def api_preview(self, request: Request) -> Response:
        if self._user(request) is None:
            return JSONResponse({"error": "log in to review"}, status_code=401)
        from calibration.calibrate import CalibrationError
        from hmi.preview import preview

        stream = self.cfg.streams[0]  # the line's bundle: reviewed parts of a line with several are not told apart
        assert stream.bundle is not None  # filled in by load_config
        try:
            result = await run_in_threadpool(preview, stream.bundle, self.review.review_dir, stream.k)
        except (CalibrationError, OSError, ValueError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse(asdict(result))

    async def login(self, request: Request) -> Response:
        form: dict[str, Any] = await request.json()
        token = await run_in_threadpool(self.sessions.login, str(form.get("user", "")), str(form.get("password", "")))
        if token is None:
            return JSONResponse({"error": "wrong user or password"}, status_code=401)
        response = JSONResponse({"user": form.get("user")})
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.logout(request.cookies.get(COOKIE))
        response = JSONResponse({"user": None})
        response.delete_cookie(COOKIE)
        return response


def is_local(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    from edge.cli import Parser, _setup_logging
    from edge.config import ConfigError, load_config
    from hmi.auth import add_user

    p = Parser(
        prog="edge-hmi",
        description="The operator's screen: live parts with heatmaps, counts, drift and alarms, and the review of "
        "evidence, as a web page. Runs beside edge-run; the daemon neither waits for it nor notices when it stops.",
        epilog="Example: edge-hmi --config configs/line3.yaml   (then open http://127.0.0.1:8080)",
    )
    p.add_argument("--config", required=True, help="the line config edge-run uses (its hmi and hmi_images sections)")
    p.add_argument("--bind", help="HOST:PORT to serve on (default: the config's hmi.bind, 127.0.0.1:8080)")
    p.add_argument("--add-user", metavar="NAME", help="add a reviewer to hmi.users (password from stdin) and exit")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, need_bundle=args.add_user is None)
    except ConfigError as e:
        print(f"edge-hmi: {e}", file=sys.stderr)
        return 2
    if args.add_user:
        return _add_user(cfg, args.add_user, add_user)
    _setup_logging(cfg.log_level, cfg.log_format)
    return serve(cfg, args.bind or cfg.hmi.bind)


def _add_user(cfg: LineConfig, name: str, add) -> int:
    if cfg.hmi.users is None:
        print("edge-hmi: hmi.users: set it to the users file (it is made when missing)", file=sys.stderr)
        return 2
    password = getpass.getpass(f"password for {name}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("edge-hmi: the password must have at least 8 characters", file=sys.stderr)
        return 2
    add(cfg.hmi.users, name, password)
    print(f"{name} can review now ({cfg.hmi.users})")
    return 0


def serve(cfg: LineConfig, bind: str) -> int:
    import uvicorn

    from hmi.feed import Feed

    host, port = bind.rsplit(":", 1)
    if cfg.hmi.users is not None and not cfg.hmi.users.is_file():
        print(
            f"edge-hmi: hmi.users {cfg.hmi.users}: no such file; add a user: edge-hmi --config ... --add-user NAME",
            file=sys.stderr,
        )
        return 2
    state = LiveState(cfg.hmi)
    try:
        feed = Feed(cfg, state)
    except OSError as e:
        print(f"edge-hmi: {e}", file=sys.stderr)
        return 2
    feed.start()
    where = "this machine only" if is_local(host) else "OTHER MACHINES TOO (hmi.bind / --bind is not localhost)"
    review = "review needs a login" if cfg.hmi.users else "review off (no hmi.users)"
    log.info("serving the %s screen on http://%s:%s, open to %s; %s", cfg.line, host, port, where, review)
    server = uvicorn.Server(uvicorn.Config(Hmi(cfg, state).app(), host=host, port=int(port), log_level="warning"))
    try:
        server.run()
    finally:
        feed.close()
    return 0 if server.started else 2
