"""The name of anything kept per request across stages or processes: the request id scoped to its store. Clients
that produce to `requests` choose their own ids, so two stores may send the same one; a name made here from one
store's request is never the name of another store's.

Where a request goes: every producer of `requests` keys it by its store id and picks the partition as Java
clients and aiokafka do (murmur2 of the key). Each stage produces onto the partition it consumed from, so a
store's records stay on one partition down to `answered`, and one auditor owns its hash chain; a request that
landed on another partition would be chained by a second auditor at the same seq (a fork)."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

# Feedback names the store of the request it is about in this attribute: a request id names a request only
# within its store, so feedback is joined to its request on both (ClickHouse, the stitcher's history).
FEEDBACK_STORE_ATTRIBUTE = "store_id"
# librdkafka's setting for the partitioner above (its default, consistent_random, hashes keys with CRC32)
STORE_PARTITIONER: Final = {"partitioner": "murmur2_random"}


def store_request_key(store_id: str, request_id: str) -> str:
    """`<store>:<request id>`, the store percent-encoded so that it holds no ':' and the first ':' ends it:
    unambiguous whatever either holds, and readable where it is a Kafka key."""
    return f"{quote(store_id, safe='')}:{request_id}"


def feedback_store(attributes: dict[str, str]) -> str:
    """The store a Feedback record names ('' where it names none: feedback from before stores were named, which
    is joined to nothing)."""
    return attributes.get(FEEDBACK_STORE_ATTRIBUTE, "").strip()
