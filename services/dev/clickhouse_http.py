"""The embedded ClickHouse: one process owns the chDB data path and serves the query part of ClickHouse's
HTTP interface on loopback, so clickhouse-connect, curl and other tools work as against a real server.

Run: python -m services.dev.clickhouse_http --path DIR [--host 127.0.0.1] [--port 8123] (--help: the locks)

chDB locks its data path to one process, so every other Switchyard process talks HTTP to this one. Its locks,
each as ClickHouse has it where ClickHouse has one: a user and password (Basic auth, X-ClickHouse-User/-Key or
user/password parameters), GET read-only, one statement a request, no host files or network from SQL (file(),
url(), INTO OUTFILE, ENGINE = File, ...), only loopback Host names and no web page's Origin, max_execution_time,
and caps on the body before and after decompression. Plain HTTP, so it binds loopback only.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hmac
import ipaddress
import itertools
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
from collections.abc import Callable, Iterable, Iterator, Mapping
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

from services.settings import get_settings, read_secret

log = logging.getLogger("switchyard.clickhouse_http")

HTTP_DEFAULT_FORMAT = "TabSeparated"

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
    497: 403,  # ACCESS_DENIED: here also a foreign Host or Origin, or SQL reaching the host
    516: 401,  # AUTHENTICATION_FAILED: ClickHouse answers 403; 401 is HTTP's "who are you"
    229: 413,  # QUERY_IS_TOO_LARGE: here also a body over the limits
    159: 408,  # TIMEOUT_EXCEEDED: max_execution_time
}  # READONLY (164) and SETTING_CONSTRAINT_VIOLATION (452) stay 500, as ClickHouse answers them

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
_WORD_START = re.compile(r"[A-Za-z_]")
_WORD = re.compile(r"[A-Za-z0-9_$]+")  # ClickHouse allows `$` inside a name
_HEREDOC = re.compile(r"\$[A-Za-z0-9_]*\$")
_COMMENT_MARKER = re.compile(r"/\*|\*/")
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&\s]*")


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
    """A bare word outside strings, quoted identifiers and comments; with `quoted`, also a `quoted` or "quoted"
    identifier, whose `upper` is its unquoted text (escape sequences left as written)."""

    upper: str
    start: int
    end: int
    depth: int
    quoted: bool = False


def scan_words(sql: str, *, quoted: bool = False) -> Iterator[Word]:
    """Yield the words of `sql` lazily, so a caller can stop before the data of an INSERT. The lexing follows
    ClickHouse's: nested /* */ comments, $tag$ heredoc strings, `$` inside names, any non-ASCII character
    outside a literal skipped as whitespace (ClickHouse allows none in a bare name)."""
    return (token for token in _tokens(sql) if token.upper != ";" and (quoted or not token.quoted))


def _tokens(sql: str) -> Iterator[Word]:
    """Words, quoted identifiers (quoted=True) and statement-ending semicolons (upper ';')."""
    i, depth, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            i = _skip_quoted(sql, i, ch)
        elif ch in '"`':
            end = _skip_quoted(sql, i, ch)
            name = sql[i + 1 : end - 1].replace(ch * 2, ch)
            yield Word(name.upper(), i, end, depth, quoted=True)
            i = end
        elif sql.startswith("--", i) or ch == "#":
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif ch == "$":
            i = _skip_heredoc(sql, i)
        elif ch == "(":
            depth, i = depth + 1, i + 1
        elif ch == ")":
            depth, i = max(0, depth - 1), i + 1
        elif ch == ";":
            yield Word(";", i, i + 1, depth)
            i += 1
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
    return min(i, len(sql))


def _skip_block_comment(sql: str, i: int) -> int:
    """ClickHouse nests block comments: /* a /* b */ c */ is one comment."""
    nesting, i = 0, i
    for marker in _COMMENT_MARKER.finditer(sql, i):
        nesting += 1 if marker.group() == "/*" else -1
        if nesting == 0:
            return marker.end()
    return len(sql)


def _skip_heredoc(sql: str, i: int) -> int:
    """$tag$ ... $tag$ is a string literal; a `$` that opens none is skipped like any other punctuation."""
    opener = _HEREDOC.match(sql, i)
    if opener is None:
        return i + 1
    close = sql.find(opener.group(), opener.end())
    return len(sql) if close < 0 else close + len(opener.group())


def _next_significant(sql: str, i: int) -> int:
    """The offset of the first character at or after `i` that is not whitespace, a comment or non-ASCII."""
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace() or not ch.isascii():
            i += 1
        elif sql.startswith("--", i) or ch == "#":
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        else:
            return i
    return n


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


# ---- Locks: who may ask, from where, what a statement may reach, and how much a request may cost --------------

# What a GET (or HEAD) may run: ClickHouse makes GET read-only (readonly=2).
READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "FROM"})
# Words that lead a write, looked for where a statement follows a WITH clause or EXPLAIN's options.
WRITE_KEYWORDS = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "EXCHANGE", "ATTACH",
        "DETACH", "UNDROP", "OPTIMIZE", "SYSTEM", "KILL", "GRANT", "REVOKE", "SET", "USE", "BACKUP", "RESTORE",
        "MOVE", "CHECK", "BEGIN", "COMMIT", "ROLLBACK",
    }
)  # fmt: skip

# Table functions and table or database engines that stay inside the chDB data path. Every other name in chDB's
# catalogs (file, url, s3, hdfs, remote, mysql, postgresql, jdbc, odbc, executable, python, input, Kafka, ...)
# reaches the host or the network and is refused unless the server runs with --allow-external-access.
LOCAL_SOURCES = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generaterandom", "generateseries",
        "generate_series", "null", "view", "viewifpermitted", "viewexplain", "merge", "format", "primes", "loop",
        "dictionary", "sqlstandardvalues", "mergetreeindex", "mergetreeprojection", "mergetreeanalyzeindexes",
        "mergetreeanalyzeindexesuuid", "mergetreecodecblockcounts", "mergetreetextindex", "fuzzjson", "fuzzquery",
        "timeseries", "timeseriesdata", "timeseriestags", "timeseriesmetrics", "timeseriesmetricfamilies",
        "timeseriessamples", "timeseriesselector", "memory", "log", "tinylog", "stripelog", "set", "join",
        "buffer", "materializedview", "alias", "atomic", "ordinary",
    }
)  # fmt: skip
# Host or network access no catalog lists: dictionary sources, dynamic disks, a model file read by path.
HOST_ACCESS_EXTRA = frozenset(
    {"disk", "http", "https", "executable_pool", "cassandra", "clickhouse", "yamlregexptree", "catboostevaluate"}
)
# Settings that name a file on the host to read or write.
HOST_ACCESS_SETTINGS = frozenset(
    {
        "format_schema", "format_template_resultset", "format_template_row", "output_format_schema",
        "input_format_record_errors_file_path", "rename_files_after_processing",
    }
)  # fmt: skip
LOOPBACK_NAMES = frozenset({"localhost"})
FETCH_SITES_ALLOWED = frozenset({"none", "same-origin"})  # typed into the address bar, or the server's own page
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?(?![A-Za-z0-9_.$])")


@dataclass(frozen=True)
class Credentials:
    """The one user the server knows; an empty password only with --allow-no-password."""

    user: str
    password: str = field(repr=False)

    def match(self, user: str, password: str) -> bool:
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        return hmac.compare_digest(password.encode(), self.password.encode()) and same_user


@dataclass(frozen=True)
class AccessPolicy:
    """What the server lets in; each field is a command-line option of main()."""

    credentials: Credentials
    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()
    external_access: bool = False
    max_execution_time_s: float = 60.0
    max_body_bytes: int = 64 << 20
    max_decompressed_bytes: int = 256 << 20


def host_access_names(catalog: Iterable[str]) -> frozenset[str]:
    """The lower-case names refused as host or network access, from chDB's own catalogs of table functions and
    table and database engines (every name that is not a local source) and the names no catalog lists."""
    names = {name.lower() for name in catalog}
    local = {n for n in names if n in LOCAL_SOURCES or (n.endswith("mergetree") and not n.startswith("replicated"))}
    return frozenset(names - local) | HOST_ACCESS_EXTRA


def is_read_statement(sql: str) -> bool:
    """True for what a GET may run: SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN of a read, WITH ... SELECT."""
    words = scan_words(sql)
    first = next(words, None)
    if first is None or first.upper not in READ_STATEMENTS:
        return False
    top = (w for w in words if w.depth == 0)
    if first.upper == "WITH":
        return next((w.upper for w in top if w.upper == "SELECT" or w.upper in WRITE_KEYWORDS), None) == "SELECT"
    if first.upper == "EXPLAIN":  # what it explains follows its options: EXPLAIN PLAN indexes = 1 SELECT ...
        explained = next((w for w in top if w.upper in READ_STATEMENTS or w.upper in WRITE_KEYWORDS), None)
        return explained is not None and explained.upper != "EXPLAIN" and is_read_statement(sql[explained.start :])
    return True


def has_second_statement(sql: str) -> bool:
    """True when anything but whitespace and comments follows a `;` (chDB would run it: multi-statements)."""
    return any(t.upper == ";" and _next_significant(sql, t.end) < len(sql) for t in _tokens(sql))


def host_access(sql: str, names: frozenset[str]) -> str | None:
    """What in `sql` would reach the host or the network, or None: INTO OUTFILE, FROM INFILE, ATTACH ... FROM a
    path, a refused table function or engine (any case, quoted, comments before its parenthesis), a setting
    naming a host file, or a quoted name with escape sequences (which could spell any of these)."""
    previous: Word | None = None
    leading = ""
    for word in scan_words(sql, quoted=True):
        leading = leading or word.upper
        before = previous.upper if previous else ""
        name = word.upper.lower()
        if word.quoted and "\\" in word.upper:
            return f"the quoted name {sql[word.start : word.end]} with an escape sequence"
        if (before, word.upper) in (("INTO", "OUTFILE"), ("FROM", "INFILE")):
            return f"{before} {word.upper}"
        if leading == "ATTACH" and word.upper == "FROM" and word.depth == 0:
            return "ATTACH ... FROM a path"
        if name in HOST_ACCESS_SETTINGS:
            return f"the setting {name}"
        if name in names and (_next_is(sql, word.end, "(") or _is_engine_name(sql, previous, word)):
            return sql[word.start : word.end]
        previous = word
    return None


def stops_the_server(sql: str) -> bool:
    """SYSTEM SHUTDOWN and SYSTEM KILL: in chDB the query never returns and holds the engine for good."""
    words = scan_words(sql)
    return [w.upper for w in itertools.islice(words, 2)] in (["SYSTEM", "SHUTDOWN"], ["SYSTEM", "KILL"])


def raises_cap(sql: str, name: str, cap: float) -> bool:
    """True when `sql` assigns `name` (SET, SETTINGS) anything but a number in (0, cap]: DEFAULT and 0 (no limit)
    would lift the server's cap."""
    for word in scan_words(sql, quoted=True):
        if word.upper.lower() != name or not _next_is(sql, word.end, "="):
            continue
        value = _NUMBER.match(sql, _next_significant(sql, _next_significant(sql, word.end) + 1))
        if value is None or not 0 < float(value.group()) <= cap:
            return True
    return False


