"""The PII vault: each request's token → value mapping, encrypted with AES-256-GCM. The governor seals it into its
governed record (`pii_vault`), where the answerer opens it to re-personalise the answer for the store, and writes
it to the `pii.vault` topic (24 h time retention) in the same transaction, where the approvals process reads it
back with `VaultTable` when it re-releases an escalated request.

An entry is named by `vault_key_for(store_id, request_id)`, never by the request id alone: clients that produce to
`requests` choose their own ids, so two stores may send the same one, and neither may replace or open the other's
entry (the name is the Kafka key of the compacted topic and the cipher's associated data).

The keys are a key ring in one file (settings.pii_vault_key_file, default var/secrets/pii_vault.key, created 0600
on first use; a deployment mounts it from its Secret): a primary key that seals, and the previous keys, which
still open what they sealed. Keys are never logged; entries name only a hash prefix of the key that sealed them
(`key_id`). `switchyard vault rotate` makes a new primary and keeps the previous one while entries it sealed can
still be live (the vault TTL); every process re-reads the ring within a second of its change, and a reader meeting
a key id it does not hold re-reads it at once. A file of 32 raw bytes (the format before key rings) is a ring of
one key, with the same key id, so entries sealed before a rotation still open.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.reference import TopicTable
from services.runtime.request_key import store_request_key
from services.runtime.signing_keys import publish
from services.settings import Settings
from services.wire.codec import AvroCodec
from services.wire.models import PiiVaultEntry

log = logging.getLogger("switchyard.pii_vault")

VAULT_TOPIC: Final = "pii.vault"
VAULT_RECORD: Final = "PiiVaultEntry"
KEY_BYTES: Final = 32


class VaultError(RuntimeError):
    """A vault entry cannot be opened: wrong key, tampered, expired, another request's, or not there."""


def vault_key_for(store_id: str, request_id: str) -> str:
    """The name of one request's entry (services.runtime.request_key): one store's is never another store's."""
    return store_request_key(store_id, request_id)


RING_FORMAT: Final = "switchyard.pii-vault-key-ring/1"


def key_id_of(key: bytes) -> str:
    """The public name of a key: a hash prefix, safe to log and to write into every entry."""
    return hashlib.sha256(b"switchyard-pii-vault:" + key).hexdigest()[:16]


@dataclass(frozen=True)
class RingKey:
    key: bytes
    created_at: float  # epoch seconds

    @property
    def key_id(self) -> str:
        return key_id_of(self.key)


