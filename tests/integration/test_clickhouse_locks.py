"""The embedded ClickHouse's locks, against owners these tests start on free ports: each attack the issue lists
is made the way an attacker would make it and refused with ClickHouse's code, and the legitimate paths (the
password through every client, reads on GET, writes on POST, sessions) still work."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lz4.frame  # type: ignore[import-untyped]
import pytest
from backports import zstd
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from services.dev.clickhouse_http import LOCAL_SOURCES
from services.infra.clickhouse import get_client
from tests.integration.test_clickhouse_server import (
    BASIC_AUTH,
    PASSWORD,
    USER,
    Owner,
    http,
    owner_settings,
    start_owner,
)

pytestmark = pytest.mark.integration

MAX_BODY = 64 << 10
MAX_DECOMPRESSED = 256 << 10
MAX_EXECUTION_S = 2
SECRET = "the-hosts-secret"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The owner's working directory, holding a file no SQL may read."""
    directory = tmp_path_factory.mktemp("cwd")
    (directory / "secret.csv").write_text(f"{SECRET}\n")
    return directory


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory, workdir: Path) -> Iterator[Owner]:
    running = start_owner(
        tmp_path_factory.mktemp("chdb-locked") / "data",
        *("--max-body-bytes", str(MAX_BODY), "--max-decompressed-bytes", str(MAX_DECOMPRESSED)),
        *("--max-execution-time", str(MAX_EXECUTION_S)),
        *("--allow-host", "clickhouse.internal", "--allow-origin", "http://localhost:3000"),
        cwd=workdir,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(owner: Owner) -> Iterator[Client]:
    ch = get_client(owner_settings(owner.url))
    yield ch
    ch.close()


@pytest.fixture
def table(client: Client) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    client.command(f"CREATE TABLE {name} (s String) ENGINE = Memory")
    yield name
    client.command(f"DROP TABLE IF EXISTS {name}")


def refused(response: Any, status: int, code: int) -> bool:
    body = response.read()
    return bool(
        response.code == status
        and response.headers["X-ClickHouse-Exception-Code"] == str(code)
        and body.startswith(f"Code: {code}. DB::Exception: ".encode())
        and SECRET.encode() not in body
    )


def raw(owner: Owner, request: bytes, timeout_s: float = 10) -> bytes:
    """What the owner answers to bytes sent as they are, until it closes the connection."""
    host, port = owner.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ---- authentication ---------------------------------------------------------------------------------------


def test_without_the_password_only_ping_and_the_bare_root_answer(owner: Owner) -> None:
    for path in ("/ping", "/"):
        with urllib.request.urlopen(owner.url + path, timeout=5) as response:
            assert response.read() == b"Ok.\n"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{owner.url}/?query=SELECT+1", timeout=10)
    assert refused(anonymous.value, 401, 516)
    wrong: list[dict[str, str]] = [
        {"Authorization": "Basic ZGVmYXVsdDp3cm9uZw=="},  # default:wrong
        {"X-ClickHouse-User": USER, "X-ClickHouse-Key": "wrong"},
        {"X-ClickHouse-User": "admin", "X-ClickHouse-Key": PASSWORD},
        {"X-ClickHouse-User": USER},
        {"Authorization": "Bearer " + PASSWORD},
    ]
    for headers in wrong:
        assert refused(http(owner, None, headers, query="SELECT 1"), 401, 516)
    assert refused(http(owner, None, None, query="SELECT 1", user=USER, password="wrong"), 401, 516)
    mixed = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}
    assert refused(http(owner, b"SELECT 1", mixed, user=USER, password=PASSWORD), 401, 516)


def test_clickhouse_connect_with_the_password_queries_inserts_and_keeps_its_session(owner: Owner) -> None:
    with get_client(owner_settings(owner.url)) as ch:
        ch.command("CREATE TABLE kept (id UInt32, text String) ENGINE = MergeTree ORDER BY id")
        ch.insert("kept", [[i, f"row {i}"] for i in range(1000)])
        assert ch.query("SELECT count(), max(id) FROM kept").result_rows == [(1000, 999)]
        ch.command("SET max_threads = 3")
        assert ch.command("SELECT getSetting('max_threads')") == 3
        ch.command("DROP TABLE kept")
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        get_client(owner_settings(owner.url, password="wrong"))