def setting_within_cap(value: str, cap: float) -> bool:
    return _NUMBER.fullmatch(value.strip()) is not None and 0 < float(value) <= cap


def cap_violation(name: str, cap: float) -> ClickHouseError:
    return ClickHouseError(
        452,
        "SETTING_CONSTRAINT_VIOLATION",
        f"Code: 452. DB::Exception: Setting {name} shouldn't be greater than {cap:g}, 0 (no limit) or DEFAULT. "
        "(SETTING_CONSTRAINT_VIOLATION)",
    )


def _next_is(sql: str, end: int, char: str) -> bool:
    at = _next_significant(sql, end)
    return at < len(sql) and sql[at] == char


def _is_engine_name(sql: str, previous: Word | None, word: Word) -> bool:
    """True when `word` is the name in `ENGINE [=] name` (engines such as Kafka need no parenthesis)."""
    if previous is None or previous.upper != "ENGINE":
        return False
    at = _next_significant(sql, previous.end)
    if at < len(sql) and sql[at] == "=":
        at = _next_significant(sql, at + 1)
    return at == word.start


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """A Host header naming loopback (localhost, 127.0.0.0/8, [::1]) or an allowed name; none (no browser
    omits it) passes. A page on a rebound DNS name reaches a loopback server with its own name as Host."""
    if host_header is None:
        return True
    host = _host_name(host_header)
    if host is None:
        return False
    if host in LOOPBACK_NAMES or host in allowed:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str | None:
    value = value.strip().lower()
    if value.startswith("["):
        close = value.find("]")
        port = value[close + 1 :] if close > 0 else ""
        valid = close > 0 and (not port or (port[0] == ":" and port[1:].isdigit()))
        return value[1:close] if valid else None
    name, colon, port = value.partition(":")
    return name if name and (not colon or port.isdigit()) else None


