"""The embedded ClickHouse's locks, pure parts: which statements a GET may run, what SQL would reach the host or
the network however it is spelled, Host and Origin, credentials, settings caps, and decompression with a cap."""

from __future__ import annotations

import base64
import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import lz4.frame  # type: ignore[import-untyped]
import pytest
from backports import zstd
from hypothesis import given
from hypothesis import strategies as st

from services.dev.clickhouse_http import (
    HOST_ACCESS_EXTRA,
    BadRequest,
    ClickHouseError,
    Credentials,
    decode_body,
    has_second_statement,
    host_access,
    host_access_names,
    host_allowed,
    is_read_statement,
    origin_allowed,
    raises_cap,
    request_credentials,
    scan_words,
    setting_within_cap,
    stops_the_server,
)
from services.settings import Settings

# what chDB 4.4's catalogs list, in part: enough to tell the local sources from the rest
CATALOG = ["file", "url", "s3", "remote", "mysql", "executable", "Python", "input", "filesystem", "numbers"]
CATALOG += ["values", "format", "merge", "File", "URL", "Kafka", "MergeTree", "ReplicatedMergeTree", "Memory"]
NAMES = host_access_names(CATALOG)


def test_chdb_catalog_names_are_refused_unless_they_stay_in_the_data_path() -> None:
    assert {"file", "url", "s3", "remote", "mysql", "executable", "python", "input", "filesystem", "kafka"} <= NAMES
    assert {"replicatedmergetree"} <= NAMES
    assert not {"numbers", "values", "format", "merge", "mergetree", "memory"} & NAMES
    assert HOST_ACCESS_EXTRA <= NAMES


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  -- a note\n(SELECT 1) UNION ALL (SELECT 2)",
        "select * from t",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "WITH 1 AS y SELECT y",
        "SHOW TABLES",
        "DESCRIBE TABLE t",
        "DESC t",
        "EXISTS TABLE t",
        "EXPLAIN SELECT 1",
        "EXPLAIN PLAN SELECT * FROM (SELECT 1)",
        "EXPLAIN PLAN indexes = 1 SELECT replace(s, 'a', 'b') FROM t",
        "EXPLAIN WITH 1 AS x SELECT x",
        "WITH replace('a', 'a', 'b') AS x SELECT x",
        "FROM t SELECT a",
    ],
)
def test_reads_may_run_on_get(sql: str) -> None:
    assert is_read_statement(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
        "INSERT INTO t VALUES (1)",
        "DROP TABLE t",
        "ALTER TABLE t DELETE WHERE 1",
        "TRUNCATE TABLE t",
        "SET max_threads = 1",
        "USE other",
        "SYSTEM FLUSH LOGS",
        "OPTIMIZE TABLE t FINAL",
        "WITH 1 AS x INSERT INTO t SELECT x",
        "WITH (SELECT 1) AS x INSERT INTO t SELECT x",
        "EXPLAIN PIPELINE INSERT INTO t SELECT 1",
        "EXPLAIN WITH 1 AS x INSERT INTO t SELECT x",
        "EXPLAIN EXPLAIN SELECT 1",
        "EXPLAIN",
        "/* SELECT */ DELETE FROM t WHERE 1",
        "'SELECT' DROP TABLE t",
        "",
        "   ",
    ],
)
def test_writes_and_anything_else_are_refused_on_get(sql: str) -> None:
    assert not is_read_statement(sql)