def test_a_server_without_a_password_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_CLICKHOUSE_")}
    env["SWITCHYARD_VAR_DIR"] = str(tmp_path)
    started = subprocess.run(
        [sys.executable, "-m", "services.dev.clickhouse_http", "--path", str(tmp_path / "data"), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "SWITCHYARD_CLICKHOUSE_ALLOW_NO_PASSWORD" in started.stderr


def test_no_password_is_served_only_when_allowed_for_a_laptop(tmp_path: Path) -> None:
    laptop = start_owner(tmp_path / "data", "--allow-no-password", password="")
    try:
        assert http(laptop, None, {"X-ClickHouse-User": USER}, query="SELECT 1").read() == b"1\n"
        assert refused(http(laptop, None, query="SELECT 1"), 401, 516)  # the helper sends a password
    finally:
        assert laptop.stop() == 0


# ---- GET is read-only; one statement a request -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE pwned (a UInt8) ENGINE = Memory",
        "WITH 1 AS x CREATE TABLE pwned (a UInt8) ENGINE = Memory",
        "INSERT INTO pwned VALUES (1)",
        "WITH 1 AS x INSERT INTO pwned SELECT x",
        "DROP TABLE IF EXISTS pwned",
        "SET max_threads = 1",
        "SYSTEM DROP MARK CACHE",
    ],
)
def test_a_get_runs_no_write(owner: Owner, client: Client, sql: str) -> None:
    assert refused(http(owner, None, query=sql), 500, 164)
    head = urllib.request.Request(
        f"{owner.url}/?{urllib.parse.urlencode({'query': sql})}", headers=BASIC_AUTH, method="HEAD"
    )
    with pytest.raises(urllib.error.HTTPError) as head_refused:
        urllib.request.urlopen(head, timeout=10)
    assert head_refused.value.code == 500
    assert client.command("EXISTS TABLE pwned") == 0


def test_a_get_reads_with_or_without_a_session(owner: Owner, table: str) -> None:
    session = uuid.uuid4().hex
    assert http(owner, b"SET max_threads = 5", session_id=session).read() == b""
    assert http(owner, None, query="SELECT getSetting('max_threads')", session_id=session).read() == b"5\n"
    assert refused(http(owner, None, query=f"INSERT INTO {table} VALUES ('x')", session_id=session), 500, 164)
    assert http(owner, None, query=f"SELECT count() FROM {table}", readonly="1").read() == b"0\n"
    assert http(owner, None, query="SHOW TABLES").code == 200
    assert http(owner, None, query=f"DESCRIBE TABLE {table}").code == 200
    assert http(owner, None, query=f"EXISTS TABLE {table}").read() == b"1\n"


def test_a_readonly_setting_on_a_post_does_not_lock_the_next_requests(owner: Owner, client: Client) -> None:
    assert refused(http(owner, b"CREATE TABLE ro (a UInt8) ENGINE = Memory", readonly="1"), 500, 164)
    assert http(owner, b"CREATE TABLE ro (a UInt8) ENGINE = Memory").code == 200
    client.command("DROP TABLE ro")


@pytest.mark.parametrize("method_body", [None, b"SELECT 1; DROP TABLE IF EXISTS victim"])
def test_a_second_statement_is_refused_on_get_and_post(owner: Owner, client: Client, method_body: bytes | None) -> None:
    client.command("CREATE TABLE IF NOT EXISTS victim (a UInt8) ENGINE = Memory")
    params = {} if method_body else {"query": "SELECT 1; DROP TABLE IF EXISTS victim"}
    assert refused(http(owner, method_body, None, **params), 400, 62)
    insert = b"INSERT INTO victim FORMAT CSV; DROP TABLE victim\n1\n"
    assert refused(http(owner, insert), 400, 62)
    assert client.command("EXISTS TABLE victim") == 1


# ---- no host files or network from SQL ---------------------------------------------------------------------------