def origin_allowed(origin: str | None, fetch_site: str | None, allowed: frozenset[str]) -> bool:
    """A browser's request from a web page carries Origin (POST, fetch) or Sec-Fetch-Site (any request, even an
    <img>): only allowed origins, the address bar and tools without either pass."""
    if origin is not None:
        return origin.strip().lower().rstrip("/") in allowed
    return fetch_site is None or fetch_site.strip().lower() in FETCH_SITES_ALLOWED


def request_credentials(
    x_user: str | None, x_key: str | None, authorization: str | None, params: Mapping[str, str]
) -> tuple[str, str]:
    """(user, password) as ClickHouse reads them: X-ClickHouse-User/-Key headers, else HTTP Basic auth, else the
    user/password URL parameters (user `default`, empty password when absent). Two ways at once are refused."""
    in_params = "user" in params or "password" in params
    if x_user or x_key:
        if authorization or in_params:
            raise _auth_failed("it is not allowed to use X-ClickHouse HTTP headers and another way at once")
        return _named(x_user or "", "X-ClickHouse HTTP headers"), x_key or ""
    if authorization:
        if in_params:
            raise _auth_failed("it is not allowed to use Authorization HTTP header and parameters at once")
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            raise _auth_failed(f"'{scheme}' HTTP Authorization scheme is not supported")
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError) as ex:
            raise _auth_failed("the Basic credentials are not valid base64 of UTF-8") from ex
        return _named(user, "Authorization HTTP header"), password
    return _named(params.get("user", "default"), "authentication via parameters"), params.get("password", "")


