"""The dashboard behind its token: every page, API and static file answers 401 before any ClickHouse query runs
unless the request carries the token or the session cookie signing in sets; a Host the dashboard does not answer to
is refused (DNS rebinding); /healthz stays open and says no more than yes or no. ClickHouse is stubbed at
ClickHouseHTTP.rows, the one place the app queries it."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator, Mapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from services.dashboard.app import build_app
from services.dashboard.auth import COOKIE, DashboardAuthError, DashboardGuard, guard_for, load_token
from services.dashboard.queries import ClickHouseHTTP
from services.settings import Settings

TOKEN = "unit-test-token-0123456789abcdef"
GUARD = DashboardGuard.for_token(TOKEN, frozenset({"dash.example.com"}))
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PROTECTED = [
    "/",
    "/audit/r-1",
    "/api/summary",
    "/api/requests?route=returns",
    "/api/audit/r-1",
    "/static/dashboard.js",
    "/static/dashboard.css",
]


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the app sends to (stubbed) ClickHouse."""
    sent: list[str] = []

    async def rows(_self: ClickHouseHTTP, sql: str, _parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        sent.append(sql)
        return [{"record": '{"request": {}}'}] if "audit_records" in sql else []

    monkeypatch.setattr(ClickHouseHTTP, "rows", rows)
    return sent


@pytest.fixture
async def client(queries: list[str]) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(GUARD))) as test_client:
        yield test_client


def settings_in(var_dir: Path, **values: Any) -> Settings:
    return Settings.model_validate({"var_dir": var_dir, "dashboard_token": None, **values})


@pytest.mark.parametrize("path", PROTECTED)
async def test_without_the_token_every_page_api_and_file_answers_401_before_any_query(
    client: TestClient[Any, Any], queries: list[str], path: str
) -> None:
    response = await client.get(path)

    assert response.status == 401
    assert queries == []
    if path.startswith("/api/"):
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    else:
        assert 'name="token"' in await response.text()  # the sign-in form, in place of the page


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Cookie": f"{COOKIE}={TOKEN}"},  # the token itself is not the session value
        {"Cookie": f"{COOKIE}={'0' * 64}"},
    ],
)
async def test_a_wrong_token_or_forged_cookie_is_refused(
    client: TestClient[Any, Any], queries: list[str], headers: dict[str, str]
) -> None:
    response = await client.get("/api/summary", headers=headers)

    assert response.status == 401
    assert queries == []


async def test_the_bearer_token_opens_the_api_and_the_pages(client: TestClient[Any, Any], queries: list[str]) -> None:
    summary = await client.get("/api/summary?minutes=5", headers=BEARER)
    audit = await client.get("/api/audit/r-1", headers=BEARER)
    page = await client.get("/", headers=BEARER)

    assert (summary.status, audit.status, page.status) == (200, 200, 200)
    assert "requests_per_s" in await summary.json()
    assert queries


