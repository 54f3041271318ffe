"""The PII vault's encryption: AES-GCM bound to the store and the request, expiry, wrong keys and tampering refused,
the key file created private and never shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.governor.vault import VaultCipher, VaultError, VaultTable, load_key, vault_key_for
from services.runtime.codec import AvroCodec
from services.runtime.schema_registry import SchemaRegistry
from services.settings import Settings

TOKENS = {"<PERSON_1>": "Maria Lopez", "<EMAIL_1>": "maria@example.com"}


def test_a_sealed_mapping_opens_with_the_same_key_and_hides_its_values(tmp_path: Path) -> None:
    cipher = VaultCipher(load_key(Settings(var_dir=tmp_path)))
    entry = cipher.seal("0417:req-1", TOKENS)
    assert b"Maria" not in entry.ciphertext and b"example.com" not in entry.ciphertext
    assert cipher.open(entry, "0417:req-1") == TOKENS


def test_the_key_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    key = load_key(settings)
    path = tmp_path / "secrets" / "pii_vault.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(settings) == key
    assert key.hex() not in repr(VaultCipher(key))


def test_an_entry_moved_to_another_request_or_tampered_with_is_refused() -> None:
    cipher = VaultCipher(bytes(32))
    entry = cipher.seal("0417:req-1", TOKENS)
    with pytest.raises(VaultError, match="fails authentication"):
        cipher.open(entry.model_copy(update={"vault_key": "0417:req-2"}), "0417:req-2")
    flipped = bytes([entry.ciphertext[0] ^ 1]) + entry.ciphertext[1:]
    with pytest.raises(VaultError, match="fails authentication"):
        cipher.open(entry.model_copy(update={"ciphertext": flipped}), "0417:req-1")


def test_another_stores_entry_for_the_same_request_id_never_opens() -> None:
    cipher = VaultCipher(bytes(32))
    theirs = cipher.seal(vault_key_for("0417", "req-1"), TOKENS)
    mine = vault_key_for("0999", "req-1")
    with pytest.raises(VaultError, match="is not entry 0999:req-1"):
        cipher.open(theirs, mine)
    # renamed to look like this store's entry, it still fails: the store is in the associated data
    with pytest.raises(VaultError, match="fails authentication"):
        cipher.open(theirs.model_copy(update={"vault_key": mine}), mine)


async def test_a_store_reusing_another_stores_request_id_neither_replaces_nor_reads_its_vault_entry(
    tmp_path: Path,
) -> None:
    settings = Settings(var_dir=tmp_path)
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    cipher = VaultCipher(bytes(32))
    table = VaultTable(bootstrap="unused", topic="pii.vault", codec=codec, cipher=cipher)
    theirs = cipher.seal(vault_key_for("0417", "req-1"), TOKENS)
    mine = cipher.seal(vault_key_for("0999", "req-1"), {"<PERSON_1>": "John Smith"})
    for entry in (theirs, mine):  # as read from the topic, the later one last
        table.apply(entry.vault_key.encode(), codec.encode("PiiVaultEntry", entry.model_dump()))
    assert await table.mapping(vault_key_for("0417", "req-1"), wait_s=0) == TOKENS
    assert await table.mapping(vault_key_for("0999", "req-1"), wait_s=0) == {"<PERSON_1>": "John Smith"}


@given(st.text(), st.text(), st.text(), st.text())
def test_two_different_store_and_request_pairs_never_share_a_vault_key(
    store_a: str, request_a: str, store_b: str, request_b: str
) -> None:
    if (store_a, request_a) != (store_b, request_b):
        assert vault_key_for(store_a, request_a) != vault_key_for(store_b, request_b)


def test_another_key_and_an_expired_entry_are_refused() -> None:
    now = [1_000.0]
    cipher = VaultCipher(bytes(32), ttl_s=60, clock=lambda: now[0])
    entry = cipher.seal("0417:req-1", TOKENS)
    with pytest.raises(VaultError, match="sealed with key"):
        VaultCipher(bytes([1]) * 32).open(entry, "0417:req-1")
    now[0] += 61
    with pytest.raises(VaultError, match="expired"):
        cipher.open(entry, "0417:req-1")


def test_a_key_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"short")
    with pytest.raises(VaultError, match="not a 32-byte AES key"):
        load_key(Settings(var_dir=tmp_path, pii_vault_key_file=path))