def _named(user: str, method: str) -> str:
    if not user:
        raise _auth_failed(f"Got an empty user name from {method}")
    return user


def _auth_failed(reason: str) -> ClickHouseError:
    message = f"Code: 516. DB::Exception: Invalid authentication: {reason}. (AUTHENTICATION_FAILED)"
    return ClickHouseError(516, "AUTHENTICATION_FAILED", message)


def authentication_failed(user: str) -> ClickHouseError:
    return ClickHouseError(
        516,
        "AUTHENTICATION_FAILED",
        f"Code: 516. DB::Exception: {user[:64]}: Authentication failed: password is incorrect, or there is no user "
        "with such name. (AUTHENTICATION_FAILED)",
    )


def access_denied(reason: str) -> ClickHouseError:
    return ClickHouseError(497, "ACCESS_DENIED", f"Code: 497. DB::Exception: {reason}. (ACCESS_DENIED)")


def too_large(what: str, limit: int, option: str) -> ClickHouseError:
    return ClickHouseError(
        229,
        "QUERY_IS_TOO_LARGE",
        f"Code: 229. DB::Exception: {what} is over the server's limit of {limit} bytes ({option}). "
        "(QUERY_IS_TOO_LARGE)",
    )


READ_ONLY_GET = ClickHouseError(
    164,
    "READONLY",
    "Code: 164. DB::Exception: Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
    "readonly. You should use method POST for modifying queries. (READONLY)",
)
MULTI_STATEMENTS = ClickHouseError(
    62, "SYNTAX_ERROR", "Code: 62. DB::Exception: Syntax error: Multi-statements are not allowed. (SYNTAX_ERROR)"
)


# ---- Body encodings ------------------------------------------------------------------------------------


