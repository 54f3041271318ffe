"""The name of anything kept per request across stages or processes: the request id scoped to its store. Clients
that produce to `requests` choose their own ids, so two stores may send the same one; a name made here from one
store's request is never the name of another store's."""

from __future__ import annotations

from urllib.parse import quote

# Feedback names the store of the request it is about in this attribute: a request id names a request only
# within its store, so feedback is joined to its request on both (ClickHouse, the stitcher's history).
FEEDBACK_STORE_ATTRIBUTE = "store_id"


def store_request_key(store_id: str, request_id: str) -> str:
    """`<store>:<request id>`, the store percent-encoded so that it holds no ':' and the first ':' ends it:
    unambiguous whatever either holds, and readable where it is a Kafka key."""
    return f"{quote(store_id, safe='')}:{request_id}"


def feedback_store(attributes: dict[str, str]) -> str:
    """The store a Feedback record names ('' where it names none: feedback from before stores were named, which
    is joined to nothing)."""
    return attributes.get(FEEDBACK_STORE_ATTRIBUTE, "").strip()
