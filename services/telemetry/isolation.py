"""Tells a failed ClickHouse insert that may pass unchanged later (ClickHouse away, busy or misconfigured) from one
that refuses the data, and finds the rows a table refuses by bisection, so the rows around them are written."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from services.runtime.faults import RejectedRecord

Row = list[Any]

# ClickHouse error codes (src/Common/ErrorCodes.cpp) of a server that cannot take an insert now, whatever its data:
# timed out, overloaded, out of memory or disk, a replica or Keeper away, the connection lost.
BUSY_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        173,  # CANNOT_ALLOCATE_MEMORY
        201,  # QUOTA_EXCEEDED: until the quota's interval ends
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR (the embedded server shutting down answers it too)
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        286,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION: the server's own I/O errors (broken pipe, connection reset)
    }
)
# ... and of one that takes no insert from this writer until an operator acts (credentials, grants, a migration not
# applied yet). Not the data's fault either: the records wait in Kafka instead of all going to dlq.telemetry.
MISCONFIGURED_CODES = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
        164,  # READONLY
        497,  # ACCESS_DENIED
        516,  # AUTHENTICATION_FAILED
    }
)
# TOO_MANY_PARTS is "merges are processing significantly slower than inserts" (wait for the merges) but also
# "too many partitions for single INSERT block" (max_partitions_per_insert_block): the latter is the data's.
TOO_MANY_PARTS = 252
_TOO_MANY_PARTITIONS = "partitions for single insert block"
_CODE = re.compile(r"\bCode: (\d+)\.")
# a proxy or load balancer in front of ClickHouse answering for it, without a ClickHouse error code
_UNAVAILABLE_STATUS = re.compile(r"\bHTTP status (429|502|503|504)\b")


def error_code(error: BaseException) -> int | None:
    """ClickHouse's error code: from the X-ClickHouse-Exception-Code header, else from the message's "Code: N."."""
    if not isinstance(error, DatabaseError):
        return None
    if isinstance(error.code, int):
        return error.code
    found = _CODE.search(str(error))
    return int(found.group(1)) if found else None


def is_transient(error: BaseException) -> bool:
    """True when the same insert may pass later: connection refused or reset and timeouts (clickhouse-connect's
    OperationalError, also its answer to 429/503/504 after its own retries), the codes above. False when ClickHouse
    refused the data (a constraint, a value out of range, too many partitions in one block) or the client could
    not serialise it (DataError, TypeError...): the rows are then isolated."""
    if isinstance(error, (OperationalError, ConnectionError, TimeoutError)):
        return True
    code = error_code(error)
    if code == TOO_MANY_PARTS:
        return _TOO_MANY_PARTITIONS not in str(error).lower()
    if code is not None:
        return code in BUSY_CODES or code in MISCONFIGURED_CODES
    return isinstance(error, DatabaseError) and _UNAVAILABLE_STATUS.search(str(error)) is not None


class RowRefused(RejectedRecord):
    """ClickHouse refused a row of one table; the reason names the table and carries ClickHouse's error."""

    def __init__(self, table: str, error: BaseException, *, request_id: str | None) -> None:
        self.table = table
        super().__init__(f"ClickHouse refused the {table} row: {error}", request_id=request_id)


class IsolatingInsert:
    """One table's rows of a batch, inserted whole when ClickHouse takes them. When it refuses them, each half is
    inserted on its own, and so on down to single rows: the good rows are written once each and every refused row
    is found (about 2·k·log2(n) inserts for k refused rows of n). A transient error stops it where it is and goes
    up to the caller; run() again resumes with the slices not written yet, so a retry writes no row twice."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows
        self.pending: list[tuple[int, int]] = [(0, len(rows))] if rows else []  # slices [start, stop) still to write
        self.refused: list[tuple[int, Exception]] = []  # (index in rows, ClickHouse's error)

    @property
    def written(self) -> int:
        return len(self.rows) - len(self.refused) - sum(stop - start for start, stop in self.pending)

    def run(self, insert: Callable[[Sequence[Row]], None]) -> None:
        while self.pending:
            start, stop = self.pending.pop()
            try:
                insert(self.rows[start:stop])
            except Exception as error:
                if is_transient(error):
                    self.pending.append((start, stop))
                    raise
                self._isolate(start, stop, error)

    def _isolate(self, start: int, stop: int, error: Exception) -> None:
        if stop - start == 1:
            self.refused.append((start, error))
            return
        middle = (start + stop) // 2
        self.pending += [(middle, stop), (start, middle)]  # the first half next