def decode_body(body: bytes, encoding: str | None, limit: int = 256 << 20) -> bytes:
    """Undo a request's Content-Encoding (clickhouse-connect compresses insert bodies, block by block), never
    producing more than `limit` bytes: a small bomb is refused when its output passes the limit, not after."""
    encoding = (encoding or "identity").strip().lower()
    decompressors: dict[str, Callable[[], Any]] = {
        "lz4": lz4.frame.LZ4FrameDecompressor,
        "zstd": zstd.ZstdDecompressor,
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "x-gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "deflate": zlib.decompressobj,
    }
    if encoding == "identity":
        return body
    if encoding not in decompressors:
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}; use lz4, zstd, gzip or deflate")
    try:
        return inflate(body, decompressors[encoding], limit)
    except ClickHouseError:
        raise
    except Exception as ex:
        raise BadRequest(f"cannot decode the {encoding} request body: {ex}") from ex


def inflate(body: bytes, start: Callable[[], Any], limit: int) -> bytes:
    """Decompress one frame after another (gzip members, zstd and lz4 frames), asking each decompressor for no
    more than what is left under `limit`. `start` makes a zlib, lz4.frame or zstd decompressor."""
    out, rest = bytearray(), body
    while rest:
        decompressor, pending = start(), rest
        while not decompressor.eof:
            out += decompressor.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise too_large("the decompressed request body", limit, "--max-decompressed-bytes")
            pending = getattr(decompressor, "unconsumed_tail", b"")  # zlib hands back what it did not read
            if not decompressor.eof and getattr(decompressor, "needs_input", not pending):
                raise ValueError("the compressed stream is truncated")
        rest = decompressor.unused_data
    return bytes(out)


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
    read_only: bool = False


@dataclass(frozen=True)
class EngineResult:
    body: bytes
    summary: dict[str, str]
    result_rows: int


