"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver) loads the page
started with the chain while traffic runs, and the charts show the numbers that are in ClickHouse; a click on a
route drills down to its requests and on to one request's audit record. The browser signs in with the dashboard's
token first, as a person does. The screenshot is kept in var/artifacts/dashboard.png."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from confluent_kafka.admin import AdminClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from services.dashboard.queries import work_split
from services.infra.clickhouse import get_client
from services.settings import Settings
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import Chain, running_chain

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = secrets.token_urlsafe(32)  # the dashboard's, given to it as SWITCHYARD_DASHBOARD_TOKEN


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are needed: `apt-get install chromium chromium-driver`")
    profile = tempfile.mkdtemp(prefix="switchyard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,2100"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    token = {"SWITCHYARD_DASHBOARD_TOKEN": TOKEN}
    with running_chain(settings, codec, admin, tmp_path_factory.mktemp("dashboard"), extra_env=token) as running:
        yield running


@pytest.fixture(scope="module")
def browser(chromium: WebDriver, chain: Chain) -> WebDriver:
    """Chromium signed in: the page answers with the sign-in form until the token is given, then with itself."""
    chromium.get(chain.launcher.url())
    assert not chromium.find_elements(By.CSS_SELECTOR, "[data-chart]")
    chromium.find_element(By.NAME, "token").send_keys(TOKEN)
    chromium.find_element(By.CSS_SELECTOR, "#login button").click()
    WebDriverWait(chromium, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-chart]"))
    return chromium


class Traffic(threading.Thread):
    """POS requests at a steady rate until stopped: the dashboard is read while they flow."""

    def __init__(self, chain: Chain, rate_per_s: float = 8.0) -> None:
        super().__init__(daemon=True)
        self.chain, self.rate, self.stopping = chain, rate_per_s, threading.Event()
        self.sent: list[tuple[str, int]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            requests = self.chain.requests(int(self.rate), run="dashboard")
            self.chain.publish(requests, rate_per_s=self.rate)
            self.sent += [(r.request_id, r.created_at) for r in requests]

    def answered_before(self, settings: Settings, until: datetime, timeout_s: float = 120.0) -> None:
        """Waits until every request created before `until` is answered and in ClickHouse: then every stage row
        of a window ending at `until` is written (a stage starts after its request was created)."""
        cutoff = int(until.timestamp() * 1000)
        deadline = time.monotonic() + timeout_s
        # a batch is recorded in `sent` once published (about a second): wait for one created after the cutoff, so
        # every request created before it is listed (a batch still publishing at `until` was missed before)
        while not any(created >= cutoff for _, created in list(self.sent)) and time.monotonic() < deadline:
            time.sleep(0.2)
        wanted = [request_id for request_id, created in list(self.sent) if created < cutoff]
        client = get_client(settings)
        while time.monotonic() < deadline:
            found = client.query(
                "SELECT count() FROM answers FINAL WHERE request_id IN {ids:Array(String)}", parameters={"ids": wanted}
            ).result_rows[0][0]
            if found == len(wanted):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{len(wanted) - found} of {len(wanted)} requests before {until} not answered in time")


def bars(driver: WebDriver, chart: str) -> dict[str, float]:
    marks = driver.find_elements(By.CSS_SELECTOR, f'[data-chart="{chart}"] g.bar')
    return {mark.get_attribute("data-label") or "": float(mark.get_attribute("data-value") or "nan") for mark in marks}


def clickhouse_rows(settings: Settings, sql: str, since: datetime, until: datetime) -> list[tuple[Any, ...]]:
    client = get_client(settings)
    return [tuple(row) for row in client.query(sql, parameters={"since": since, "until": until}).result_rows]


# the raw rows the dashboard's per-minute rollups were fed, bucketed by minute the same way
IN_WINDOW = "toStartOfMinute({col}) >= toStartOfMinute({{since:DateTime64(3)}}) AND {col} < {{until:DateTime64(3)}}"
ROUTES_SQL = f"SELECT route, count() FROM answers WHERE {IN_WINDOW.format(col='audited_at')} GROUP BY route"
STAGES_SQL = f"SELECT stage, count() FROM stage_events WHERE {IN_WINDOW.format(col='started_at')} GROUP BY stage"
WORK_SQL = (
    "SELECT category, greatest(sum(work_ms), 0) FROM orchestration_work "
    f"WHERE {IN_WINDOW.format(col='minute')} GROUP BY category"
)


def test_the_charts_show_the_numbers_in_clickhouse_while_traffic_runs(
    chain: Chain, browser: WebDriver, settings: Settings
) -> None:
    traffic = Traffic(chain)
    traffic.start()
    try:
        # A whole minute the traffic ran through, closed, and written: its numbers no longer change.
        started = datetime.now(tz=UTC)
        until = started.replace(second=0, microsecond=0) + timedelta(minutes=1)
        since = until - timedelta(minutes=1)
        while datetime.now(tz=UTC) < until:
            time.sleep(0.5)
        traffic.answered_before(settings, until)
        browser.get(f"{chain.launcher.url()}?{urlencode({'since': since.isoformat(), 'until': until.isoformat()})}")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes"))
        routes = dict(clickhouse_rows(settings, ROUTES_SQL, since, until))
        stages = dict(clickhouse_rows(settings, STAGES_SQL, since, until))
        shown_routes = bars(browser, "routes")
        assert shown_routes == {route: float(count) for route, count in routes.items()}
        assert sum(routes.values()) > 0, "the traffic left no answers in the window"
        answers = browser.find_element(By.CSS_SELECTOR, '[data-kpi="answers"] .v').text
        assert answers == f"{sum(routes.values()):,}"
        assert sum(bars(browser, "throughput").values()) == sum(routes.values())
        assert {label.rsplit(" ", 1)[0] for label in bars(browser, "stages")} == set(stages)
        split = bars(browser, "split")
        measured = {k.removeprefix("measured "): v for k, v in split.items() if k.startswith("measured ")}
        assert set(measured) == {"routing", "governance", "context_stitching", "monitoring", "policy", "data_prep",
                                 "audit"}  # fmt: skip
        work = [
            {"category": category, "work_ms": ms} for category, ms in clickhouse_rows(settings, WORK_SQL, since, until)
        ]
        assert measured == {row["category"]: row["percent"] for row in work_split(work)}
        assert abs(sum(measured.values()) - 100.0) < 0.5
        screenshot = settings.var_dir / "artifacts" / "dashboard.png"
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(screenshot))
    finally:
        traffic.stopping.set()
        traffic.join(30)


def test_a_click_on_a_route_lists_its_requests_and_opens_one_audit_record(
    chain: Chain, browser: WebDriver, settings: Settings
) -> None:
    browser.get(f"{chain.launcher.url()}?minutes=15")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-chart="routes"] g.bar'))
    bar = browser.find_elements(By.CSS_SELECTOR, '[data-chart="routes"] g.bar')[0]
    route = bar.get_attribute("data-label")
    bar.click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-table="requests"] a'))
    cells = browser.find_elements(By.CSS_SELECTOR, '[data-table="requests"] tbody tr td:nth-child(3)')
    assert cells and {cell.text for cell in cells} == {route}
    links = {link.text: link for link in browser.find_elements(By.CSS_SELECTOR, '[data-table="requests"] a')}
    audited = get_client(settings).query(
        "SELECT request_id, hash FROM audit_records FINAL WHERE request_id IN {ids:Array(String)}",
        parameters={"ids": list(links)},
    )
    assert audited.result_rows, "none of the listed requests has an audit record"
    request_id, digest = audited.result_rows[0]
    links[request_id].click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-request-id"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-request-id") == request_id
    assert digest in browser.find_element(By.ID, "record").text


def test_the_live_page_refreshes_itself(chain: Chain, browser: WebDriver) -> None:
    browser.get(chain.launcher.url())
    WebDriverWait(browser, 30).until(
        lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes") or 0) >= 2
    )
