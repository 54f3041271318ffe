"""`switchyard erase --customer ID | --request ID [--store STORE]`: a customer's (or one request's) personal data
erased without touching the audit hash chain.

From the governor on, every record, table and audit record holds the request and the answer PII-tokenised; what
opens the tokens is the request's sealed vault entry. So erasure is, for each of the customer's requests (found
in ClickHouse's `requests`, where the raw text lives):

1. a tombstone on `pii.vault` for its entry: readers drop it at once (VaultTable: the gateway's read-back of
   answers, the approvals process), and compaction removes the entry from the topic (compact,delete, hourly
   segments);
2. its rows in the ClickHouse tables that hold raw text (ERASED_TABLES) deleted.

`audit_records`, `answers` and the `audited` topic are left as they are: they hold tokens only, so every hash
still verifies (`switchyard verify`). What erasure does not reach, and why, is in the README (PII and audit).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.settings import Settings
from services.shared.vault import VAULT_TOPIC, vault_key_for

# ClickHouse tables holding raw text of a request, erased by (store_id, request_id): the request text itself, and
# the corrections staff wrote about its answer (free text, which may repeat the customer's details)
ERASED_TABLES: Final[dict[str, str]] = {
    "requests": "the request text as the store sent it",
    "feedback": "corrections staff wrote about the answer",
}
# A request is found through the audit record every answered request has (its `request.customer_id`), and
# through `requests` where a deployment writes that table
CUSTOMER_REQUESTS_SQL: Final = (
    "SELECT DISTINCT store_id, request_id FROM ("
    "SELECT store_id, request_id FROM requests WHERE customer_id = {customer:String} UNION ALL "
    "SELECT store_id, request_id FROM audit_records "
    "WHERE JSONExtractString(record, 'request', 'customer_id') = {customer:String}"
    ") ORDER BY store_id, request_id"
)
REQUEST_SQL: Final = (
    "SELECT DISTINCT store_id, request_id FROM ("
    "SELECT store_id, request_id FROM requests WHERE request_id = {request:String} UNION ALL "
    "SELECT store_id, request_id FROM audit_records WHERE request_id = {request:String}"
    ") WHERE {store:String} = '' OR store_id = {store:String} ORDER BY store_id"
)


@dataclass(frozen=True)
class Erasure:
    """The requests to erase, as (store id, request id)."""

    requests: tuple[tuple[str, str], ...]

    @property
    def vault_keys(self) -> list[str]:
        """The `pii.vault` entries to tombstone: named as the governor names them, store and request."""
        return [vault_key_for(store, request) for store, request in self.requests]

    def deletions(self) -> list[tuple[str, dict[str, Any]]]:
        """One mutation per table of ERASED_TABLES, waiting for it to apply, with its parameters."""
        where = "(store_id, request_id) IN {pairs:Array(Tuple(String, String))}"
        pairs = list(self.requests)  # tuples: bound as ClickHouse tuples, not arrays
        return [(f"ALTER TABLE {table} DELETE WHERE {where}", {"pairs": pairs}) for table in ERASED_TABLES]


def find(
    query: Callable[[str, dict[str, str]], list[Sequence[Any]]],
    *,
    customer: str | None = None,
    request: str | None = None,
    store: str = "",
) -> Erasure:
    """The requests of `customer`, or `request` (in `store` when given), from ClickHouse's audit records and
    `requests`."""
    if (customer is None) == (request is None):
        raise ValueError("give a customer or a request, not both")
    if customer is not None:
        rows = query(CUSTOMER_REQUESTS_SQL, {"customer": customer})
    else:
        rows = query(REQUEST_SQL, {"request": request or "", "store": store})
    return Erasure(tuple((str(s), str(r)) for s, r in rows))


def tombstone(settings: Settings, vault_keys: Sequence[str], timeout_s: float = 30.0) -> int:
    """A tombstone for each entry on `pii.vault`, on the partition its entry went to (murmur2 of the same key, as
    the governor's producer picks it); returns how many Kafka acknowledged."""
    from confluent_kafka import Producer

    from services.runtime.kafka_clients import confluent_config
    from services.runtime.request_key import STORE_PARTITIONER

    producer = Producer(
        confluent_config({"enable.idempotence": True, "acks": "all", **STORE_PARTITIONER}, settings=settings)
    )
    failed: list[str] = []
    for key in vault_keys:
        producer.produce(
            settings.topic(VAULT_TOPIC),
            key=key.encode(),
            value=None,
            on_delivery=lambda error, message: failed.append(str(error)) if error is not None else None,
        )
    left = producer.flush(timeout_s)
    if left or failed:
        raise RuntimeError(f"{left + len(failed)} of {len(vault_keys)} tombstones not written: {failed[:3]}")
    return len(vault_keys)


def erase(settings: Settings, erasure: Erasure) -> dict[str, Any]:
    """Tombstones first (from then on no reader opens the tokens), then the raw-text rows."""
    from services.infra.clickhouse import get_client

    written = tombstone(settings, erasure.vault_keys) if erasure.requests else 0
    client = get_client(settings)
    try:
        for sql, parameters in erasure.deletions() if erasure.requests else []:
            client.command(sql, parameters=parameters, settings={"mutations_sync": 2})
    finally:
        client.close()
    return {
        "requests": [f"{store}:{request}" for store, request in erasure.requests],
        "vault_tombstones": written,
        "clickhouse_deleted_from": list(ERASED_TABLES) if erasure.requests else [],
        "kept_tokenised": ["audit_records", "answers", "audited"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`switchyard erase`: a customer's (or a request's) vault entries tombstoned and raw-text rows deleted."""
    from services.infra.clickhouse import get_client
    from services.settings import get_settings

    parser = argparse.ArgumentParser(prog="switchyard erase", description=main.__doc__)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="the customer id (Request.customer_id) whose requests to erase")
    who.add_argument("--request", help="one request id")
    parser.add_argument("--store", default="", help="with --request: the store that sent it (default: any store)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be erased, erase nothing")
    args = parser.parse_args(argv)
    settings = get_settings()
    client = get_client(settings)
    try:
        erasure = find(
            lambda sql, parameters: list(client.query(sql, parameters=parameters).result_rows),
            customer=args.customer,
            request=args.request,
            store=args.store,
        )
    finally:
        client.close()
    if not erasure.requests:
        print("switchyard erase: no request of that customer or id in ClickHouse's requests", file=sys.stderr)
        return 1
    if args.dry_run:
        print(json.dumps({"requests": [f"{s}:{r}" for s, r in erasure.requests], "tables": list(ERASED_TABLES)}))
        return 0
    print(json.dumps(erase(settings, erasure), indent=2))
    return 0