class ChdbEngine:
    """Runs statements on chDB, one at a time. Each HTTP session gets its own chDB handle (SET and USE are
    handle state); sessionless requests share one handle whose settings are reconciled per request, and
    sessionless reads (GET) another one, made read-only (readonly=2) once at start."""

    def __init__(self, path: Path, max_sessions: int = 256, external_access: bool = False) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = os.path.realpath(path)
        self._lock = threading.Lock()
        self._max_sessions = max_sessions
        self._shared = _Handle(self._connect())
        if not external_access:
            self._default_without_files()
        self._read_only = _Handle(self._connect())
        self._query(self._read_only, "SET readonly = 2", "TSV", {})
        self._sessions: OrderedDict[str, _Handle] = OrderedDict()
        self._closed = False
        version, timezone = self._shared.conn.query("SELECT version(), timezone()", "TSV").bytes().split(b"\t")
        self.version, self.timezone = version.decode(), timezone.decode().strip()
        self.host_access_names = host_access_names(self._catalog())

    def _connect(self) -> Any:
        return chdb.connect(self._path)  # type: ignore[no-untyped-call]

    def _default_without_files(self) -> None:
        """chDB's `default` database overlays a Filesystem database on the Atomic one, so a table name it does not
        know there is read as a file path: SELECT * FROM '/etc/passwd', or `hostname` from the working directory.
        Attach the Atomic database alone (same UUID, so its tables stay); chDB restores the overlay on each start."""
        found = self._query(self._shared, "SELECT engine, uuid FROM system.databases WHERE name = 'default'", "TSV", {})
        engine, _, uuid = (found.bytes() or b"").decode().strip().partition("\t")
        if engine == "Atomic":
            return
        if engine != "Overlay" or not re.fullmatch(r"[0-9a-f-]{36}", uuid):
            raise RuntimeError(f"chDB's default database is {engine or 'missing'}, not the expected Overlay")
        self._query(self._shared, "DETACH DATABASE default", "TSV", {})
        self._query(self._shared, f"ATTACH DATABASE default UUID '{uuid}' ENGINE = Atomic", "TSV", {})

    def definitions_reaching_out(self) -> list[str]:
        """Tables, views and dictionaries whose definition reaches the host or the network: made before the
        locks, or under --allow-external-access. The locks refuse new ones; these still work, so they are named."""
        sql = (
            "SELECT concat(database, '.', name), create_table_query FROM system.tables "
            "WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema')"
        )
        with self._lock:
            rows = json.loads(self._query(self._shared, sql, "JSONCompact", {}).bytes() or b'{"data": []}')["data"]
        return [name for name, definition in rows if host_access(definition, self.host_access_names)]

    def _catalog(self) -> list[str]:
        sql = (
            "SELECT name FROM system.table_functions UNION ALL SELECT name FROM system.table_engines "
            "UNION ALL SELECT name FROM system.database_engines"
        )
        return (self._query(self._shared, sql, "TSV", {}).bytes() or b"").decode().split()

    def execute(self, request: EngineRequest) -> EngineResult:
        kind = first_keyword(request.sql)
        with self._lock:
            if self._closed:
                raise SHUTTING_DOWN
            self._expire_sessions()
            # SET and USE must not change the shared handle; nor may `readonly`, which no later request could undo
            ephemeral = request.session_id is None and (kind in ("SET", "USE") or "readonly" in request.settings)
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
            return self._read_only if request.read_only else self._shared
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
            for handle in [*self._sessions.values(), self._shared, self._read_only]:
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

    def __init__(
        self, address: tuple[str, int], engine: ChdbEngine, policy: AccessPolicy, tmp_dir: str | None = None
    ) -> None:
        super().__init__(address, ClickHouseRequestHandler)
        self.engine = engine
        self.policy = policy
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
        self._body_read = False
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
        if reply.status >= 400 and self._has_body() and not self._body_read:
            self.close_connection = True  # the unread body would be taken for the next request
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
        self._check_caller()
        if path in ("/ping", "/replicas_status"):
            return _Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}), 0
        if path != "/":
            return _Reply(404, f"There is no handle {path}\n".encode(), {"Content-Type": "text/plain"}), 0
        if self._read_only and "query" not in params and not self._has_body():
            return _Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}), 0
        self._authenticate(params)
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise BadRequest(
                "compress=1/decompress=1 (ClickHouse's native block compression) is not supported by the "
                "embedded server; use Content-Encoding / Accept-Encoding instead"
            )
        limit = self.server.policy.max_decompressed_bytes
        body = decode_body(self._read_body(), self.headers.get("Content-Encoding"), limit)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            # clickhouse-connect sends the query and bound parameters as form fields when they are large
            params = {**params, **form_fields(content_type, body)}
            body = b""
        payload = compose_query(params.get("query"), body)
        if not payload.strip():
            if self._read_only:
                return _Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}), 0
            raise ClickHouseError(62, "SYNTAX_ERROR", "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
        return self._run(payload, params, query_id)

    @property
    def _read_only(self) -> bool:
        return self.command in ("GET", "HEAD")

    def _check_caller(self) -> None:
        """Host and Origin: what a web page the operator opens (DNS rebinding, cross-site requests) cannot fake."""
        policy = self.server.policy
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1 or not host_allowed(hosts[0] if hosts else None, policy.allowed_hosts):
            raise access_denied(
                f"the Host header {', '.join(hosts)[:100]!r} names no loopback address: the embedded server answers "
                "only requests addressed to localhost, 127.0.0.0/8, ::1 or an --allow-host name"
            )
        origin, fetch_site = self.headers.get("Origin"), self.headers.get("Sec-Fetch-Site")
        if not origin_allowed(origin, fetch_site, policy.allowed_origins):
            sent = f"Origin {origin[:100]!r}" if origin is not None else f"Sec-Fetch-Site {str(fetch_site)[:20]!r}"
            raise access_denied(
                f"a request from a web page ({sent}) is refused: only --allow-origin origins may call the embedded "
                "server from a browser"
            )

    def _authenticate(self, params: Mapping[str, str]) -> None:
        user, password = request_credentials(
            self.headers.get("X-ClickHouse-User"),
            self.headers.get("X-ClickHouse-Key"),
            self.headers.get("Authorization"),
            params,
        )
        if not self.server.policy.credentials.match(user, password):
            log.warning("authentication failed for user %r from %s", user[:64], self.client_address[0])
            raise authentication_failed(user)

    def _run(self, payload: bytes, params: dict[str, str], query_id: str) -> tuple[_Reply, int]:
        bound, settings = split_params(params)
        settings = self._capped(settings)
        default_fmt = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or HTTP_DEFAULT_FORMAT
        session_id = params.get("session_id") or None
        timeout = float(params.get("session_timeout") or 60)
        insert = find_insert_data(payload)
        statement = _utf8(payload[: insert.data_offset] if insert else payload)
        self._check_statement(statement)
        tmp_path = None
        try:
            if insert is not None:
                tmp_path = self._spool(payload[insert.data_offset :])
                sql = insert.from_infile(tmp_path)
            else:
                sql = statement
            request = EngineRequest(
                sql, default_fmt, bound, settings, params.get("database"), session_id, timeout, self._read_only
            )
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

    def _check_statement(self, statement: str) -> None:
        """The client's own text (before an INSERT's data), refused before chDB sees it."""
        policy = self.server.policy
        if has_second_statement(statement):
            raise MULTI_STATEMENTS
        if self._read_only and not is_read_statement(statement):
            raise READ_ONLY_GET
        if stops_the_server(statement):
            raise access_denied("Not enough privileges: stop the embedded server with SIGTERM (make down), not SQL")
        if not policy.external_access:
            reached = host_access(statement, self.server.engine.host_access_names)
            if reached:
                raise access_denied(
                    f"Not enough privileges: {reached[:100]} would reach the host's files or the network, which the "
                    "embedded server refuses (use a ClickHouse server, or start it with --allow-external-access)"
                )
        if raises_cap(statement, "max_execution_time", policy.max_execution_time_s):
            raise cap_violation("max_execution_time", policy.max_execution_time_s)

    def _capped(self, settings: dict[str, str]) -> dict[str, str]:
        """URL settings checked like the SQL text's, with the server's max_execution_time unless one is lower."""
        policy = self.server.policy
        for name in settings:
            if name.lower() in HOST_ACCESS_SETTINGS and not policy.external_access:
                raise access_denied(f"Not enough privileges: the setting {name} names a file on the host")
        cap = policy.max_execution_time_s
        asked = settings.get("max_execution_time")
        if asked is not None and not setting_within_cap(asked, cap):
            raise cap_violation("max_execution_time", cap)
        if self._read_only:
            settings.pop("readonly", None)  # a read runs on a handle that is read-only already
        return {**settings, "max_execution_time": asked or f"{cap:g}"}

    def _spool(self, data: bytes) -> str:
        with tempfile.NamedTemporaryFile(
            prefix="switchyard-insert-", suffix=".data", dir=self.server.tmp_dir, delete=False
        ) as tmp:
            tmp.write(data)
        return tmp.name

    def _has_body(self) -> bool:
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        return chunked or self.headers.get("Content-Length", "0").strip() not in ("", "0")

    def _read_body(self) -> bytes:
        limit = self.server.policy.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if not length:
            self._body_read = True
            return b""
        try:
            size = int(length)
        except ValueError as ex:
            raise BadRequest(f"invalid Content-Length {length!r}") from ex
        if size < 0:
            raise BadRequest(f"invalid Content-Length {length!r}")
        if size > limit:
            raise too_large(f"the request body of {size} bytes", limit, "--max-body-bytes")
        body = self.rfile.read(size)
        self._body_read = True
        return body

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError as ex:
                raise BadRequest(f"malformed chunk size line {line[:40]!r}") from ex
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self._body_read = True
                return b"".join(chunks)
            total += size
            if total > limit:
                raise too_large("the chunked request body", limit, "--max-body-bytes")
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
        log.debug(_PASSWORD_PARAM.sub(r"\1***", format % args))

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
            f"refusing to bind {host}: the embedded ClickHouse speaks plain HTTP (its password would cross the "
            "network in clear), so it serves loopback only; use a real ClickHouse server (SWITCHYARD_CLICKHOUSE_URL) "
            "for remote clients"
        )


