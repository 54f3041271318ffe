"""The PII vault's encryption: AES-GCM bound to the request, expiry, wrong keys and tampering refused, the key file
created private and never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.governor.vault import VaultCipher, VaultError, load_key
from services.settings import Settings

TOKENS = {"<PERSON_1>": "Maria Lopez", "<EMAIL_1>": "maria@example.com"}


def test_a_sealed_mapping_opens_with_the_same_key_and_hides_its_values(tmp_path: Path) -> None:
    cipher = VaultCipher(load_key(Settings(var_dir=tmp_path)))
    entry = cipher.seal("req-1", TOKENS)
    assert b"Maria" not in entry.ciphertext and b"example.com" not in entry.ciphertext
    assert cipher.open(entry) == TOKENS


def test_the_key_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    key = load_key(settings)
    path = tmp_path / "secrets" / "pii_vault.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(settings) == key
    assert key.hex() not in repr(VaultCipher(key))


def test_an_entry_moved_to_another_request_or_tampered_with_is_refused() -> None:
    cipher = VaultCipher(bytes(32))
    entry = cipher.seal("req-1", TOKENS)
    with pytest.raises(VaultError, match="fails authentication"):
        cipher.open(entry.model_copy(update={"vault_key": "req-2"}))
    flipped = bytes([entry.ciphertext[0] ^ 1]) + entry.ciphertext[1:]
    with pytest.raises(VaultError, match="fails authentication"):
        cipher.open(entry.model_copy(update={"ciphertext": flipped}))


def test_another_key_and_an_expired_entry_are_refused() -> None:
    now = [1_000.0]
    cipher = VaultCipher(bytes(32), ttl_s=60, clock=lambda: now[0])
    entry = cipher.seal("req-1", TOKENS)
    with pytest.raises(VaultError, match="sealed with key"):
        VaultCipher(bytes([1]) * 32).open(entry)
    now[0] += 61
    with pytest.raises(VaultError, match="expired"):
        cipher.open(entry)


def test_a_key_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"short")
    with pytest.raises(VaultError, match="not a 32-byte AES key"):
        load_key(Settings(var_dir=tmp_path, pii_vault_key_file=path))
