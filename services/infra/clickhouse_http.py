"""The embedded ClickHouse: one process owns the chDB data path and serves the query part of ClickHouse's
HTTP interface on loopback, so clickhouse-connect, curl and other tools work as against a real server.

Run: python -m services.infra.clickhouse_http --path DIR [--host 127.0.0.1] [--port 8123]

chDB locks its data path to one process, so every other Switchyard process talks HTTP to this one. There
is no authentication (user, password and Authorization are accepted and ignored), which is why it refuses
to bind anything but a loopback address.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame  # type: ignore[import-untyped]
from backports import zstd

log = logging.getLogger("switchyard.clickhouse_http")

HTTP_DEFAULT_FORMAT = "TabSeparated"
MAX_BODY_BYTES = 1 << 30

# URL parameters that shape the HTTP exchange itself; everything else is a ClickHouse setting.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "user",
        "password",
        "quota_key",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_zlib_compression_level",
        "http_native_compression_disable_checksumming_on_decompress",
    }
)

# Statements whose answer is a result set, so the response names its format as a server's does.
RESULT_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "FROM"})

# ClickHouse's HTTP handler maps these exception codes to client-error statuses; the rest are 500.
HTTP_STATUS_BY_CODE = {
    6: 400,  # CANNOT_PARSE_TEXT
    27: 400,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38: 400,  # CANNOT_PARSE_DATE
    41: 400,  # CANNOT_PARSE_DATETIME
    62: 400,  # SYNTAX_ERROR
    72: 400,  # CANNOT_PARSE_NUMBER
    46: 404,  # UNKNOWN_FUNCTION
    50: 404,  # UNKNOWN_TYPE
    60: 404,  # UNKNOWN_TABLE
    73: 404,  # UNKNOWN_FORMAT
    81: 404,  # UNKNOWN_DATABASE
    48: 501,  # NOT_IMPLEMENTED
}

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
_WORD_START = re.compile(r"[A-Za-z_]")
_WORD = re.compile(r"[A-Za-z0-9_]+")


class BadRequest(Exception):
    """The HTTP request itself is malformed (answered 400, never reaches chDB)."""


class ClickHouseError(Exception):
    """A ClickHouse exception, carried with its numeric code and symbolic name."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @classmethod
    def from_engine(cls, ex: Exception) -> ClickHouseError:
        text = str(ex).strip()
        start = text.find("Code: ")
        message = text[start:] if start >= 0 else f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)"
        code = _CODE.search(message)
        name = _NAME.search(message)
        return cls(int(code.group(1)) if code else 1001, name.group(1) if name else "STD_EXCEPTION", message)


SHUTTING_DOWN = ClickHouseError(
    210, "NETWORK_ERROR", "Code: 210. DB::Exception: The server is shutting down. (NETWORK_ERROR)"
)


# ---- SQL text: just enough lexing to find clauses at the top level -------------------------------------


@dataclass(frozen=True)
class Word:
    """A bare word outside strings, quoted identifiers and comments."""

    upper: str
    start: int
    end: int
    depth: int


def scan_words(sql: str) -> Iterator[Word]:
    """Yield the bare words of `sql` lazily, so a caller can stop before the data of an INSERT."""
    i, depth, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            i = _skip_quoted(sql, i, ch)
        elif sql.startswith("--", i) or ch == "#":
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close < 0 else close + 2
        elif ch == "(":
            depth, i = depth + 1, i + 1
        elif ch == ")":
            depth, i = max(0, depth - 1), i + 1
        elif _WORD_START.match(ch):
            match = _WORD.match(sql, i)
            assert match is not None
            yield Word(match.group().upper(), i, match.end(), depth)
            i = match.end()
        else:
            i += 1


def _skip_quoted(sql: str, i: int, quote: str) -> int:
    i += 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
        elif sql[i] == quote:
            if sql.startswith(quote * 2, i):
                i += 2
                continue
            return i + 1
        else:
            i += 1
    return i


def first_keyword(sql: str) -> str:
    return next((w.upper for w in scan_words(sql)), "")


def output_format(sql: str) -> str | None:
    """The format named by the statement's own top-level FORMAT clause, if it has one."""
    found, previous = None, None
    for word in scan_words(sql):
        if word.depth == 0 and previous is not None and previous.upper == "FORMAT":
            found = sql[word.start : word.end]
        previous = word if word.depth == 0 else previous
    return found