@dataclass(frozen=True)
class KeyRing:
    """The vault's keys, newest first: the first is the primary (it seals), every one opens what it sealed."""

    keys: tuple[RingKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise VaultError("a key ring needs at least one key")
        for ring_key in self.keys:
            if len(ring_key.key) != KEY_BYTES:
                raise VaultError(f"a vault key must be {KEY_BYTES} bytes, found {len(ring_key.key)}")

    def __repr__(self) -> str:  # never show the keys
        return f"KeyRing(primary={self.primary.key_id!r}, keys={[k.key_id for k in self.keys]})"

    @classmethod
    def of(cls, *keys: bytes) -> KeyRing:
        """A ring of raw keys, the first primary (created now)."""
        now = time.time()
        return cls(tuple(RingKey(key, now) for key in keys))

    @property
    def primary(self) -> RingKey:
        return self.keys[0]

    def get(self, key_id: str) -> bytes | None:
        return next((k.key for k in self.keys if k.key_id == key_id), None)

    @classmethod
    def parse(cls, data: bytes, where: str) -> KeyRing:
        if len(data) == KEY_BYTES:  # a single raw key, as written before key rings
            return cls((RingKey(data, 0.0),))
        try:
            document = json.loads(data)
            if document.get("format") != RING_FORMAT:
                raise ValueError(f"format is {document.get('format')!r}, not {RING_FORMAT}")
            keys = tuple(
                RingKey(base64.b64decode(entry["key"], validate=True), float(entry["created_at"]))
                for entry in document["keys"]
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise VaultError(
                f"{where} is neither a {KEY_BYTES}-byte key nor a key ring ({error}): replace it, or make a ring "
                "with `switchyard vault rotate`"
            ) from error
        return cls(keys)

    def serialise(self) -> bytes:
        entries = [
            {"id": k.key_id, "key": base64.b64encode(k.key).decode(), "created_at": k.created_at} for k in self.keys
        ]
        return (json.dumps({"format": RING_FORMAT, "keys": entries}, indent=2) + "\n").encode()

    def rotated(self, *, keep: int, ttl_s: float, now: float, force: bool = False) -> tuple[KeyRing, list[str]]:
        """This ring with a new primary, and at most `keep` keys in all; returns the ring and the ids dropped. A key
        that sealed entries within the last `ttl_s` (it was primary then) is kept whatever `keep` says, unless
        `force`: dropping it would make live entries unreadable."""
        if keep < 2:
            raise VaultError("keep at least 2 keys: the new primary and the one before it, which sealed live entries")
        fresh = RingKey(AESGCM.generate_key(bit_length=KEY_BYTES * 8), now)
        keys = [fresh, *self.keys]
        kept, dropped = keys[:keep], []
        for index in range(keep, len(keys)):
            # keys[index] stopped sealing when keys[index - 1] was made
            if not force and now - keys[index - 1].created_at < ttl_s:
                kept.append(keys[index])
            else:
                dropped.append(keys[index].key_id)
        return KeyRing(tuple(kept)), dropped


def key_ring_path(settings: Settings) -> Path:
    return settings.pii_vault_key_file or settings.var_dir / "secrets" / "pii_vault.key"


def load_key_ring(settings: Settings) -> KeyRing:
    """The vault's key ring from its file; a missing file is created with one fresh key (mode 0600)."""
    return _read_or_create(key_ring_path(settings))


def _read_or_create(path: Path) -> KeyRing:
    if path.is_file():
        return KeyRing.parse(path.read_bytes(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    ring = KeyRing.of(AESGCM.generate_key(bit_length=KEY_BYTES * 8))
    if not publish(path, ring.serialise(), 0o600):  # another process made it first: read theirs, so both hold one
        return KeyRing.parse(path.read_bytes(), str(path))
    log.info("PII vault key ring created", extra={"path": str(path), "key_id": ring.primary.key_id})
    return ring


class VaultCipher:
    """Seals and opens one request's mapping; the vault key (store and request id) is the associated data, so an
    entry cannot be replayed under another request or another store's request of the same id. Seals with the
    ring's primary key; opens with whichever key of the ring sealed the entry. Given the ring's file, it follows
    a rotation: it re-stats the file at most once a second, and re-reads it at once for an unknown key id."""

    def __init__(
        self,
        keys: bytes | KeyRing,
        *,
        ttl_s: int = 86_400,
        clock: Any = time.time,
        path: Path | None = None,
    ) -> None:
        self._ring = keys if isinstance(keys, KeyRing) else KeyRing.of(keys)
        self._aeads: dict[str, AESGCM] = {}
        self.ttl_s = ttl_s
        self._clock = clock
        self._path = path
        self._stamp = self._stat()
        self._checked_at = time.monotonic()

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultCipher:
        return cls(load_key_ring(settings), ttl_s=settings.pii_vault_ttl_s, path=key_ring_path(settings))

    @property
    def key_id(self) -> str:
        """The id of the key that seals now."""
        return self._current().primary.key_id

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def _current(self, *, reload: bool = False) -> KeyRing:
        if self._path is not None and (reload or time.monotonic() - self._checked_at >= 1.0):
            self._checked_at = time.monotonic()
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    ring = KeyRing.parse(self._path.read_bytes(), str(self._path))
                except (OSError, VaultError) as error:  # a broken file keeps the ring in hand; says why
                    log.error("PII vault key ring not reloaded", extra={"path": str(self._path), "error": str(error)})
                else:
                    if ring.primary.key_id != self._ring.primary.key_id:
                        log.info("PII vault key ring reloaded", extra={"primary": ring.primary.key_id})
                    self._ring = ring
        return self._ring

    def _aead(self, key_id: str, key: bytes) -> AESGCM:
        aead = self._aeads.get(key_id)
        if aead is None:
            aead = self._aeads[key_id] = AESGCM(key)
        return aead

    def __repr__(self) -> str:  # never show the key
        return f"VaultCipher(key_id={self._ring.primary.key_id!r}, ttl_s={self.ttl_s})"

    def seal(self, vault_key: str, tokens: Mapping[str, str]) -> PiiVaultEntry:
        primary = self._current().primary
        nonce = os.urandom(12)
        plaintext = json.dumps(dict(tokens), sort_keys=True, ensure_ascii=False).encode()
        now_ms = int(self._clock() * 1000)
        return PiiVaultEntry(
            vault_key=vault_key,
            key_id=primary.key_id,
            nonce=nonce,
            ciphertext=self._aead(primary.key_id, primary.key).encrypt(nonce, plaintext, vault_key.encode()),
            created_at=now_ms,
            expires_at=now_ms + self.ttl_s * 1000,
        )

    def open(self, entry: PiiVaultEntry, vault_key: str) -> dict[str, str]:
        """The mapping of `entry`, which must be the one named `vault_key` (the reader's own, from
        vault_key_for): the name the reader expects is the associated data, not the name the entry carries."""
        if entry.vault_key != vault_key:
            raise VaultError(f"vault entry {entry.vault_key} is not entry {vault_key}")
        key = self._current().get(entry.key_id)
        if key is None:
            key = self._current(reload=True).get(entry.key_id)  # a rotation this process has not seen yet
        if key is None:
            raise VaultError(f"vault entry {entry.vault_key} was sealed with key {entry.key_id}, not in the key ring")
        if entry.expires_at < int(self._clock() * 1000):
            raise VaultError(f"vault entry {entry.vault_key} has expired")
        try:
            plaintext = self._aead(entry.key_id, key).decrypt(entry.nonce, entry.ciphertext, vault_key.encode())
        except InvalidTag as error:
            raise VaultError(f"vault entry {entry.vault_key} fails authentication: tampered or misplaced") from error
        mapping = json.loads(plaintext)
        if not isinstance(mapping, dict):
            raise VaultError(f"vault entry {entry.vault_key} does not hold a mapping")
        return {str(token): str(value) for token, value in mapping.items()}


class VaultTable(TopicTable):
    """The `pii.vault` topic held in memory (every partition), expired entries dropped; `mapping` waits briefly
    for an entry, since a reader may see a record before the vault entry written beside it."""

    def __init__(self, *, bootstrap: str, topic: str, codec: AvroCodec, cipher: VaultCipher) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic)
        self.codec, self.cipher = codec, cipher
        self.entries: dict[str, PiiVaultEntry] = {}
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone (`switchyard erase`): the entry is gone for every reader of the topic
            if key is not None:
                self.entries.pop(key.decode(errors="replace"), None)
            return
        try:
            _, decoded = self.codec.decode(value, reader=VAULT_RECORD)
            entry = PiiVaultEntry.model_validate(decoded)
        except Exception as error:  # a bad entry is skipped and counted, never fatal
            self.rejected += 1
            log.warning("vault entry rejected", extra={"topic": self.topic, "error": type(error).__name__})
            return
        self.entries[entry.vault_key] = entry
        self._arrived.set()
        self._expire()

    def _expire(self) -> None:
        if len(self.entries) % 1024:
            return
        now_ms = int(time.time() * 1000)
        for name in [name for name, entry in self.entries.items() if entry.expires_at < now_ms]:
            del self.entries[name]

    async def mapping(self, vault_key: str, *, wait_s: float = 2.0) -> dict[str, str]:
        deadline = asyncio.get_running_loop().time() + wait_s
        while vault_key not in self.entries:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise VaultError(f"vault entry {vault_key} is not in {self.topic}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=min(remaining, 0.2))
            except TimeoutError:
                continue
        return self.cipher.open(self.entries[vault_key], vault_key)


def rotate(
    path: Path, *, keep: int, ttl_s: float, force: bool = False, now: float | None = None
) -> tuple[KeyRing, list[str]]:
    """Adds a new primary key to the ring in `path` (made when missing) and writes it back in one step."""
    ring = _read_or_create(path)
    rotated, dropped = ring.rotated(keep=keep, ttl_s=ttl_s, now=time.time() if now is None else now, force=force)
    publish(path, rotated.serialise(), 0o600, replace=True)
    return rotated, dropped


def describe(ring: KeyRing) -> list[dict[str, Any]]:
    """The ring without its keys: id, role and age of each."""
    return [
        {
            "key_id": k.key_id,
            "role": "primary" if index == 0 else "previous",
            "created_at": datetime.fromtimestamp(k.created_at, UTC).isoformat() if k.created_at else None,
        }
        for index, k in enumerate(ring.keys)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """`switchyard vault status|rotate`: the PII vault's key ring (ids and ages, never keys), and its rotation."""
    from services.settings import get_settings

    parser = argparse.ArgumentParser(prog="switchyard vault", description=main.__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="the key ids in the ring, the primary first")
    rotate_parser = actions.add_parser(
        "rotate", help="make a new primary key; keep the previous ones that may still open live entries"
    )
    rotate_parser.add_argument(
        "--keep", type=int, default=2, help="keys to keep in all (default 2: the new one and the one before)"
    )
    rotate_parser.add_argument(
        "--force", action="store_true", help="drop keys beyond --keep even if they sealed entries within the vault TTL"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    path = key_ring_path(settings)
    try:
        if args.action == "status":
            ring = _read_or_create(path)
            print(json.dumps({"path": str(path), "keys": describe(ring)}, indent=2))
            return 0
        ring, dropped = rotate(path, keep=args.keep, ttl_s=settings.pii_vault_ttl_s, force=args.force)
    except VaultError as error:
        print(f"switchyard vault: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(path), "keys": describe(ring), "dropped": dropped}, indent=2))
    return 0
