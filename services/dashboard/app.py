"""`python -m services.dashboard` (or `switchyard dashboard`): serves the live dashboard page, its JSON data and
the audit record of any request. Everything is read from ClickHouse over its HTTP interface, so it runs next to
the embedded chDB owner or against a ClickHouse server alike. Every path but /healthz needs the dashboard's token
(services/dashboard/auth.py): a browser signs in once, a script sends `Authorization: Bearer <token>`.

    GET /                    the dashboard (inline SVG charts drawn by its own script; refreshes itself)
    GET|POST /login          the sign-in form; posting the token sets the session cookie
    GET /api/summary         every panel over ?since=&until= (ISO 8601; default: the last 15 minutes)
    GET /api/requests        the slowest 50 requests of the window, filtered by ?route= ?provider= ?verdict=
    GET /api/audit/{id}      the audit record of one request (JSON)
    GET /audit/{id}          the same, as a page
    GET /healthz             200 when ClickHouse answers (open: no data, no reason beyond yes or no)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from services.dashboard.auth import DashboardAuthError, DashboardGuard, guard_for, login, login_page
from services.dashboard.queries import AUDIT_SQL, REQUESTS_SQL, ClickHouseHTTP, summary, window
from services.runtime.observability import configure_logging
from services.settings import get_settings

log = logging.getLogger("switchyard.dashboard")
PAGES = Path(__file__).parent / "static"
CLICKHOUSE: web.AppKey[ClickHouseHTTP] = web.AppKey("clickhouse", ClickHouseHTTP)
DEFAULT_PORT = 9110


def _time(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={text!r} is not an ISO 8601 time, e.g. 2026-11-25T14:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _minutes(request: web.Request) -> int:
    text = request.query.get("minutes") or "15"
    if not text.isdigit() or int(text) < 1:
        raise web.HTTPBadRequest(text=f"minutes={text!r} is not a whole number of minutes above 0")
    return int(text)


def _json(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda value: json.dumps(value, default=str))


async def page(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGES / "dashboard.html")


async def audit_page(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGES / "audit.html")


async def api_summary(request: web.Request) -> web.Response:
    since, until = window(_time(request, "since"), _time(request, "until"), _minutes(request))
    return _json(await summary(request.app[CLICKHOUSE], since, until))


async def api_requests(request: web.Request) -> web.Response:
    since, until = window(_time(request, "since"), _time(request, "until"), _minutes(request))
    filters = {name: request.query.get(name, "") for name in ("route", "provider", "verdict")}
    rows = await request.app[CLICKHOUSE].rows(REQUESTS_SQL, {"since": since, "until": until, **filters})
    return _json(rows)


async def api_audit(request: web.Request) -> web.Response:
    request_id = request.match_info["request_id"]
    rows = await request.app[CLICKHOUSE].rows(AUDIT_SQL, {"request_id": request_id})
    if not rows:
        raise web.HTTPNotFound(text=f"no audit record for request {request_id}")
    return web.json_response(text=rows[0]["record"])


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[CLICKHOUSE].rows("SELECT 1 AS ok", {})
    except Exception as error:
        log.warning("ClickHouse does not answer", extra={"error": str(error)})
        return web.Response(status=503, text="ClickHouse does not answer (the dashboard's log says why)")
    return web.Response(text="ok: ClickHouse answers")


def build_app(guard: DashboardGuard) -> web.Application:
    app = web.Application(middlewares=[guard.middleware])

    async def clickhouse_session(app: web.Application) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            app[CLICKHOUSE] = ClickHouseHTTP(get_settings(), session)
            yield

    app.cleanup_ctx.append(clickhouse_session)
    app.router.add_get("/", page)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login(guard))
    app.router.add_get("/audit/{request_id}", audit_page)
    app.router.add_get("/api/summary", api_summary)
    app.router.add_get("/api/requests", api_requests)
    app.router.add_get("/api/audit/{request_id}", api_audit)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", PAGES)
    return app


async def serve(host: str, port: int) -> None:
    try:
        guard = guard_for(get_settings(), host)
    except DashboardAuthError as error:
        raise SystemExit(f"dashboard: {error}") from None
    runner = web.AppRunner(build_app(guard), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("dashboard serving", extra={"url": f"http://{host}:{port}/"})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard dashboard", description=__doc__.split("\n\n")[0])
    settings = get_settings()
    parser.add_argument("--host", default=settings.host, help="address to listen on (default: the loopback)")
    parser.add_argument("--port", type=int, default=settings.dashboard_port, help=f"default {DEFAULT_PORT}")
    args = parser.parse_args(argv)
    configure_logging(settings.log_level)
    asyncio.run(serve(args.host, args.port))
    return 0