@pytest.mark.parametrize(
    ("sql", "second"),
    [
        ("SELECT 1", False),
        ("SELECT 1;", False),
        ("SELECT 1 ;  -- done\n /* really */ ", False),
        ("SELECT ';' AS a, `x;y`, \"p;q\" FROM t", False),
        ("SELECT 1 -- ; DROP TABLE t", False),
        ("SELECT $$;$$", False),
        ("SELECT 1; DROP TABLE t", True),
        ("SELECT 1;\nSELECT 2", True),
        ("SELECT 1 /* */ ; /* */ DROP TABLE t", True),
        ("INSERT INTO t FORMAT CSV; DROP TABLE t", True),
    ],
)
def test_a_second_statement_is_found_outside_literals_and_comments(sql: str, second: bool) -> None:
    assert has_second_statement(sql) is second


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT * FROM FILE('/etc/hostname')",
        "SELECT * FROM FiLe  \t\n ('/etc/hostname')",
        "SELECT * FROM file /* hidden */ ('/etc/hostname')",
        "SELECT * FROM file /* a /* nested */ comment */ ('/etc/hostname')",
        "SELECT * FROM file -- note\n('/etc/hostname')",
        "SELECT * FROM file # note\n('/etc/hostname')",
        "SELECT * FROM file\u200b('/etc/hostname')",
        "SELECT * FROM file\u00a0('/etc/hostname')",
        "SELECT * FROM `file`('/etc/hostname')",
        "SELECT * FROM \"file\"('/etc/hostname')",
        "SELECT * FROM `fil\\x65`('/etc/hostname')",
        "SELECT file('/etc/hostname')",
        "SELECT $$'$$ AS a, * FROM file('/etc/hostname') -- '",
        "SELECT $tag$ ' $tag$, * FROM file('/etc/hostname')",
        "SELECT * FROM (SELECT * FROM url('http://169.254.169.254/latest/meta-data/', 'LineAsString'))",
        "SELECT * FROM s3('https://bucket/key')",
        "SELECT * FROM remote('10.0.0.1', system.one)",
        "SELECT * FROM mysql('db:3306', 'd', 't', 'u', 'p')",
        "SELECT * FROM executable('x.sh', 'TSV', 'a String')",
        "SELECT * FROM Python(secret)",
        "SELECT * FROM filesystem('/etc')",
        "INSERT INTO t SELECT * FROM input('a String')",
        "INSERT INTO FUNCTION file('/tmp/x.csv', 'CSV') SELECT 1",
        "SELECT 1 INTO OUTFILE '/tmp/x'",
        "SELECT 1 INTO /* x */ OUTFILE '/tmp/x'",
        "INSERT INTO t FROM INFILE '/etc/hostname' FORMAT LineAsString",
        "CREATE TABLE t (a String) ENGINE = File(TSV, '/etc/hostname')",
        "CREATE TABLE t (a String) ENGINE=URL('http://x/')",
        "CREATE TABLE t (a String) ENGINE Kafka SETTINGS kafka_broker_list = 'x:9092'",
        "CREATE TABLE t (a String) ENGINE = /* q */ Kafka SETTINGS kafka_broker_list = 'x:9092'",
        "CREATE TABLE t (a String) ENGINE = ReplicatedMergeTree ORDER BY a",
        "CREATE DATABASE d ENGINE = Filesystem('/etc')",
        "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/tmp/e/')",
        "CREATE DICTIONARY d (a UInt8) PRIMARY KEY a SOURCE(HTTP(url 'http://x/' format 'TSV')) LAYOUT(FLAT()) "
        "LIFETIME(0)",
        "CREATE DICTIONARY d (a UInt8) PRIMARY KEY a SOURCE(CLICKHOUSE(host 'x' table 't')) LAYOUT(FLAT()) LIFETIME(0)",
        "BACKUP TABLE t TO File('/tmp/b')",
        "BACKUP TABLE t TO Disk('backups', 'b.zip')",
        "ATTACH TABLE t FROM '/var/lib/data' (a UInt8) ENGINE = MergeTree ORDER BY a",
        "SELECT 1 AS a FORMAT Protobuf SETTINGS output_format_schema = '/tmp/x.proto'",
        "SET format_schema = '/etc/x.proto:M'",
        "SELECT 1 SETTINGS `input_format_record_errors_file_path` = '/tmp/e'",
    ],
)
def test_sql_reaching_the_host_or_network_is_found_however_it_is_spelled(sql: str) -> None:
    assert host_access(sql, NAMES) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'file(/etc/hostname)', \"note\" FROM t -- file('/x')",
        "SELECT count() FROM numbers(10)",
        "SELECT format('{} {}', 'a', 'b')",
        "SELECT * FROM system.tables WHERE engine = 'File' OR engine = 'Kafka'",
        "SELECT engine, url_path FROM t",
        "SELECT file_name, url FROM t",
        "CREATE TABLE t (file String, url String) ENGINE = MergeTree ORDER BY file",
        "CREATE TABLE t (a UInt8) ENGINE = ReplacingMergeTree ORDER BY a",
        "INSERT INTO t (url) VALUES ('http://example.com/file(1)')",
        "SELECT * FROM merge(currentDatabase(), '^t')",
        "SELECT 1 /* INTO OUTFILE 'x' */",
        "SELECT $$ file('/etc/hostname') $$",
    ],
)
def test_ordinary_sql_naming_files_in_strings_columns_or_comments_passes(sql: str) -> None:
    assert host_access(sql, NAMES) is None


