"""Who may read the dashboard: a request carrying the token (`Authorization: Bearer ...`, for scripts) or the session
cookie that signing in with it sets (HttpOnly, SameSite=Strict, for browsers), sent to a Host the dashboard answers
to (the loopback, its listen address, settings.dashboard_allowed_hosts), so a page of another site that rebinds its
name to this address reads nothing. /healthz alone stays open, for the launcher and the kubelet's probes.

The token is settings.dashboard_token or else var/secrets/dashboard.token, made once (random, mode 0600); it is
never logged, only the file's path. Listening beyond the loopback needs the token set explicitly."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from services.settings import Settings

log = logging.getLogger("switchyard.dashboard")

TOKEN_FILE: Final = "dashboard.token"
COOKIE: Final = "switchyard_dashboard"
MIN_TOKEN_CHARS: Final = 16
OPEN_PATHS: Final = frozenset({"/healthz"})
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
LOGIN_PAGE: Final = Path(__file__).parent / "static" / "login.html"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardAuthError(RuntimeError):
    """The dashboard refuses to start: the reason says what to set."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_path(settings: Settings) -> Path:
    return settings.var_dir / "secrets" / TOKEN_FILE


def load_token(settings: Settings) -> str:
    """settings.dashboard_token, or the token file, created with a fresh random token on first use."""
    if settings.dashboard_token is not None:
        token = settings.dashboard_token.get_secret_value()
        if len(token) < MIN_TOKEN_CHARS:
            raise DashboardAuthError(
                f"SWITCHYARD_DASHBOARD_TOKEN has {len(token)} characters; use {MIN_TOKEN_CHARS} or more, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return token
    path = token_path(settings)
    if not path.is_file():
        _create(path)
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise DashboardAuthError(f"{path} holds no token of {MIN_TOKEN_CHARS} characters or more: delete it")
    log.info("dashboard token: sign in with the token in its file", extra={"token_file": str(path)})
    return token


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another dashboard made it a moment ago
        return
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    log.info("dashboard token created", extra={"token_file": str(path)})


@dataclass(frozen=True)
class DashboardGuard:
    """Checks each request's Host and credentials before any handler (and so any query) runs."""

    token_sha256: bytes
    session: str
    hosts: frozenset[str]

    @classmethod
    def for_token(cls, token: str, hosts: frozenset[str]) -> DashboardGuard:
        # the cookie holds a value derived from the token, not the token: a leaked cookie does not reveal it
        session = hmac.new(token.encode(), b"switchyard-dashboard-session", hashlib.sha256).hexdigest()
        return cls(hashlib.sha256(token.encode()).digest(), session, hosts)

    def host_allowed(self, host_header: str | None) -> bool:
        hostname = _hostname(host_header or "")
        return hostname is not None and (hostname in LOOPBACK_NAMES or hostname in self.hosts)

    def signed_in(self, request: web.Request) -> bool:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented:
            return self.token_matches(presented.strip())
        return hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), self.session.encode())

    def token_matches(self, presented: str) -> bool:
        # equal-length digests: the comparison takes the same time whatever was presented
        return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self.token_sha256)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if not self.host_allowed(request.headers.get("Host")):
            return web.Response(status=421, text="this dashboard does not answer to that Host\n")
        if request.path == "/login" or self.signed_in(request):
            return await handler(request)
        if request.path.startswith("/api/"):
            return web.Response(
                status=401,
                text="sign in: send `Authorization: Bearer <token>` (the dashboard's token)\n",
                headers={"WWW-Authenticate": 'Bearer realm="switchyard-dashboard"'},
            )
        return _login_page(status=401)


def guard_for(settings: Settings, bind_host: str) -> DashboardGuard:
    """The guard of a dashboard listening on bind_host; refuses a listen address beyond the loopback without an
    explicitly set token."""
    if not is_loopback(bind_host) and settings.dashboard_token is None:
        raise DashboardAuthError(
            f"refusing to serve the dashboard on {bind_host or 'every interface'} without SWITCHYARD_DASHBOARD_TOKEN: "
            "set it (16 characters or more), or listen on the loopback (--host 127.0.0.1)"
        )
    hosts = {name.lower().strip("[]") for name in settings.dashboard_allowed_hosts}
    if bind_host and bind_host not in {"0.0.0.0", "::"}:
        hosts.add(bind_host.lower().strip("[]"))
    return DashboardGuard.for_token(load_token(settings), frozenset(hosts))


def _hostname(host_header: str) -> str | None:
    try:
        hostname = urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None
    return hostname or None


def _login_page(status: int = 200) -> web.Response:
    return web.Response(status=status, text=LOGIN_PAGE.read_text(encoding="utf-8"), content_type="text/html")


def _next(target: str) -> str:
    # only a path on this dashboard: never //other.host or /\other.host, which browsers treat as another site
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("Host", "")


async def login_page(_request: web.Request) -> web.Response:
    return _login_page()


def login(guard: DashboardGuard) -> Handler:
    """POST /login (form fields token, next): the session cookie and a redirect to next, or the form again."""

    async def sign_in(request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return web.Response(status=403, text="sign in from the dashboard's own page\n")
        form = await request.post()
        token, target = form.get("token"), form.get("next")
        if not isinstance(token, str) or not guard.token_matches(token.strip()):
            log.warning("dashboard sign-in refused", extra={"peer": request.remote})
            return _login_page(status=401)
        response = web.Response(status=303, headers={"Location": _next(target if isinstance(target, str) else "/")})
        response.set_cookie(COOKIE, guard.session, httponly=True, samesite="Strict", secure=request.secure, path="/")
        return response

    return sign_in
