"""Dead letters keep the bytes they could not process, and those bytes are a request as a till sent it: names,
e-mail addresses, phone numbers. Every process that writes a dead letter seals those bytes to the operator's
public key, so the `dlq.*` topics and ClickHouse's `dead_letters` hold only ciphertext; only whoever holds the
private key (`switchyard dead-letters show --open`) reads them again.

The scheme is an anonymous sealed box, as libsodium's `crypto_box_seal` and HPKE's base mode build it from the
same parts: an ephemeral X25519 key agreed with the recipient's public key, HKDF-SHA256 over the shared secret
(salted with both public keys), and AES-256-GCM with the dead letter's id as associated data, so sealed bytes
moved onto another dead letter do not open. Layout: ephemeral public key (32) | nonce (12) | ciphertext + tag.

The key pair lives beside the PII vault key ring: `dead_letters_x25519.pem` (private, 0600) and
`dead_letters_x25519.pub.pem`. A process that finds neither makes both (a laptop, compose's shared volume); a
deployment mounts only the public key into the processes and keeps the private key with the operator
(`python -m services.approvals.signing DIR` makes it with the other keys).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.runtime.signing_keys import publish_key_pair, secrets_dir
from services.settings import Settings

PRIVATE_KEY_FILE: Final = "dead_letters_x25519.pem"
PUBLIC_KEY_FILE: Final = "dead_letters_x25519.pub.pem"
INFO: Final = b"switchyard dead letter v1"
_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12


class SealingError(ValueError):
    """Sealed bytes that do not open: another key's, moved onto another dead letter, or altered."""


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=ephemeral + recipient, info=INFO).derive(shared)


def public_key_id(public_key: X25519PublicKey) -> str:
    """The name a sealed dead letter carries: a hash prefix of the public key that sealed it."""
    return hashlib.sha256(b"switchyard-dead-letters:" + _raw(public_key)).hexdigest()[:16]


class Sealer:
    """Seals to one public key; holds no secret."""

    def __init__(self, public_key: X25519PublicKey) -> None:
        self._recipient = _raw(public_key)
        self._public_key = public_key
        self.key_id = public_key_id(public_key)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = _raw(ephemeral.public_key())
        key = _key(ephemeral.exchange(self._public_key), ephemeral_public, self._recipient)
        nonce = os.urandom(_NONCE_BYTES)
        return ephemeral_public + nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


class Opener:
    """Opens what was sealed to its key pair's public key."""

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._private_key = private_key
        self._recipient = _raw(private_key.public_key())
        self.key_id = public_key_id(private_key.public_key())

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        if len(sealed) < _KEY_BYTES + _NONCE_BYTES + 16:
            raise SealingError("too short to be sealed bytes")
        ephemeral_public, nonce = sealed[:_KEY_BYTES], sealed[_KEY_BYTES : _KEY_BYTES + _NONCE_BYTES]
        shared = self._private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _key(shared, ephemeral_public, self._recipient)
        try:
            return AESGCM(key).decrypt(nonce, sealed[_KEY_BYTES + _NONCE_BYTES :], associated)
        except InvalidTag as error:
            raise SealingError("does not open: sealed to another key, moved onto another record, or altered") from error


def ensure_key_pair(directory: Path) -> None:
    """Makes the key pair in `directory` when neither half is there (replicas starting at once end with one)."""
    if not (directory / PUBLIC_KEY_FILE).is_file() and not (directory / PRIVATE_KEY_FILE).is_file():
        publish_key_pair(X25519PrivateKey.generate(), directory, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE)


def sealer_in(directory: Path) -> Sealer:
    """The sealer of the public key in `directory` (made with its private key when neither is there)."""
    ensure_key_pair(directory)
    public_path = directory / PUBLIC_KEY_FILE
    if public_path.is_file():
        loaded = serialization.load_pem_public_key(public_path.read_bytes())
        if not isinstance(loaded, X25519PublicKey):
            raise ValueError(f"{public_path} is not an X25519 public key: replace it")
        return Sealer(loaded)
    return Sealer(opener_in(directory)._private_key.public_key())  # only the private half: derive the public one


def opener_in(directory: Path) -> Opener:
    path = directory / PRIVATE_KEY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: dead letters open only with the private key that the operator keeps "
            "(SWITCHYARD_PII_VAULT_KEY_FILE names the folder's key ring)"
        )
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, X25519PrivateKey):
        raise ValueError(f"{path} is not an X25519 private key: replace it")
    return Opener(loaded)


def dead_letter_sealer(settings: Settings) -> Sealer:
    return sealer_in(secrets_dir(settings))


def dead_letter_opener(settings: Settings) -> Opener:
    return opener_in(secrets_dir(settings))