@dataclass(frozen=True)
class InsertWithData:
    """`INSERT INTO target [SETTINGS ...] FORMAT fmt` followed by data: the parts needed to rewrite it as
    `INSERT INTO target FROM INFILE ... FORMAT fmt` and where its data starts."""

    target: str
    settings: str
    fmt: str
    data_offset: int

    def from_infile(self, path: str) -> str:
        settings = f" {self.settings}" if self.settings else ""
        return f"{self.target} FROM INFILE {quote_literal(path)}{settings} FORMAT {self.fmt}"


def find_insert_data(payload: bytes) -> InsertWithData | None:
    """Recognise an INSERT whose data follows its FORMAT clause; None for any other statement, including
    INSERT ... VALUES and INSERT ... SELECT, which run as they are."""
    text = payload.decode("latin-1")  # one char per byte, so offsets index the payload
    words = scan_words(text)
    first = next(words, None)
    if first is None or first.upper != "INSERT":
        return None
    settings_at = None
    for word in words:
        if word.depth:
            continue
        if word.upper in ("VALUES", "SELECT", "WITH", "FROM"):
            return None
        if word.upper == "SETTINGS" and settings_at is None:
            settings_at = word.start
        if word.upper == "FORMAT":
            fmt = next(words, None)
            if fmt is None or fmt.depth:
                return None
            head_end = settings_at if settings_at is not None else word.start
            return InsertWithData(
                target=_utf8(payload[first.start : head_end]).strip(),
                settings=_utf8(payload[head_end : word.start]).strip() if settings_at is not None else "",
                fmt=text[fmt.start : fmt.end],
                data_offset=data_start(payload, fmt.end),
            )
    return None


def data_start(payload: bytes, after_format: int) -> int:
    """ClickHouse's rule: insert data starts after the first newline past the format name, or after the
    whitespace that follows it when there is no newline."""
    i = after_format
    while i < len(payload) and payload[i] in b" \t\r\n":
        if payload[i] == ord("\n"):
            return i + 1
        i += 1
    if i < len(payload) and payload[i] == ord(";"):
        return len(payload)
    return i


def compose_query(query_param: str | None, body: bytes) -> bytes:
    """ClickHouse runs the `query` URL parameter followed by the request body, joined by a newline."""
    if not query_param:
        return body
    if not body:
        return query_param.encode()
    return query_param.encode() + b"\n" + body


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The plain fields of a multipart/form-data body (query, param_*); external data files are refused."""
    message = BytesParser(policy=email_policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise BadRequest("multipart/form-data body could not be parsed")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise BadRequest("a multipart field has no name")
        if part.get_filename() is not None:
            raise BadRequest(f"external data ({name!r}) is not supported by the embedded server")
        payload = part.get_payload(decode=True)
        fields[name] = payload.decode("utf-8") if isinstance(payload, bytes) else str(part.get_payload())
    return fields


def split_params(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split URL parameters into (query parameters for `{name:Type}`, settings for this query)."""
    bound, settings = {}, {}
    for key, value in params.items():
        if key.startswith("param_"):
            bound[key[len("param_") :]] = value
        elif key not in TRANSPORT_PARAMS:
            settings[key] = value
    return bound, settings


def quote_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as ex:
        raise BadRequest(f"the query text is not valid UTF-8 at byte {ex.start}") from ex


# ---- Body encodings ------------------------------------------------------------------------------------


def decode_body(body: bytes, encoding: str | None) -> bytes:
    """Undo a request's Content-Encoding (clickhouse-connect compresses insert bodies, block by block)."""
    encoding = (encoding or "identity").strip().lower()
    try:
        if encoding == "identity":
            return body
        if encoding == "lz4":
            return _lz4_frames(body)
        if encoding == "zstd":
            return zstd.decompress(body)
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except Exception as ex:
        raise BadRequest(f"cannot decode the {encoding} request body: {ex}") from ex
    raise BadRequest(f"unsupported Content-Encoding {encoding!r}; use lz4, zstd, gzip or deflate")