HOST_ACCESS = [
    "SELECT * FROM file('secret.csv', 'LineAsString')",
    "SELECT * FROM FILE('secret.csv', 'LineAsString')",
    "SELECT * FROM fIlE /* not here */ ('secret.csv', 'LineAsString')",
    "SELECT * FROM file\n-- nor here\n('secret.csv', 'LineAsString')",
    "SELECT * FROM file\u200b('secret.csv', 'LineAsString')",
    "SELECT * FROM `file`('secret.csv', 'LineAsString')",
    "SELECT * FROM `fil\\x65`('secret.csv', 'LineAsString')",
    "SELECT $$'$$, * FROM file('secret.csv', 'LineAsString') -- '",
    "SELECT file('secret.csv')",
    "SELECT * FROM filesystem('.')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:1/bucket/key', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
    "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT * FROM executable('x.sh', 'TSV', 'a String')",
    "SELECT * FROM Python(params)",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'TSV')",
    "SELECT * FROM sqlite('secret.db', 't')",
    "INSERT INTO FUNCTION file('written.csv', 'CSV') SELECT 1",
    "SELECT 'owned' INTO OUTFILE 'written.txt'",
    "INSERT INTO t FROM INFILE 'secret.csv' FORMAT LineAsString",
    "CREATE TABLE f (s String) ENGINE = File(LineAsString, 'secret.csv')",
    "CREATE TABLE u (s String) ENGINE = URL('http://127.0.0.1:1/', LineAsString)",
    "CREATE TABLE k (s String) ENGINE = Kafka SETTINGS kafka_broker_list = '127.0.0.1:1', kafka_topic_list = 't', "
    "kafka_group_name = 'g', kafka_format = 'LineAsString'",
    "CREATE DATABASE fs ENGINE = Filesystem('.')",
    "CREATE TABLE d (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = 'disk/')",
    "BACKUP TABLE system.one TO File('backup.zip')",
    "SELECT 1 AS a FORMAT Protobuf SETTINGS output_format_schema = 'written.proto'",
]


@pytest.mark.parametrize("sql", HOST_ACCESS)
def test_sql_reaching_host_files_or_the_network_is_refused(owner: Owner, workdir: Path, sql: str) -> None:
    assert refused(http(owner, sql.encode()), 403, 497)
    assert sorted(p.name for p in workdir.iterdir()) == ["secret.csv"]


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT * FROM 'secret.csv'", {}),
        ("SELECT * FROM `secret.csv`", {}),
        ("SELECT * FROM default.`secret.csv`", {}),
        ("SELECT * FROM {t:Identifier}", {"param_t": "secret.csv"}),
    ],
)
def test_unknown_table_names_are_not_read_as_files(owner: Owner, sql: str, params: dict[str, str]) -> None:
    assert refused(http(owner, sql.encode(), None, **params), 404, 60)


def test_settings_naming_host_files_are_refused_in_the_url(owner: Owner, workdir: Path) -> None:
    response = http(owner, b"SELECT 1 AS a FORMAT Protobuf", output_format_schema=str(workdir / "written.proto"))
    assert refused(response, 403, 497)
    assert not (workdir / "written.proto").exists()


def test_every_table_function_of_chdb_is_refused_or_stays_in_the_data_path(owner: Owner) -> None:
    names = http(owner, b"SELECT name FROM system.table_functions ORDER BY name").read().decode().split()
    assert {"file", "url", "s3", "remote", "input", "python"} <= {n.lower() for n in names}
    for name in names:
        status = http(owner, f"SELECT * FROM {name}() LIMIT 0".encode()).code
        assert (status == 403) is (name.lower() not in LOCAL_SOURCES), name


def test_legitimate_sql_that_names_files_in_strings_and_columns_runs(owner: Owner, table: str) -> None:
    assert http(owner, b"SELECT count() FROM numbers(10)").read() == b"10\n"
    assert http(owner, b"SELECT format('{} {}', 'file(', 'url(')").read() == b"file( url(\n"
    assert http(owner, b"SELECT count() FROM system.tables WHERE engine = 'File'").read() == b"0\n"
    assert http(owner, f"INSERT INTO {table} VALUES ('INTO OUTFILE file(x)')".encode()).code == 200


def test_opting_in_gives_sql_the_host_again_and_what_it_made_is_named_after(tmp_path: Path, workdir: Path) -> None:
    opened = start_owner(tmp_path / "data", "--allow-external-access", cwd=workdir)
    try:
        assert http(opened, b"SELECT * FROM file('secret.csv', 'LineAsString')").read() == f"{SECRET}\n".encode()
        assert http(opened, b"SELECT * FROM 'secret.csv'").code == 200
        assert http(opened, b"CREATE VIEW planted AS SELECT * FROM file('secret.csv', 'LineAsString')").code == 200
    finally:
        assert opened.stop() == 0
    locked = start_owner(tmp_path / "data", cwd=workdir)
    try:
        assert refused(http(locked, b"SELECT * FROM 'secret.csv'"), 404, 60)
        warnings = [line["msg"] for line in locked.log() if line["level"] == "warning"]
        assert any(w.startswith("default.planted reaches the host") for w in warnings)
    finally:
        assert locked.stop() == 0


