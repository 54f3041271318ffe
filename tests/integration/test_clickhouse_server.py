"""The embedded ClickHouse (chDB owner) over HTTP, through clickhouse-connect and plain urllib, as any
Switchyard process or tool would use it. The session fixture starts its own owner on a free port, with its own
password (its locks are tested in test_clickhouse_locks.py)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from services.infra.clickhouse import DDL_DIR, MigrationError, get_client, migrate
from services.settings import Settings

pytestmark = pytest.mark.integration

USER = "default"
PASSWORD = "owner-test-password"
CREDENTIAL_HEADERS = {"Authorization", "X-ClickHouse-User", "X-ClickHouse-Key"}
BASIC_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


@dataclass
class Owner:
    url: str
    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def owner_settings(url: str, password: str = PASSWORD) -> Settings:
    return Settings.model_validate(
        {"clickhouse_url": url, "clickhouse_database": "default", "clickhouse_password": password}
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_owner(path: Path, *options: str, password: str = PASSWORD, cwd: Path | None = None) -> Owner:
    """An owner on a free port whose clients must send `password`; `options` go to its command line."""
    port = free_port()
    log_path = path.parent / f"owner-{port}.log"
    env = {**os.environ, "SWITCHYARD_CLICKHOUSE_PASSWORD": password}
    command = [sys.executable, "-m", "services.dev.clickhouse_http", "--path", str(path), "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, *options],
            stderr=log_file,
            env=env,
            cwd=cwd,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the chDB owner exited: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1) as response:
                if response.read() == b"Ok.\n":
                    return Owner(url, path, process, log_path)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the chDB owner did not answer /ping within 60s")


@pytest.fixture(scope="session")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    running = start_owner(tmp_path_factory.mktemp("chdb") / "data")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def settings(owner: Owner) -> Settings:
    return owner_settings(owner.url)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[Client]:
    ch = get_client(settings)
    yield ch
    ch.close()


@pytest.fixture
def table(client: Client) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    client.command(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def fresh_switchyard(client: Client) -> Iterator[None]:
    client.command("DROP DATABASE IF EXISTS switchyard")
    yield
    client.command("DROP DATABASE IF EXISTS switchyard")


def http(owner: Owner, body: bytes | None = None, headers: dict[str, str] | None = None, **params: str) -> Any:
    """A request as curl sends one, with the owner's password unless it carries credentials of its own."""
    url = f"{owner.url}/?{urllib.parse.urlencode(params)}" if params else f"{owner.url}/"
    headers = headers or {}
    own = CREDENTIAL_HEADERS & headers.keys() or {"user", "password"} & params.keys()
    request = urllib.request.Request(url, data=body, headers=headers if own else {**BASIC_AUTH, **headers})
    try:
        return urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as ex:
        return ex


def test_ping_and_a_bare_get_answer_ok(owner: Owner) -> None:
    for path in ("/ping", "/"):
        with urllib.request.urlopen(owner.url + path, timeout=5) as response:
            assert response.read() == b"Ok.\n"


def test_queries_arrive_in_the_url_the_body_or_both_like_curl(owner: Owner) -> None:
    assert http(owner, query="SELECT 1 + 1").read() == b"2\n"
    assert http(owner, b"SELECT 'body'").read() == b"body\n"
    assert http(owner, b"42 AS answer", query="SELECT").read() == b"42\n"


def test_responses_carry_clickhouse_headers(owner: Owner) -> None:
    response = http(owner, b"SELECT number FROM numbers(5)", query_id="q-headers", default_format="JSONEachRow")
    assert response.headers["X-ClickHouse-Query-Id"] == "q-headers"
    assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-ClickHouse-Timezone"]
    assert response.headers["X-ClickHouse-Server-Display-Name"]
    summary = json.loads(response.headers["X-ClickHouse-Summary"])
    assert summary["result_rows"] == "5"
    assert {"read_rows", "written_rows", "elapsed_ns", "total_rows_to_read"} <= summary.keys()
    assert [json.loads(line)["number"] for line in response.read().splitlines()] == [0, 1, 2, 3, 4]


def test_an_explicit_format_clause_wins_over_default_format(owner: Owner) -> None:
    response = http(owner, b"SELECT 1 AS x FORMAT CSVWithNames", default_format="JSON")
    assert response.headers["X-ClickHouse-Format"] == "CSVWithNames"
    assert response.read() == b'"x"\n1\n'