async def test_signing_in_sets_an_httponly_strict_session_cookie_that_opens_the_dashboard(
    client: TestClient[Any, Any], queries: list[str]
) -> None:
    response = await client.post("/login", data={"token": TOKEN, "next": "/audit/r-1?x=1"}, allow_redirects=False)

    assert response.status == 303
    assert response.headers["Location"] == "/audit/r-1?x=1"
    cookie = SimpleCookie(response.headers["Set-Cookie"])[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert TOKEN not in cookie.value
    signed_in = await client.get("/api/summary", headers={"Cookie": f"{COOKIE}={cookie.value}"})
    assert signed_in.status == 200


async def test_a_wrong_token_at_sign_in_sets_no_cookie(client: TestClient[Any, Any]) -> None:
    response = await client.post("/login", data={"token": "guess-guess-guess-guess"}, allow_redirects=False)

    assert response.status == 401
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example", "https://evil.example/", "javascript:1"])
async def test_signing_in_never_redirects_off_the_dashboard(client: TestClient[Any, Any], target: str) -> None:
    response = await client.post("/login", data={"token": TOKEN, "next": target}, allow_redirects=False)

    assert response.status == 303
    assert response.headers["Location"] == "/"


async def test_a_sign_in_posted_from_another_site_is_refused(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}, allow_redirects=False
    )

    assert response.status == 403
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9110", "127.0.0.1.evil.example", "", "[::1"])
async def test_a_host_name_the_dashboard_does_not_answer_to_is_refused_even_with_the_token(
    client: TestClient[Any, Any], queries: list[str], host: str
) -> None:
    """A page on evil.example that rebinds its name to 127.0.0.1 reaches the dashboard with Host: evil.example."""
    response = await client.get("/api/summary", headers={**BEARER, "Host": host})

    assert response.status == 421
    assert queries == []


@pytest.mark.parametrize("host", ["127.0.0.1:9110", "localhost:9110", "LOCALHOST", "[::1]:9110", "dash.example.com"])
async def test_the_loopback_and_the_allowed_host_names_are_answered(client: TestClient[Any, Any], host: str) -> None:
    response = await client.get("/api/summary", headers={**BEARER, "Host": host})

    assert response.status == 200


async def test_healthz_is_open_to_probes_and_says_no_more_than_yes_or_no(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.get("/healthz", headers={"Host": "10.1.2.3:9110"})).status == 200

    async def refused(_self: ClickHouseHTTP, _sql: str, _parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        raise RuntimeError("ClickHouse answered 516: password for user default at http://10.0.0.9:8123 is wrong")

    monkeypatch.setattr(ClickHouseHTTP, "rows", refused)
    down = await client.get("/healthz")
    assert down.status == 503
    assert "10.0.0.9" not in await down.text()


def test_the_token_file_is_made_once_mode_0600_and_only_its_path_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_in(tmp_path)
    with caplog.at_level(logging.INFO, logger="switchyard.dashboard"):
        token = load_token(settings)
        again = load_token(settings)

    path = tmp_path / "secrets" / "dashboard.token"
    assert token == again and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    logged = [(record.getMessage(), vars(record)) for record in caplog.records]
    assert any(fields.get("token_file") == str(path) for _, fields in logged)
    assert all(token not in f"{message} {fields}" for message, fields in logged)


def test_a_set_token_is_used_as_it_is_and_no_file_is_made(tmp_path: Path) -> None:
    assert load_token(settings_in(tmp_path, dashboard_token=TOKEN)) == TOKEN
    assert not (tmp_path / "secrets").exists()


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DashboardAuthError, match="16 or more"):
        load_token(settings_in(tmp_path, dashboard_token="hunter2"))


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.20", "dashboard.internal"])
def test_listening_beyond_the_loopback_needs_a_set_token(tmp_path: Path, host: str) -> None:
    with pytest.raises(DashboardAuthError, match="SWITCHYARD_DASHBOARD_TOKEN"):
        guard_for(settings_in(tmp_path), host)

    assert guard_for(settings_in(tmp_path, dashboard_token=TOKEN), host).token_matches(TOKEN)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_on_the_loopback_the_token_file_is_enough(tmp_path: Path, host: str) -> None:
    guard = guard_for(settings_in(tmp_path), host)

    assert guard.token_matches((tmp_path / "secrets" / "dashboard.token").read_text().strip())


def test_a_specific_listen_address_is_an_allowed_host(tmp_path: Path) -> None:
    guard = guard_for(
        settings_in(tmp_path, dashboard_token=TOKEN, dashboard_allowed_hosts=["Dash.Example.com"]), "10.0.0.5"
    )

    assert guard.host_allowed("10.0.0.5:9110") and guard.host_allowed("dash.example.com")
    assert not guard.host_allowed("10.0.0.6:9110")


@given(st.text(max_size=64))
def test_only_the_token_itself_matches(presented: str) -> None:
    assert GUARD.token_matches(presented) == (presented == TOKEN)