def test_every_refused_name_is_refused_in_any_case() -> None:
    for name in NAMES:
        for spelled in (name, name.upper(), name.capitalize()):
            assert host_access(f"SELECT * FROM {spelled} ( 1 )", NAMES) is not None, spelled


@given(st.text(alphabet=" \t\n\r\f\v\u00a0\u2028\u200b", max_size=6), st.sampled_from(["--x\n", "/* */", "", "# y\n"]))
def test_whitespace_and_comments_between_a_name_and_its_parenthesis_hide_nothing(gap: str, comment: str) -> None:
    assert host_access(f"SELECT * FROM file{gap}{comment}{gap}('/etc/hostname')", NAMES) is not None


@given(st.text(max_size=200))
def test_the_checks_never_raise_on_hostile_text(sql: str) -> None:
    host_access(sql, NAMES)
    is_read_statement(sql)
    has_second_statement(sql)
    raises_cap(sql, "max_execution_time", 60)


@given(st.text(max_size=80))
def test_text_inside_a_string_literal_is_never_a_word(text: str) -> None:
    literal = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    assert [w.upper for w in scan_words(f"SELECT {literal} AS a", quoted=True)] == ["SELECT", "AS", "A"]


def test_sql_cannot_stop_the_server() -> None:
    assert stops_the_server("SYSTEM SHUTDOWN")
    assert stops_the_server("/* bye */ system\nkill")
    assert not stops_the_server("SYSTEM FLUSH LOGS")
    assert not stops_the_server("SELECT 'SYSTEM SHUTDOWN'")


@pytest.mark.parametrize(
    ("sql", "raises"),
    [
        ("SELECT 1 SETTINGS max_execution_time = 5", False),
        ("SET max_execution_time=60", False),
        ("SELECT max_execution_time FROM t", False),
        ("SELECT getSetting('max_execution_time')", False),
        ("SELECT 1 SETTINGS max_execution_time = 0", True),
        ("SELECT 1 SETTINGS max_execution_time = 61", True),
        ("SET max_execution_time = DEFAULT", True),
        ("SET max_execution_time /* */ = /* */ 0", True),
        ("SET `max_execution_time` = 3600", True),
        ("SELECT 1 SETTINGS max_execution_time = 1e9", True),
        ("SELECT 1 SETTINGS max_execution_time = '0'", True),
    ],
)
def test_max_execution_time_may_only_be_lowered(sql: str, raises: bool) -> None:
    assert raises_cap(sql, "max_execution_time", 60) is raises


def test_url_settings_may_only_lower_the_cap() -> None:
    assert setting_within_cap("5", 60)
    assert setting_within_cap("60", 60)
    assert not setting_within_cap("0", 60)
    assert not setting_within_cap("61", 60)
    assert not setting_within_cap("DEFAULT", 60)
    assert not setting_within_cap("-1", 60)


@pytest.mark.parametrize(
    "host",
    [None, "127.0.0.1", "127.0.0.1:8123", "127.9.9.9:1", "localhost", "LOCALHOST:8123", "[::1]:8123", "[::1]"],
)
def test_loopback_hosts_are_served(host: str | None) -> None:
    assert host_allowed(host, frozenset())


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8123",
        "localhost.evil.example",
        "127.0.0.1.nip.io:8123",
        "10.0.0.1:8123",
        "[::2]:8123",
        "",
        ":8123",
        "127.0.0.1:80:81",
        "[::1]x",
        "localhost:http",
        "::1",  # IPv6 needs its brackets in a Host header
    ],
)
def test_other_hosts_are_refused(host: str) -> None:
    assert not host_allowed(host, frozenset())


def test_an_allowed_host_name_is_served_with_any_port() -> None:
    assert host_allowed("ClickHouse:8123", frozenset({"clickhouse"}))
    assert not host_allowed("clickhouse.evil:8123", frozenset({"clickhouse"}))


