"""The name of anything kept per request across stages or processes: the request id scoped to its store. Clients
that produce to `requests` choose their own ids, so two stores may send the same one; a name made here from one
store's request is never the name of another store's."""

from __future__ import annotations

from urllib.parse import quote


def store_request_key(store_id: str, request_id: str) -> str:
    """`<store>:<request id>`, the store percent-encoded so that it holds no ':' and the first ':' ends it:
    unambiguous whatever either holds, and readable where it is a Kafka key."""
    return f"{quote(store_id, safe='')}:{request_id}"
