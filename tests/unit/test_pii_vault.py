"""The PII vault's encryption: AES-GCM bound to the store and the request, expiry, wrong keys and tampering refused,
the key file created private and never shown."""

from __future__ import annotations

import base64
import json
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.settings import Settings, get_settings
from services.shared.vault import VaultCipher, VaultError, VaultTable, load_key_ring, rotate, vault_key_for
from services.shared.vault import main as vault_main
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry

TOKENS = {"<PERSON_1>": "Maria Lopez", "<EMAIL_1>": "maria@example.com"}


def test_a_sealed_mapping_opens_with_the_same_key_and_hides_its_values(tmp_path: Path) -> None:
    cipher = VaultCipher(load_key_ring(Settings(var_dir=tmp_path)))
    entry = cipher.seal("0417:req-1", TOKENS)
    assert b"Maria" not in entry.ciphertext and b"example.com" not in entry.ciphertext
    assert cipher.open(entry, "0417:req-1") == TOKENS


def test_the_key_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    ring = load_key_ring(settings)
    path = tmp_path / "secrets" / "pii_vault.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_ring(settings) == ring
    key = ring.primary.key
    assert key.hex() not in repr(VaultCipher(ring)) and key.hex() not in repr(ring)
    assert base64.b64encode(key).decode() not in repr(ring)


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
    with pytest.raises(VaultError, match="neither a 32-byte key nor a key ring"):
        load_key_ring(Settings(var_dir=tmp_path, pii_vault_key_file=path))


def test_a_raw_key_file_from_before_key_rings_is_a_ring_of_one_with_the_same_key_id(tmp_path: Path) -> None:
    path = tmp_path / "pii_vault.key"
    path.write_bytes(bytes(range(32)))
    sealed = VaultCipher(bytes(range(32))).seal("0417:req-1", TOKENS)
    ring = load_key_ring(Settings(var_dir=tmp_path, pii_vault_key_file=path))
    assert ring.primary.key_id == sealed.key_id and VaultCipher(ring).open(sealed, "0417:req-1") == TOKENS


def test_after_a_rotation_new_entries_use_the_new_key_and_old_entries_still_open(tmp_path: Path) -> None:
    path = tmp_path / "pii_vault.key"
    settings = Settings(var_dir=tmp_path, pii_vault_key_file=path)
    writer, reader = VaultCipher.from_settings(settings), VaultCipher.from_settings(settings)
    before = writer.seal("0417:req-1", TOKENS)
    ring, dropped = rotate(path, keep=2, ttl_s=86_400)
    assert dropped == [] and [k.key_id for k in ring.keys][1] == before.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and b'"key"' in path.read_bytes()
    # the reader has not re-read the ring yet: an entry under a key id it does not hold makes it re-read at once
    after = VaultCipher.from_settings(settings).seal("0417:req-2", TOKENS)
    assert after.key_id == ring.primary.key_id != before.key_id
    assert reader.open(after, "0417:req-2") == TOKENS and reader.open(before, "0417:req-1") == TOKENS


def test_a_rotation_keeps_a_key_that_sealed_entries_within_the_ttl_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "pii_vault.key"
    first = VaultCipher(load_key_ring(Settings(var_dir=tmp_path, pii_vault_key_file=path))).seal("0417:r", TOKENS)
    start = time.time()
    rotate(path, keep=2, ttl_s=3600, now=start)
    # an hour later the first key may still open entries sealed just before the first rotation: it stays
    ring, dropped = rotate(path, keep=2, ttl_s=7200, now=start + 3600)
    assert dropped == [] and len(ring.keys) == 3 and ring.get(first.key_id) is not None
    ring, dropped = rotate(path, keep=2, ttl_s=7200, now=start + 7300)  # its successor was made over 2 h ago
    assert dropped == [first.key_id] and len(ring.keys) == 3
    ring, dropped = rotate(path, keep=2, ttl_s=7200, now=start + 7400, force=True)
    assert len(dropped) == 2 and len(ring.keys) == 2  # forced: only the new primary and the one before
    with pytest.raises(VaultError, match="not in the key ring"):
        VaultCipher(ring).open(first, "0417:r")
    with pytest.raises(VaultError, match="keep at least 2"):
        rotate(path, keep=1, ttl_s=0)


def test_two_processes_creating_the_ring_at_once_end_with_the_same_ring(tmp_path: Path) -> None:
    """The file is linked into place whole: a second creator reads the first's ring instead of failing or
    replacing it (before, two processes starting together each could make their own key)."""
    path = tmp_path / "secrets" / "pii_vault.key"
    settings = Settings(var_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        rings = list(pool.map(lambda _: load_key_ring(settings), range(16)))
    assert len({ring.primary.key_id for ring in rings}) == 1 and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["pii_vault.key"]  # no temporary file left behind


def test_the_vault_command_shows_key_ids_and_rotates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHYARD_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert vault_main(["status"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert vault_main(["rotate"]) == 0
        rotated = json.loads(capsys.readouterr().out)
    finally:
        get_settings.cache_clear()
    assert [k["role"] for k in rotated["keys"]] == ["primary", "previous"]
    assert rotated["keys"][1]["key_id"] == status["keys"][0]["key_id"] and rotated["dropped"] == []
    ring = load_key_ring(Settings(var_dir=tmp_path))
    assert base64.b64encode(ring.primary.key).decode() not in json.dumps(rotated)