# ---- Host and Origin -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebind.attacker.example:8123"},
        {"Host": "127.0.0.1.nip.io:8123"},
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_requests_from_web_pages_and_foreign_host_names_get_403(owner: Owner, headers: dict[str, str]) -> None:
    assert refused(http(owner, None, headers, query="SELECT 1"), 403, 497)
    assert refused(http(owner, b"SELECT 1", headers), 403, 497)


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "localhost"},
        {"Host": "[::1]:8123"},
        {"Host": "ClickHouse.Internal:8123"},
        {"Origin": "http://localhost:3000"},
        {"Sec-Fetch-Site": "none"},
    ],
)
def test_loopback_and_allowed_hosts_and_origins_are_served(owner: Owner, headers: dict[str, str]) -> None:
    assert http(owner, b"SELECT 1", headers).read() == b"1\n"


def test_two_host_headers_get_403(owner: Owner) -> None:
    answer = raw(
        owner, b"GET /?query=SELECT+1 HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 403")


# ---- limits -----------------------------------------------------------------------------------------------------


def test_a_query_past_max_execution_time_is_stopped(owner: Owner) -> None:
    started = time.monotonic()
    assert refused(http(owner, b"SELECT sleep(3)"), 408, 159)
    assert time.monotonic() - started < 3
    assert http(owner, b"SELECT getSetting('max_execution_time')").read() == f"{MAX_EXECUTION_S}\n".encode()
    assert http(owner, b"SELECT getSetting('max_execution_time')", max_execution_time="1").read() == b"1\n"


@pytest.mark.parametrize("value", ["0", "3600", "DEFAULT"])
def test_max_execution_time_cannot_be_raised_or_unset(owner: Owner, value: str) -> None:
    assert refused(http(owner, b"SELECT 1", max_execution_time=value), 500, 452)
    assert refused(http(owner, f"SELECT 1 SETTINGS max_execution_time = {value}".encode()), 500, 452)
    assert refused(http(owner, f"SET max_execution_time = {value}".encode(), session_id=uuid.uuid4().hex), 500, 452)


def test_a_body_over_the_cap_gets_413_before_it_is_sent(owner: Owner) -> None:
    started = time.monotonic()
    answer = raw(
        owner,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\nContent-Length: 1073741824\r\n\r\nSELECT 1"
        % BASIC_AUTH["Authorization"].encode(),
    )
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"Code: 229." in answer and b"Connection: close" in answer
    assert time.monotonic() - started < 5


def test_a_chunked_body_over_the_cap_gets_413(owner: Owner) -> None:
    chunk = b"%x\r\n%s\r\n" % (MAX_BODY, b"-" * MAX_BODY)
    answer = raw(
        owner,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nAuthorization: %s\r\n\r\n"
        % BASIC_AUTH["Authorization"].encode()
        + chunk * 2
        + b"0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413")


BOMBS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zstd": zstd.compress,
    "lz4": lz4.frame.compress,
    "deflate": zlib.compress,
}


@pytest.mark.parametrize("encoding", sorted(BOMBS))
def test_compression_bombs_get_413_and_honest_bodies_land(
    owner: Owner, client: Client, table: str, encoding: str
) -> None:
    bomb = BOMBS[encoding](b"x" * (8 << 20))
    assert len(bomb) < MAX_BODY
    insert = f"INSERT INTO {table} FORMAT LineAsString"
    assert refused(http(owner, bomb, {"Content-Encoding": encoding}, query=insert), 413, 229)
    honest = BOMBS[encoding](b"".join(b"line %d\n" % i for i in range(1000)))
    assert http(owner, honest, {"Content-Encoding": encoding}, query=insert).code == 200
    assert client.command(f"SELECT count() FROM {table}") == 1000


def test_sql_cannot_stop_the_owner(owner: Owner) -> None:
    assert refused(http(owner, b"SYSTEM SHUTDOWN"), 403, 497)
    assert http(owner, b"SELECT 1").read() == b"1\n"


def test_the_owner_logs_failed_authentication(owner: Owner) -> None:
    http(owner, None, {"X-ClickHouse-User": "intruder", "X-ClickHouse-Key": "guess"}, query="SELECT 1")
    lines = [json.loads(line) for line in owner.log_path.read_text().splitlines()]
    assert any("authentication failed for user 'intruder'" in line["msg"] for line in lines)
