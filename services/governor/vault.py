"""The PII vault: each request's token → value mapping, encrypted with AES-256-GCM. The governor seals it into its
governed record (`pii_vault`), where the answerer opens it to re-personalise the answer for the store, and writes
it to the `pii.vault` topic (24 h time retention) in the same transaction, where the approvals process reads it
back with `VaultTable` when it re-releases an escalated request.

An entry is named by `vault_key_for(store_id, request_id)`, never by the request id alone: clients that produce to
`requests` choose their own ids, so two stores may send the same one, and neither may replace or open the other's
entry (the name is the Kafka key of the compacted topic and the cipher's associated data).

The key comes from a file (settings.pii_vault_key_file, default var/secrets/pii_vault.key, created 0600 on first
use) and is never logged; entries name only a hash prefix of it (`key_id`), so a rotated key is noticed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.codec import AvroCodec
from services.runtime.models import PiiVaultEntry
from services.runtime.reference import TopicTable
from services.runtime.request_key import store_request_key
from services.settings import Settings

log = logging.getLogger("switchyard.pii_vault")

VAULT_TOPIC: Final = "pii.vault"
VAULT_RECORD: Final = "PiiVaultEntry"
KEY_BYTES: Final = 32


class VaultError(RuntimeError):
    """A vault entry cannot be opened: wrong key, tampered, expired, another request's, or not there."""


def vault_key_for(store_id: str, request_id: str) -> str:
    """The name of one request's entry (services.runtime.request_key): one store's is never another store's."""
    return store_request_key(store_id, request_id)


def load_key(settings: Settings) -> bytes:
    """The vault key from its file; a missing file is created with a fresh random key (mode 0600)."""
    path = settings.pii_vault_key_file or settings.var_dir / "secrets" / "pii_vault.key"
    return _read_or_create(path)


def _read_or_create(path: Path) -> bytes:
    if path.is_file():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise VaultError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte AES key: replace it")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key)
    log.info("PII vault key created", extra={"path": str(path)})
    return key


class VaultCipher:
    """Seals and opens one request's mapping; the vault key (store and request id) is the associated data, so an
    entry cannot be replayed under another request or another store's request of the same id."""

    def __init__(self, key: bytes, *, ttl_s: int = 86_400, clock: Any = time.time) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"the vault key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"switchyard-pii-vault:" + key).hexdigest()[:16]
        self.ttl_s = ttl_s
        self._clock = clock

    def __repr__(self) -> str:  # never show the key
        return f"VaultCipher(key_id={self.key_id!r}, ttl_s={self.ttl_s})"

    def seal(self, vault_key: str, tokens: Mapping[str, str]) -> PiiVaultEntry:
        nonce = os.urandom(12)
        plaintext = json.dumps(dict(tokens), sort_keys=True, ensure_ascii=False).encode()
        now_ms = int(self._clock() * 1000)
        return PiiVaultEntry(
            vault_key=vault_key,
            key_id=self.key_id,
            nonce=nonce,
            ciphertext=self._aead.encrypt(nonce, plaintext, vault_key.encode()),
            created_at=now_ms,
            expires_at=now_ms + self.ttl_s * 1000,
        )

    def open(self, entry: PiiVaultEntry, vault_key: str) -> dict[str, str]:
        """The mapping of `entry`, which must be the one named `vault_key` (the reader's own, from
        vault_key_for): the name the reader expects is the associated data, not the name the entry carries."""
        if entry.vault_key != vault_key:
            raise VaultError(f"vault entry {entry.vault_key} is not entry {vault_key}")
        if entry.key_id != self.key_id:
            raise VaultError(f"vault entry {entry.vault_key} was sealed with key {entry.key_id}, not this one")
        if entry.expires_at < int(self._clock() * 1000):
            raise VaultError(f"vault entry {entry.vault_key} has expired")
        try:
            plaintext = self._aead.decrypt(entry.nonce, entry.ciphertext, vault_key.encode())
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
        if value is None:
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