def test_web_pages_are_refused_unless_their_origin_is_allowed() -> None:
    allowed = frozenset({"http://localhost:3000"})
    assert origin_allowed(None, None, allowed)
    assert origin_allowed(None, "none", allowed)
    assert origin_allowed("http://localhost:3000/", "same-site", allowed)
    assert not origin_allowed("http://evil.example", None, allowed)
    assert not origin_allowed("null", None, allowed)
    assert not origin_allowed(None, "cross-site", allowed)
    assert not origin_allowed(None, "same-site", allowed)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_come_from_headers_basic_auth_or_parameters() -> None:
    assert request_credentials("ops", "k", None, {}) == ("ops", "k")
    assert request_credentials(None, None, basic("ops", "p:w"), {}) == ("ops", "p:w")
    assert request_credentials(None, None, None, {"user": "ops", "password": "pw"}) == ("ops", "pw")
    assert request_credentials(None, None, None, {}) == ("default", "")


@pytest.mark.parametrize(
    ("x_user", "x_key", "authorization", "params"),
    [
        ("ops", "k", basic("ops", "k"), {}),
        ("ops", "k", None, {"password": "k"}),
        (None, None, basic("ops", "k"), {"user": "ops"}),
        (None, None, "Bearer token", {}),
        (None, None, "Basic !!!", {}),
        (None, "k", None, {}),
        (None, None, None, {"user": ""}),
    ],
)
def test_mixed_unsupported_or_nameless_credentials_fail_authentication(
    x_user: str | None, x_key: str | None, authorization: str | None, params: dict[str, str]
) -> None:
    with pytest.raises(ClickHouseError) as failed:
        request_credentials(x_user, x_key, authorization, params)
    assert (failed.value.code, failed.value.name) == (516, "AUTHENTICATION_FAILED")


def test_credentials_match_user_and_password_exactly_and_hide_the_password() -> None:
    credentials = Credentials("default", "s3cret")
    assert credentials.match("default", "s3cret")
    assert not credentials.match("default", "s3cret ")
    assert not credentials.match("Default", "s3cret")
    assert not credentials.match("default", "")
    assert "s3cret" not in repr(credentials)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=1),
    "zstd": zstd.compress,
    "lz4": lz4.frame.compress,
    "deflate": zlib.compress,
}


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_compression_bomb_is_refused_at_the_cap(encoding: str) -> None:
    bomb = ENCODERS[encoding](bytes(8 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(ClickHouseError) as refused:
        decode_body(bomb, encoding, limit=1 << 20)
    assert (refused.value.code, refused.value.name) == (229, "QUERY_IS_TOO_LARGE")


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_bodies_up_to_the_cap_decode_whole_across_frames(encoding: str) -> None:
    data = os.urandom(1000) + bytes(1 << 20)
    encode = ENCODERS[encoding]
    frames = encode(data[:500]) + encode(data[500:]) if encoding != "deflate" else encode(data)
    assert decode_body(frames, encoding, limit=len(data)) == data


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_truncated_compressed_body_is_a_bad_request(encoding: str) -> None:
    whole = ENCODERS[encoding](os.urandom(5000))
    with pytest.raises(BadRequest, match="cannot decode"):
        decode_body(whole[: len(whole) // 2], encoding, limit=1 << 20)


def test_settings_read_the_password_file_unless_a_password_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHYARD_CLICKHOUSE_PASSWORD", raising=False)
    monkeypatch.delenv("SWITCHYARD_CLICKHOUSE_PASSWORD_FILE", raising=False)
    assert Settings(var_dir=tmp_path).clickhouse_password == ""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "clickhouse.password").write_text("from-file\n")
    assert Settings(var_dir=tmp_path).clickhouse_password == "from-file"
    assert Settings(var_dir=tmp_path, clickhouse_password="given").clickhouse_password == "given"
    monkeypatch.setenv("SWITCHYARD_CLICKHOUSE_PASSWORD", "")
    assert Settings(var_dir=tmp_path).clickhouse_password == ""
    monkeypatch.setenv("SWITCHYARD_CLICKHOUSE_PASSWORD", "from-env")
    assert Settings(var_dir=tmp_path).clickhouse_password == "from-env"
    assert "from-env" not in repr(Settings(var_dir=tmp_path))
