"""API keys of the HTTP gateway: a key speaks for one store (and optionally one terminal). Only the SHA-256 of a
secret is kept, on the compacted topic `gateway.keys`, which every gateway replica follows, so a revocation
reaches every replica within a poll. `switchyard keys create|revoke|list` manages them."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Producer

from services.gateway.shapes import GatewayError
from services.runtime.kafka_clients import confluent_config
from services.runtime.reference import ReferenceTable, read_rows
from services.settings import Settings, get_settings
from services.wire.codec import AvroCodec
from services.wire.models import ApiKey
from services.wire.schema_registry import SchemaRegistry

KEY_PREFIX = "sy"
_SECRET = re.compile(r"^sy_([0-9a-f]{8})_([0-9a-f]{48})$")
_STORE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as created: the secret is shown once and never stored."""

    secret: str
    record: ApiKey


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    """The public id inside a secret (`sy_<8 hex>`), or None when the text is not a Switchyard key."""
    match = _SECRET.match(secret)
    return f"{KEY_PREFIX}_{match.group(1)}" if match else None


def new_key(
    store_id: str,
    *,
    name: str,
    terminal_id: str | None = None,
    expires_in_days: float | None = None,
    requests_per_minute: int | None = None,
    tokens_per_day: int | None = None,
    cost_per_day_usd: float | None = None,
    now_ms: int | None = None,
) -> NewKey:
    if not _STORE.match(store_id):
        raise ValueError(f"store id {store_id!r} is not well formed")
    if terminal_id is not None and not _STORE.match(terminal_id):
        raise ValueError(f"terminal id {terminal_id!r} is not well formed")
    for label, limit in (("requests per minute", requests_per_minute), ("tokens per day", tokens_per_day)):
        if limit is not None and limit < 1:
            raise ValueError(f"{label} must be at least 1, got {limit}")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    secret = f"{KEY_PREFIX}_{secrets.token_hex(4)}_{secrets.token_hex(24)}"
    record = ApiKey(
        key_id=str(key_id_of(secret)),
        secret_sha256=secret_sha256(secret),
        store_id=store_id,
        terminal_id=terminal_id,
        name=name,
        created_at=now,
        expires_at=None if expires_in_days is None else now + int(expires_in_days * DAY_MS),
        revoked_at=None,
        requests_per_minute=requests_per_minute,
        tokens_per_day=tokens_per_day,
        cost_per_day_usd=cost_per_day_usd,
    )
    return NewKey(secret, record)


def unauthorized(message: str, code: str) -> GatewayError:
    return GatewayError(401, message, kind="authentication_error", code=code)


def authenticate(authorization: str | None, lookup: ReferenceTable[ApiKey], now_ms: int) -> ApiKey:
    """The key a `Authorization: Bearer <secret>` header presents, or a 401 that says why not."""
    if not authorization or not authorization.startswith("Bearer "):
        raise unauthorized("send your API key as `Authorization: Bearer sy_...`", "missing_api_key")
    secret = authorization.removeprefix("Bearer ").strip()
    key_id = key_id_of(secret)
    record = lookup.get(key_id) if key_id else None
    # the digest is compared in constant time; an unknown id and a wrong secret read the same to the caller
    if record is None or not hmac.compare_digest(record.secret_sha256, secret_sha256(secret)):
        raise unauthorized("the API key is not valid", "invalid_api_key")
    if record.revoked_at is not None and record.revoked_at <= now_ms:
        raise unauthorized(f"the API key {record.key_id} was revoked", "revoked_api_key")
    if record.expires_at is not None and record.expires_at <= now_ms:
        raise unauthorized(f"the API key {record.key_id} has expired", "expired_api_key")
    return record


def key_table(settings: Settings, codec: AvroCodec) -> ReferenceTable[ApiKey]:
    return ReferenceTable(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic("gateway.keys"),
        record="ApiKey",
        model=ApiKey,
        codec=codec,
        key_of=lambda row: row.key_id,
    )


class KeyPublisher:
    """Writes key records to `gateway.keys`, acknowledged by every in-sync replica before it returns."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.topic, self.codec = settings.topic("gateway.keys"), codec
        self.producer = Producer(confluent_config({"enable.idempotence": True}, settings))

    def publish(self, record: ApiKey) -> None:
        self.producer.produce(
            self.topic, key=record.key_id.encode(), value=self.codec.encode("ApiKey", record.model_dump())
        )
        if self.producer.flush(30):
            raise RuntimeError(f"key {record.key_id} was not acknowledged by Kafka within 30 s")


async def read_keys(settings: Settings, codec: AvroCodec, timeout_s: float = 30.0) -> dict[str, ApiKey]:
    """Every key on the topic, as the gateway would hold them."""
    return await read_rows(key_table(settings, codec), timeout_s)


def _describe(record: ApiKey, now_ms: int) -> dict[str, object]:
    state = "active"
    if record.revoked_at is not None and record.revoked_at <= now_ms:
        state = "revoked"
    elif record.expires_at is not None and record.expires_at <= now_ms:
        state = "expired"
    described = record.model_dump(exclude={"secret_sha256"})
    return {**described, "state": state}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard keys", description="the HTTP gateway's API keys")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="a new key for a store; prints the secret once")
    create.add_argument("--store", required=True, help="the store the key speaks for")
    create.add_argument("--terminal", help="bind the key to one terminal of the store")
    create.add_argument("--name", required=True, help="what the key is for (till 3, kiosk app)")
    create.add_argument("--expires-in-days", type=float, help="the key stops working after this many days")
    create.add_argument("--requests-per-minute", type=int, help="the store's request limit (default: the gateway's)")
    create.add_argument("--tokens-per-day", type=int, help="the store's daily model-token budget")
    create.add_argument("--cost-per-day-usd", type=float, help="the store's daily model-cost budget")
    revoke = commands.add_parser("revoke", help="stop a key working on every gateway replica")
    revoke.add_argument("key_id", help="the key's id, sy_ and 8 hex digits (`switchyard keys list`)")
    listing = commands.add_parser("list", help="every key, without secrets, as JSON lines")
    listing.add_argument("--store", help="only this store's keys")
    args = parser.parse_args(argv)

    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    now = int(time.time() * 1000)
    if args.command == "create":
        try:
            made = new_key(
                args.store,
                name=args.name,
                terminal_id=args.terminal,
                expires_in_days=args.expires_in_days,
                requests_per_minute=args.requests_per_minute,
                tokens_per_day=args.tokens_per_day,
                cost_per_day_usd=args.cost_per_day_usd,
            )
        except ValueError as error:
            print(f"switchyard keys create: {error}", file=sys.stderr)
            return 2
        KeyPublisher(settings, codec).publish(made.record)
        print(json.dumps({"key_id": made.record.key_id, "secret": made.secret, "store_id": args.store}))
        print("the secret is shown once: store it now; only its SHA-256 is kept", file=sys.stderr)
        return 0
    keys = asyncio.run(read_keys(settings, codec))
    if args.command == "revoke":
        record = keys.get(args.key_id)
        if record is None:
            print(f"switchyard keys revoke: no key {args.key_id}", file=sys.stderr)
            return 1
        KeyPublisher(settings, codec).publish(record.model_copy(update={"revoked_at": now}))
        print(json.dumps({"key_id": record.key_id, "revoked_at": now}))
        return 0
    for record in sorted(keys.values(), key=lambda row: (row.store_id, row.created_at)):
        if args.store is None or record.store_id == args.store:
            print(json.dumps(_describe(record, now)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