def _lz4_frames(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        out.append(decompressor.decompress(rest))
        if not decompressor.eof:
            raise ValueError("truncated lz4 frame")
        rest = decompressor.unused_data
    return b"".join(out)


def encode_response(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress a response the way the client accepts, as a server does with enable_http_compression=1."""
    offered = [e.split(";")[0].strip().lower() for e in (accept_encoding or "").split(",")]
    for encoding in offered:
        if encoding == "lz4":
            return lz4.frame.compress(body), encoding
        if encoding == "zstd":
            return zstd.compress(body), encoding
        if encoding == "gzip":
            return gzip.compress(body, compresslevel=3), encoding
        if encoding == "deflate":
            return zlib.compress(body, 3), encoding
    return body, None


def content_type(fmt: str) -> str:
    name = fmt.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


# ---- The engine: the one chDB instance, its connection handles and their session state ----------------


@dataclass
class _Handle:
    conn: Any
    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    expires_at: float = 0.0


@dataclass(frozen=True)
class EngineRequest:
    sql: str
    fmt: str
    params: dict[str, str]
    settings: dict[str, str]
    database: str | None
    session_id: str | None = None
    session_timeout: float = 60.0


@dataclass(frozen=True)
class EngineResult:
    body: bytes
    summary: dict[str, str]
    result_rows: int


class ChdbEngine:
    """Runs statements on chDB, one at a time. Each HTTP session gets its own chDB handle (SET and USE are
    handle state); sessionless requests share one handle whose settings are reconciled per request."""

    def __init__(self, path: Path, max_sessions: int = 256) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = os.path.realpath(path)
        self._lock = threading.Lock()
        self._max_sessions = max_sessions
        self._shared = _Handle(self._connect())
        self._sessions: OrderedDict[str, _Handle] = OrderedDict()
        self._closed = False
        version, timezone = self._shared.conn.query("SELECT version(), timezone()", "TSV").bytes().split(b"\t")
        self.version, self.timezone = version.decode(), timezone.decode().strip()

    def _connect(self) -> Any:
        return chdb.connect(self._path)  # type: ignore[no-untyped-call]

    def execute(self, request: EngineRequest) -> EngineResult:
        kind = first_keyword(request.sql)
        with self._lock:
            if self._closed:
                raise SHUTTING_DOWN
            self._expire_sessions()
            ephemeral = request.session_id is None and kind in ("SET", "USE")
            handle = _Handle(self._connect()) if ephemeral else self._handle_for(request)
            try:
                self._prepare(handle, request)
                result = self._query(handle, request.sql, request.fmt, request.params)
            finally:
                if ephemeral:
                    handle.conn.close()
            if kind == "USE":
                handle.database = None
        return EngineResult(result.bytes() or b"", _summary(result), _result_rows(result))

    def _handle_for(self, request: EngineRequest) -> _Handle:
        if request.session_id is None:
            return self._shared
        handle = self._sessions.pop(request.session_id, None) or _Handle(self._connect())
        handle.expires_at = time.monotonic() + request.session_timeout
        self._sessions[request.session_id] = handle
        while len(self._sessions) > self._max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            oldest.conn.close()
        return handle

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for session_id in [s for s, h in self._sessions.items() if h.expires_at < now]:
            self._sessions.pop(session_id).conn.close()

    def _prepare(self, handle: _Handle, request: EngineRequest) -> None:
        database = request.database or (None if request.session_id else "default")
        if database and database != handle.database:
            self._query(handle, f"USE {quote_identifier(database)}", "TSV", {})
            handle.database = database
        for name in [n for n in handle.settings if n not in request.settings]:
            self._query(handle, f"SET {name} = DEFAULT", "TSV", {})
            del handle.settings[name]
        for name, value in request.settings.items():
            if handle.settings.get(name) == value:
                continue
            if not _SETTING_NAME.match(name):
                raise BadRequest(f"{name!r} is not a setting name")
            self._query(handle, f"SET {name} = {quote_literal(value)}", "TSV", {})
            handle.settings[name] = value

    @staticmethod
    def _query(handle: _Handle, sql: str, fmt: str, params: dict[str, str]) -> Any:
        try:
            return handle.conn.query(sql, fmt, params=params)
        except Exception as ex:
            raise ClickHouseError.from_engine(ex) from ex

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for handle in [*self._sessions.values(), self._shared]:
                handle.conn.close()
            self._sessions.clear()


def _summary(result: Any) -> dict[str, str]:
    return {
        "read_rows": str(result.storage_rows_read()),
        "read_bytes": str(result.storage_bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "total_rows_to_read": str(result.storage_rows_read()),
        "result_rows": str(result.rows_read()),
        "result_bytes": str(result.bytes_read()),
        "elapsed_ns": str(int(result.elapsed() * 1e9)),
    }


def _result_rows(result: Any) -> int:
    return int(result.rows_written() or result.rows_read())


EMPTY_SUMMARY = dict.fromkeys(
    (
        "read_rows",
        "read_bytes",
        "written_rows",
        "written_bytes",
        "total_rows_to_read",
        "result_rows",
        "result_bytes",
        "elapsed_ns",
    ),
    "0",
)


# ---- HTTP -----------------------------------------------------------------------------------------------


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: ChdbEngine, tmp_dir: str | None = None) -> None:
        super().__init__(address, ClickHouseRequestHandler)
        self.engine = engine
        self.tmp_dir = tmp_dir
        self.display_name = socket.gethostname()
        self.draining = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def begin_request(self) -> None:
        with self._idle:
            self._in_flight += 1

    def end_request(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]


class ClickHouseRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "switchyard-chdb"
    timeout = 120  # idle keep-alive connections give their thread back
    server: ClickHouseHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle holds the body for the client's
        # delayed ACK and every request takes ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        self.server.begin_request()
        query_id = ""
        started = time.perf_counter()
        try:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            query_id = params.get("query_id") or str(uuid.uuid4())
            reply, rows = self._dispatch(url.path, params, query_id)
        except BadRequest as ex:
            reply, rows = self._error_reply(400, 0, "BAD_REQUEST_PARAMETER", str(ex), query_id), 0
        except ClickHouseError as ex:
            status = HTTP_STATUS_BY_CODE.get(ex.code, 500)
            reply, rows = self._error_reply(status, ex.code, ex.name, ex.message, query_id), 0
        except Exception as ex:  # a bad request must never take the server down
            log.exception("request failed", extra={"query_id": query_id})
            reply, rows = self._error_reply(500, 1001, "STD_EXCEPTION", repr(ex), query_id), 0
        try:
            self._send(reply)
        finally:
            self.server.end_request()
        if query_id and "X-ClickHouse-Query-Id" in reply.headers:
            level = logging.INFO if reply.status < 400 else logging.WARNING
            fields = {"query_id": query_id, "elapsed_ms": round((time.perf_counter() - started) * 1000, 3)}
            log.log(level, "query" if reply.status < 400 else "query failed", extra={**fields, "rows": rows})

    def _dispatch(self, path: str, params: dict[str, str], query_id: str) -> tuple[_Reply, int]:
        if self.server.draining:
            self.close_connection = True
            raise SHUTTING_DOWN
        if path in ("/ping", "/replicas_status"):
            return _Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}), 0
        if path != "/":
            return _Reply(404, f"There is no handle {path}\n".encode(), {"Content-Type": "text/plain"}), 0
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise BadRequest(
                "compress=1/decompress=1 (ClickHouse's native block compression) is not supported by the "
                "embedded server; use Content-Encoding / Accept-Encoding instead"
            )
        body = decode_body(self._read_body(), self.headers.get("Content-Encoding"))
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            # clickhouse-connect sends the query and bound parameters as form fields when they are large
            params = {**params, **form_fields(content_type, body)}
            body = b""
        payload = compose_query(params.get("query"), body)
        if not payload.strip():
            if self.command in ("GET", "HEAD"):
                return _Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}), 0
            raise ClickHouseError(62, "SYNTAX_ERROR", "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
        return self._run(payload, params, query_id)

    def _run(self, payload: bytes, params: dict[str, str], query_id: str) -> tuple[_Reply, int]:
        bound, settings = split_params(params)
        default_fmt = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or HTTP_DEFAULT_FORMAT
        session_id = params.get("session_id") or None
        timeout = float(params.get("session_timeout") or 60)
        insert = find_insert_data(payload)
        tmp_path = None
        try:
            if insert is not None:
                tmp_path = self._spool(payload[insert.data_offset :])
                sql = insert.from_infile(tmp_path)
            else:
                sql = _utf8(payload)
            request = EngineRequest(sql, default_fmt, bound, settings, params.get("database"), session_id, timeout)
            result = self.server.engine.execute(request)
        finally:
            if tmp_path:
                os.unlink(tmp_path)
        headers = self._base_headers(query_id, result.summary)
        if insert is None and first_keyword(sql) in RESULT_STATEMENTS:
            fmt = output_format(sql) or default_fmt
            headers.update({"X-ClickHouse-Format": fmt, "Content-Type": content_type(fmt)})
        body = result.body
        if params.get("enable_http_compression") == "1" and body:
            body, encoding = encode_response(body, self.headers.get("Accept-Encoding"))
            if encoding:
                headers["Content-Encoding"] = encoding
        return _Reply(200, body, headers), result.result_rows

    def _spool(self, data: bytes) -> str:
        with tempfile.NamedTemporaryFile(
            prefix="switchyard-insert-", suffix=".data", dir=self.server.tmp_dir, delete=False
        ) as tmp:
            tmp.write(data)
        return tmp.name

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError as ex:
            raise BadRequest(f"invalid Content-Length {length!r}") from ex
        if size < 0 or size > MAX_BODY_BYTES:
            raise BadRequest(f"request body of {size} bytes is over the {MAX_BODY_BYTES} byte limit")
        return self.rfile.read(size)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError as ex:
                self.close_connection = True
                raise BadRequest(f"malformed chunk size line {line[:40]!r}") from ex
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                raise BadRequest(f"request body is over the {MAX_BODY_BYTES} byte limit")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _base_headers(self, query_id: str, summary: dict[str, str]) -> dict[str, str]:
        return {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
        }

    def _error_reply(self, status: int, code: int, name: str, message: str, query_id: str) -> _Reply:
        if not message.startswith("Code: "):
            message = f"Code: {code}. DB::Exception: {message}. ({name})"
        headers = self._base_headers(query_id, EMPTY_SUMMARY)
        headers["X-ClickHouse-Exception-Code"] = str(code)
        return _Reply(status, f"{message} (version {self.server.engine.version})\n".encode(), headers)

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection or self.server.draining:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP (bad request line or headers) is answered in ClickHouse's error shape."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line; answer with a status line anyway
            self.request_version = "HTTP/1.0"
        text = f"Code: 0. DB::Exception: {message or HTTPStatus(code).phrase}. (BAD_REQUEST)\n".encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(text)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(text)
        except OSError:
            pass


# ---- Process: logging, signals, main ---------------------------------------------------------------------


class JsonLineFormatter(logging.Formatter):
    FIELDS = ("query_id", "elapsed_ms", "rows")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


def require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(
            f"refusing to bind {host}: the embedded ClickHouse has no authentication, so it serves loopback "
            "only; use a real ClickHouse server (SWITCHYARD_CLICKHOUSE_URL) for remote clients"
        )


def serve(path: Path, host: str, port: int, grace_s: float, tmp_dir: str | None = None) -> int:
    require_loopback(host)
    try:
        engine = ChdbEngine(path)
    except RuntimeError as ex:
        log.error("cannot open the chDB path %s: %s", path, ex)
        return 1
    server = ClickHouseHTTPServer((host, port), engine, tmp_dir)

    def stop(signum: int, _frame: object) -> None:
        log.info("%s received: draining", signal.Signals(signum).name)
        server.draining = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bound_host, bound_port = server.server_address[:2]
    log.info("listening on http://%s:%s (chDB %s, path %s)", bound_host, bound_port, engine.version, path)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if not server.wait_idle(grace_s):
            log.warning("in-flight queries did not finish within %ss", grace_s)
        engine.close()
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.infra.clickhouse_http", description=__doc__)
    parser.add_argument("--path", type=Path, required=True, help="chDB data directory this process owns")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8123, help="port (0 picks a free one)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to let in-flight queries finish")
    parser.add_argument("--tmp-dir", default=None, help="where insert data is spooled (default: system temp)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return serve(args.path, args.host, args.port, args.grace, args.tmp_dir)


if __name__ == "__main__":
    sys.exit(main())