def test_url_settings_apply_to_that_query_only(owner: Owner, client: Client) -> None:
    assert http(owner, b"SELECT getSetting('max_threads')", max_threads="3").read() == b"3\n"
    assert http(owner, b"SELECT getSetting('max_threads')").read() != b"3\n"
    assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 5}) == 5
    assert client.command("SELECT getSetting('max_threads')") != 5


def test_a_session_keeps_its_set_between_requests(owner: Owner) -> None:
    session = uuid.uuid4().hex
    http(owner, b"SET max_threads = 7", session_id=session)
    assert http(owner, b"SELECT getSetting('max_threads')", session_id=session).read() == b"7\n"
    assert http(owner, b"SELECT getSetting('max_threads')").read() != b"7\n"


def test_rows_of_many_types_round_trip_through_insert_and_query(client: Client, table: str) -> None:
    client.command(
        f"CREATE TABLE {table} (id String, store LowCardinality(String), customer Nullable(String), "
        "at DateTime64(3, 'UTC'), attrs Map(String, String), n UInt64, price Float64) "
        "ENGINE = MergeTree ORDER BY id"
    )
    at = datetime(2025, 3, 1, 12, 30, 45, 123000, tzinfo=UTC)
    rows: list[list[Any]] = [
        ["r-1", "store-7", None, at, {"lane": "3", "note": "crème brûlée ☕"}, 2**63, 9.99],
        ["r-2", "магазин", "c-42", at, {}, 0, -0.5],
    ]
    client.insert(table, rows)
    result = client.query(f"SELECT * FROM {table} ORDER BY id")
    got = [list(row) for row in result.result_rows]
    assert [row[3].replace(tzinfo=UTC) for row in got] == [at, at]
    assert [row[:3] + row[4:] for row in got] == [row[:3] + row[4:] for row in rows]


def test_raw_query_returns_the_format_asked_for(client: Client) -> None:
    raw = client.raw_query("SELECT number AS n FROM numbers(2) FORMAT JSONEachRow")
    assert raw == b'{"n":0}\n{"n":1}\n'
    assert client.raw_query("SELECT 1 AS n", fmt="CSVWithNames") == b'"n"\n1\n'


def test_bound_parameters_reach_the_query(client: Client) -> None:
    result = client.query("SELECT {id:String} AS id, {n:UInt8} + 1 AS n", parameters={"id": "r-'1'", "n": 41})
    assert result.result_rows == [("r-'1'", 42)]


def test_an_unknown_table_raises_database_error_with_the_server_message(client: Client, owner: Owner) -> None:
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as raised:
        client.query("SELECT * FROM no_such_table")
    assert "Code: 60. DB::Exception" in str(raised.value)
    response = http(owner, b"SELECT * FROM no_such_table")
    assert (response.code, response.headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert response.read().startswith(b"Code: 60. DB::Exception: ")


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip"])
def test_compressed_inserts_land_whole(settings: Settings, table: str, compress: str) -> None:
    with get_client(settings, compress=compress) as ch:
        ch.command(f"CREATE TABLE {table} (id UInt32, text String) ENGINE = MergeTree ORDER BY id")
        ch.insert(table, [[i, f"text {i} ✓"] for i in range(5000)])
        assert ch.query(f"SELECT count(), uniqExact(text) FROM {table}").result_rows == [(5000, 5000)]


def test_insert_format_bodies_from_curl_and_raw_insert(owner: Owner, client: Client, table: str) -> None:
    client.command(f"CREATE TABLE {table} (id UInt32, text String) ENGINE = MergeTree ORDER BY id")
    http(owner, f"INSERT INTO {table} FORMAT CSV\n1,one\n2,two\n".encode())
    http(owner, b"3\tthree\n", query=f"INSERT INTO {table} (id, text) FORMAT TSV")
    http(
        owner,
        gzip.compress(b'{"id":4,"text":"four"}\n'),
        {"Content-Encoding": "gzip"},
        query=f"INSERT INTO {table} FORMAT JSONEachRow",
    )
    http(owner, f"INSERT INTO {table} VALUES (5, 'five')".encode())
    client.raw_insert(table, ["id", "text"], b"6,six\n", fmt="CSV")
    assert client.query(f"SELECT id, text FROM {table} ORDER BY id").result_rows == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
        (4, "four"),
        (5, "five"),
        (6, "six"),
    ]