def serve(path: Path, host: str, port: int, grace_s: float, policy: AccessPolicy, tmp_dir: str | None = None) -> int:
    require_loopback(host)
    try:
        engine = ChdbEngine(path, external_access=policy.external_access)
    except (RuntimeError, ClickHouseError) as ex:
        log.error("cannot open the chDB path %s: %s", path, ex)
        return 1
    server = ClickHouseHTTPServer((host, port), engine, policy, tmp_dir)

    def stop(signum: int, _frame: object) -> None:
        log.info("%s received: draining", signal.Signals(signum).name)
        server.draining = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bound_host, bound_port = server.server_address[:2]
    log.info("listening on http://%s:%s (chDB %s, path %s)", bound_host, bound_port, engine.version, path)
    for name in [] if policy.external_access else engine.definitions_reaching_out():
        log.warning("%s reaches the host or the network by its definition (made before the locks): drop it", name)
    log.info(
        "user %s, %s; host and network access from SQL %s; max_execution_time %gs",
        policy.credentials.user,
        "password required" if policy.credentials.password else "NO PASSWORD (allowed for a laptop)",
        "ALLOWED (--allow-external-access)" if policy.external_access else "refused",
        policy.max_execution_time_s,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if not server.wait_idle(grace_s):
            log.warning("in-flight queries did not finish within %ss", grace_s)
        engine.close()
        log.info("stopped")
    return 0


def server_credentials(user: str | None, password_file: Path | None, allow_no_password: bool) -> Credentials:
    """The options, else what every client reads too: SWITCHYARD_CLICKHOUSE_USER, SWITCHYARD_CLICKHOUSE_PASSWORD,
    else the password file `make up` writes (settings.clickhouse_password_file)."""
    try:
        settings = get_settings()
        password = read_secret(password_file) if password_file else settings.clickhouse_password
    except ValueError as ex:
        raise SystemExit(str(ex)) from ex
    if not password and not (allow_no_password or settings.clickhouse_allow_no_password):
        raise SystemExit(
            "no ClickHouse password: `make up` writes one to var/secrets/clickhouse.password; or set "
            "SWITCHYARD_CLICKHOUSE_PASSWORD (or --password-file); on a laptop only, "
            "SWITCHYARD_CLICKHOUSE_ALLOW_NO_PASSWORD=true (or --allow-no-password) serves without one"
        )
    return Credentials(user or settings.clickhouse_user, password)


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.dev.clickhouse_http", description=__doc__)
    parser.add_argument("--path", type=Path, required=True, help="chDB data directory this process owns")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8123, help="port (0 picks a free one)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to let in-flight queries finish")
    parser.add_argument("--tmp-dir", default=None, help="where insert data is spooled (default: system temp)")
    parser.add_argument("--log-level", default="info")
    access = parser.add_argument_group("locks")
    access.add_argument("--user", help="the user clients must name (default: SWITCHYARD_CLICKHOUSE_USER, default)")
    access.add_argument(
        "--password-file",
        type=Path,
        help="file holding the password clients must send (default: SWITCHYARD_CLICKHOUSE_PASSWORD, else "
        "SWITCHYARD_CLICKHOUSE_PASSWORD_FILE, else var/secrets/clickhouse.password)",
    )
    access.add_argument(
        "--allow-no-password",
        action="store_true",
        help="serve with an empty password, for a laptop only (also SWITCHYARD_CLICKHOUSE_ALLOW_NO_PASSWORD=true)",
    )
    access.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME", help="a Host name served beside loopback ones"
    )
    access.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (http://host:port) whose pages may call the server from a browser",
    )
    access.add_argument(
        "--allow-external-access",
        action="store_true",
        help="let SQL reach host files and the network: file(), url(), s3(), remote(), INTO OUTFILE, "
        "ENGINE = File/URL/..., and chDB's default database reading unknown table names as files",
    )
    access.add_argument(
        "--max-execution-time",
        type=_positive(float),
        default=60.0,
        help="seconds a query may run (ClickHouse's max_execution_time); a request may only lower it",
    )
    access.add_argument("--max-body-bytes", type=_positive(int), default=64 << 20, help="largest request body")
    access.add_argument(
        "--max-decompressed-bytes",
        type=_positive(int),
        default=256 << 20,
        help="largest request body once its Content-Encoding is undone",
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    policy = AccessPolicy(
        credentials=server_credentials(args.user, args.password_file, args.allow_no_password),
        allowed_hosts=frozenset(h.lower() for h in args.allow_host),
        allowed_origins=frozenset(o.lower().rstrip("/") for o in args.allow_origin),
        external_access=args.allow_external_access,
        max_execution_time_s=args.max_execution_time,
        max_body_bytes=int(args.max_body_bytes),
        max_decompressed_bytes=int(args.max_decompressed_bytes),
    )
    return serve(args.path, args.host, args.port, args.grace, policy, args.tmp_dir)


if __name__ == "__main__":
    sys.exit(main())
