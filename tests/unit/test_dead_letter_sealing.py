"""Dead letters keep a request as a till sent it, so their original bytes are sealed to the operator's key: only
the private key opens them, only as the dead letter they were sealed for, and a process holding just the public
key can seal but not open."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.runtime.deadletter import dead_letter, opened_original
from services.runtime.sealing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    Opener,
    SealingError,
    opener_in,
    sealer_in,
)

REQUEST = b"Refund for Maria Lopez, maria@example.com, +1 415 555 0142"


def letter(directory: Path, offset: int = 42) -> dict[str, object]:
    return dead_letter(
        stage="router", reason="bad", error=ValueError("x"), original=REQUEST, key=b"0417", topic="requests",
        partition=3, offset=offset, request_id="r-1", sealer=sealer_in(directory),
    )  # fmt: skip


def test_a_dead_letter_holds_only_ciphertext_and_the_private_key_opens_it(tmp_path: Path) -> None:
    sealed = letter(tmp_path)
    original = sealed["original"]
    assert isinstance(original, bytes) and b"Maria" not in original and b"example.com" not in original
    assert sealed["original_sealed_with"] == opener_in(tmp_path).key_id
    assert opened_original(sealed, opener_in(tmp_path)) == REQUEST
    assert stat.S_IMODE((tmp_path / PRIVATE_KEY_FILE).stat().st_mode) == 0o600


def test_sealed_bytes_open_only_as_their_own_dead_letter_and_only_with_their_key(tmp_path: Path) -> None:
    first, second = letter(tmp_path, offset=1), letter(tmp_path, offset=2)
    moved = {**second, "original": first["original"]}  # the first's ciphertext under the second's id
    with pytest.raises(SealingError, match="does not open"):
        opened_original(moved, opener_in(tmp_path))
    original = first["original"]
    assert isinstance(original, bytes)
    with pytest.raises(SealingError, match="does not open"):
        opened_original({**first, "original": original[:-1] + bytes([original[-1] ^ 1])}, opener_in(tmp_path))
    other = tmp_path / "other"
    sealer_in(other)
    with pytest.raises(SealingError, match="was sealed to key"):
        opened_original(first, opener_in(other))


def test_a_process_with_only_the_public_key_seals_but_cannot_open(tmp_path: Path) -> None:
    operator, process = tmp_path / "operator", tmp_path / "process"
    sealer_in(operator)
    process.mkdir()
    (process / PUBLIC_KEY_FILE).write_bytes((operator / PUBLIC_KEY_FILE).read_bytes())
    sealed = letter(process)
    assert not (process / PRIVATE_KEY_FILE).exists(), "a process holding the public key makes no key of its own"
    with pytest.raises(FileNotFoundError, match="private key that the operator keeps"):
        opener_in(process)
    assert opened_original(sealed, opener_in(operator)) == REQUEST


def test_dead_letters_from_before_sealing_read_as_they_are(tmp_path: Path) -> None:
    plain = dead_letter(
        stage="router", reason="bad", error=ValueError("x"), original=REQUEST, key=None, topic="requests",
        partition=0, offset=1, request_id=None,
    )  # fmt: skip
    assert plain["original_sealed_with"] == "" and opened_original(plain, opener_in_made(tmp_path)) == REQUEST


def opener_in_made(directory: Path) -> Opener:
    sealer_in(directory)
    return opener_in(directory)


def test_processes_that_start_at_once_all_seal_to_the_one_key_pair_that_won(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: sealer_in(tmp_path).key_id, range(16)))
    assert ids == {opener_in(tmp_path).key_id}
