"""The pure pieces of the embedded ClickHouse HTTP server: query/body assembly, INSERT ... FORMAT detection,
settings filtering, body encodings and error parsing."""

from __future__ import annotations

import gzip
import zlib

import lz4.frame  # type: ignore[import-untyped]
import pytest
from backports import zstd
from hypothesis import given
from hypothesis import strategies as st

from services.dev.clickhouse_http import (
    BadRequest,
    ClickHouseError,
    InsertWithData,
    compose_query,
    content_type,
    decode_body,
    encode_response,
    find_insert_data,
    first_keyword,
    output_format,
    split_params,
)


def test_query_param_and_body_are_joined_by_a_newline() -> None:
    assert compose_query("INSERT INTO t FORMAT CSV", b"1,a\n") == b"INSERT INTO t FORMAT CSV\n1,a\n"


def test_query_comes_from_the_body_alone_or_the_param_alone() -> None:
    assert compose_query(None, b"SELECT 1") == b"SELECT 1"
    assert compose_query("SELECT 1", b"") == b"SELECT 1"


def test_insert_format_with_data_is_split_at_the_first_newline() -> None:
    payload = b"INSERT INTO db.t (a, b) FORMAT Native\n\x00\x01binary\nmore"
    insert = find_insert_data(payload)
    assert insert == InsertWithData("INSERT INTO db.t (a, b)", "", "Native", payload.index(b"\x00"))
    assert payload[insert.data_offset :] == b"\x00\x01binary\nmore"


def test_insert_data_on_the_same_line_starts_after_the_whitespace() -> None:
    payload = b"INSERT INTO t FORMAT CSV 1,2"
    insert = find_insert_data(payload)
    assert insert is not None
    assert payload[insert.data_offset :] == b"1,2"


def test_insert_settings_clause_moves_after_from_infile() -> None:
    insert = find_insert_data(b"INSERT INTO t SETTINGS async_insert=0 FORMAT JSONEachRow\n{}")
    assert insert is not None
    assert insert.from_infile("/tmp/x'y") == (
        "INSERT INTO t FROM INFILE '/tmp/x\\'y' SETTINGS async_insert=0 FORMAT JSONEachRow"
    )


def test_format_inside_columns_strings_and_comments_is_not_the_format_clause() -> None:
    payload = b"INSERT /* FORMAT x */ INTO t (`format`, format_id) -- FORMAT y\n FORMAT TSV\n1\t2\n"
    insert = find_insert_data(payload)
    assert insert is not None
    assert insert.fmt == "TSV"
    assert payload[insert.data_offset :] == b"1\t2\n"


@pytest.mark.parametrize(
    "sql",
    [
        b"INSERT INTO t VALUES (1, 'FORMAT CSV')",
        b"INSERT INTO t SELECT * FROM s FORMAT CSV",
        b"INSERT INTO t FROM INFILE 'x.csv' FORMAT CSV",
        b"SELECT 1 FORMAT JSON",
        b"INSERT INTO t",
        b"",
    ],
)
def test_statements_without_trailing_data_run_as_they_are(sql: bytes) -> None:
    assert find_insert_data(sql) is None


def test_output_format_is_the_top_level_format_clause() -> None:
    assert output_format("SELECT * FROM (SELECT 1 FORMAT CSV) FORMAT JSONEachRow") == "JSONEachRow"
    assert output_format("SELECT 'FORMAT CSV'") is None
    assert output_format("select 1 format PrettyCompact;") == "PrettyCompact"


def test_first_keyword_skips_comments_and_parentheses() -> None:
    assert first_keyword("-- note\n/* x */ (SELECT 1)") == "SELECT"
    assert first_keyword("  ") == ""


def test_transport_params_are_not_settings_and_param_prefix_binds() -> None:
    bound, settings = split_params(
        {
            "query": "SELECT {id:String}",
            "param_id": "r-1",
            "database": "switchyard",
            "session_id": "s",
            "query_id": "q",
            "enable_http_compression": "1",
            "wait_end_of_query": "1",
            "send_progress_in_http_headers": "1",
            "cancel_http_readonly_queries_on_client_close": "1",
            "client_protocol_version": "54405",
            "user": "default",
            "password": "secret",
            "max_threads": "2",
            "date_time_input_format": "best_effort",
        }
    )
    assert bound == {"id": "r-1"}
    assert settings == {"max_threads": "2", "date_time_input_format": "best_effort"}


def test_lz4_bodies_of_several_frames_decode_whole() -> None:
    body = lz4.frame.compress(b"first ") + lz4.frame.compress(b"second")
    assert decode_body(body, "lz4") == b"first second"


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("zstd", zstd.compress), ("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", bytes)],
)
def test_request_bodies_decode_per_content_encoding(encoding: str, encode: object) -> None:
    assert callable(encode)
    assert decode_body(encode(b"payload"), encoding) == b"payload"


def test_undecodable_or_unknown_encodings_are_bad_requests() -> None:
    with pytest.raises(BadRequest, match="lz4"):
        decode_body(b"not lz4", "lz4")
    with pytest.raises(BadRequest, match="unsupported Content-Encoding"):
        decode_body(b"x", "compress")


def test_responses_use_the_first_encoding_the_client_accepts() -> None:
    body, encoding = encode_response(b"rows" * 100, "br, gzip;q=1, lz4")
    assert encoding == "gzip"
    assert gzip.decompress(body) == b"rows" * 100
    assert encode_response(b"x", None) == (b"x", None)


def test_engine_errors_keep_code_name_and_message() -> None:
    error = ClickHouseError.from_engine(
        RuntimeError("prefix Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)")
    )
    assert (error.code, error.name) == (60, "UNKNOWN_TABLE")
    assert error.message.startswith("Code: 60. DB::Exception")


def test_engine_errors_without_a_code_become_std_exceptions() -> None:
    error = ClickHouseError.from_engine(RuntimeError("boom"))
    assert (error.code, error.name) == (1001, "STD_EXCEPTION")
    assert error.message == "Code: 1001. DB::Exception: boom. (STD_EXCEPTION)"


def test_content_types_follow_the_format_family() -> None:
    assert content_type("JSONEachRow").startswith("application/json")
    assert content_type("TabSeparatedWithNames").startswith("text/tab-separated-values")
    assert content_type("Native") == "application/octet-stream"
    assert content_type("PrettyCompact").startswith("text/plain")


@given(st.binary(max_size=300))
def test_insert_detection_never_raises_on_hostile_bytes(payload: bytes) -> None:
    try:
        insert = find_insert_data(b"INSERT INTO t " + payload)
    except BadRequest:
        return
    if insert is not None:
        assert 0 <= insert.data_offset <= len(payload) + 14


@given(st.text(max_size=300))
def test_format_detection_never_raises_on_hostile_text(sql: str) -> None:
    output_format(sql)
    first_keyword(sql)
