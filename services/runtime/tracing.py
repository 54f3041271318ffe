"""W3C Trace Context (https://www.w3.org/TR/trace-context/) on Kafka records: the `traceparent` header parsed,
formatted and continued by every stage, so one request is one trace across the chain. Pure functions; the
OpenTelemetry spans built on them live in services.runtime.spans."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
VERSION = 0x00
SAMPLED = 0x01
# level 2's "random trace id" flag: it describes the trace id, which a child keeps, so it is kept too; the other
# bits are not defined yet and the spec says to propagate them as zero
KEPT_FLAGS = 0x03

Header = tuple[str, bytes | str | None]
Headers = Sequence[Header]

# version, trace id, parent (span) id, flags, and anything a later version appends after a dash
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One span's place in a trace: 32 lowercase hex digits of trace id, 16 of span id, and the flags byte."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)


def parse_traceparent(value: bytes | str | None) -> TraceParent | None:
    """The trace parent a header value names, or None where it is absent or invalid, which the spec treats
    alike (the receiver starts a new trace): not lowercase hex, a wrong length, version ff, version 00 with
    anything after the flags, or an all-zero trace or span id. A later version is read as far as version 00
    goes, as the spec asks."""
    if value is None:
        return None
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    match = _TRACEPARENT.fullmatch(raw.strip(b" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    parent = TraceParent(trace_id.decode(), span_id.decode(), int(flags, 16))
    if parent.trace_id == _ZERO_TRACE or parent.span_id == _ZERO_SPAN:
        return None
    return parent


def format_traceparent(parent: TraceParent) -> bytes:
    """The version 00 header value, as bytes for a Kafka header."""
    return b"%02x-%s-%s-%02x" % (VERSION, parent.trace_id.encode(), parent.span_id.encode(), parent.flags & 0xFF)


def start() -> TraceParent:
    """A new trace: a random trace id and span id, sampled."""
    return TraceParent(_random_hex(128), _random_hex(64), SAMPLED)


def child_of(parent: TraceParent) -> TraceParent:
    """A span within the parent's trace: the same trace id and (defined) flags, a new span id."""
    return TraceParent(parent.trace_id, _random_hex(64), parent.flags & KEPT_FLAGS)


def parent_of(headers: Headers | None) -> TraceParent | None:
    """The trace parent a record's headers carry, or None without one, with an invalid one, or with more than
    one (as two HTTP traceparent headers, which combine into an invalid value)."""
    found: bytes | str | None = None
    seen = 0
    for name, value in headers or ():
        if name == TRACEPARENT:
            found, seen = value, seen + 1
    return parse_traceparent(found) if seen == 1 else None


def trace_id_of(headers: Headers | None) -> str:
    """The trace id a record's headers carry, or '' without a valid traceparent."""
    parent = parent_of(headers)
    return parent.trace_id if parent is not None else ""


def outgoing_headers(incoming: Headers | None, parent: TraceParent | None, child: TraceParent) -> list[Header]:
    """The headers of a record produced for an incoming one: `traceparent` naming the child span, then every
    other incoming header unchanged and in order. A `tracestate` belongs to the incoming trace, so it is dropped
    when the child starts a new trace (no valid parent)."""
    continued = parent is not None and parent.trace_id == child.trace_id
    headers: list[Header] = [(TRACEPARENT, format_traceparent(child))]
    for header in incoming or ():
        name = header[0]
        if name != TRACEPARENT and (continued or name != TRACESTATE):
            headers.append(header)
    return headers


def _random_hex(bits: int) -> str:
    """A random id of `bits` bits as lowercase hex, never all zeros (invalid in the spec)."""
    value = 0
    while value == 0:
        value = random.getrandbits(bits)
    return f"{value:0{bits // 4}x}"