def test_responses_are_compressed_when_asked(owner: Owner) -> None:
    response = http(owner, b"SELECT 'zipped'", {"Accept-Encoding": "gzip"}, enable_http_compression="1")
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.read()) == b"zipped\n"


def test_malformed_requests_get_400_and_the_server_carries_on(owner: Owner) -> None:
    response = http(owner, b"\x00garbage", {"Content-Encoding": "lz4"}, query="INSERT INTO t FORMAT Native")
    assert response.code == 400
    assert b"cannot decode the lz4 request body" in response.read()
    response = http(owner, b"SELECT 1", compress="1")
    assert response.code == 400
    host, port = owner.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.")
    assert http(owner, b"SELECT 1").read() == b"1\n"


def test_migrate_twice_applies_each_file_once(client: Client, fresh_switchyard: None) -> None:
    first = migrate(client, DDL_DIR)
    assert first[:4] == [
        "001_database.sql",
        "002_requests.sql",
        "003_stage_events.sql",
        "004_dead_letters.sql",
    ]
    assert migrate(client, DDL_DIR) == []
    tables = {row[0] for row in client.query("SHOW TABLES FROM switchyard").result_rows}
    assert {"requests", "stage_events", "dead_letters", "schema_migrations"} <= tables


def test_a_changed_applied_migration_is_refused(client: Client, fresh_switchyard: None, tmp_path: Path) -> None:
    (tmp_path / "001_database.sql").write_text("CREATE DATABASE IF NOT EXISTS switchyard;\n")
    (tmp_path / "002_t.sql").write_text("CREATE TABLE switchyard.t (a UInt8) ENGINE = Memory;\n")
    assert migrate(client, tmp_path) == ["001_database.sql", "002_t.sql"]
    (tmp_path / "002_t.sql").write_text("CREATE TABLE switchyard.t (a UInt16) ENGINE = Memory;\n")
    with pytest.raises(MigrationError, match=r"002_t\.sql was applied with sha256"):
        migrate(client, tmp_path)


def test_replayed_requests_count_once_with_final(client: Client, fresh_switchyard: None) -> None:
    migrate(client, DDL_DIR)
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # inside the TTL
    rows = [
        {
            "request_id": f"req-{i}",
            "store_id": "s-1",
            "terminal_id": "t-1",
            "customer_id": None,
            "channel": "pos",
            "locale": "fr-FR",
            "text": "où est le lait ?",
            "created_at": created,
            "attributes": {"lane": str(i)},
            "topic": "requests",
            "partition": 0,
            "offset": i,
        }
        for i in range(50)
    ]
    columns = list(rows[0])
    for _replay in range(2):
        client.insert("switchyard.requests", [list(r.values()) for r in rows], column_names=columns)
    assert client.command("SELECT count() FROM switchyard.requests") == 100
    assert client.command("SELECT count() FROM switchyard.requests FINAL") == 50


def test_a_second_process_cannot_open_the_owned_path(owner: Owner) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", f"import chdb; chdb.connect({str(owner.path)!r})"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0
    assert "Cannot lock file" in probe.stderr


def test_credentials_are_taken_each_way_clickhouse_takes_them(owner: Owner) -> None:
    assert http(owner, b"SELECT 1").read() == b"1\n"
    assert http(owner, b"SELECT 2", {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}).read() == b"2\n"
    assert http(owner, b"SELECT 3", user=USER, password=PASSWORD).read() == b"3\n"


def test_sigterm_finishes_in_flight_work_and_exits_zero(tmp_path: Path) -> None:
    own = start_owner(tmp_path / "data")
    with get_client(owner_settings(own.url)) as ch:
        ch.command("CREATE TABLE kept (a UInt8) ENGINE = MergeTree ORDER BY a")
        ch.insert("kept", [[1], [2]])
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lambda: http(own, b"SELECT sleep(2), 'finished'").read())
        time.sleep(0.7)
        assert own.stop() == 0
        assert slow.result() == b"0\tfinished\n"
    log_lines = own.log()
    assert {"ts", "level", "msg"} <= log_lines[0].keys()
    assert any(e.get("query_id") and "elapsed_ms" in e and "rows" in e for e in log_lines)
    again = start_owner(tmp_path / "data")
    with get_client(owner_settings(again.url)) as ch:
        assert ch.command("SELECT sum(a) FROM kept") == 3
    assert again.stop() == 0
