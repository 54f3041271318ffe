"""Key files of the processes that sign (Ed25519: the approvals service, the auditor) or seal (X25519: dead
letters): a private key that only its owner reads (PEM, PKCS#8, 0600, created on first start) and the public key
beside it, which is all a verifier or a sealer reads."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.settings import Settings

log = logging.getLogger("switchyard.keys")


def secrets_dir(settings: Settings) -> Path:
    """Where the signing keys live: the folder of the PII vault key (var/secrets by default)."""
    vault_key = settings.pii_vault_key_file
    return vault_key.parent if vault_key is not None else settings.var_dir / "secrets"


def read_or_create_private_key(directory: Path, private_file: str, public_file: str) -> Ed25519PrivateKey:
    """The private key in `directory/private_file`; created there (0600, with its public key in `public_file`)
    when there is none. Replicas that start at once on a shared volume all end with the one key that won."""
    path = directory / private_file
    if not path.is_file():
        publish_key_pair(Ed25519PrivateKey.generate(), directory, private_file, public_file)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key: replace it")
    return loaded


def publish_key_pair(
    key: Ed25519PrivateKey | X25519PrivateKey, directory: Path, private_file: str, public_file: str
) -> None:
    """Writes a new key pair (private PKCS#8 PEM 0600, public SubjectPublicKeyInfo PEM) unless another process
    published its private key first: then theirs stands, and so does its public key."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if publish(directory / private_file, private, 0o600):
        public = key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
        publish(directory / public_file, public, 0o644, replace=True)
        log.info("key created", extra={"path": str(directory / private_file)})


def publish(path: Path, content: bytes, mode: int, replace: bool = False) -> bool:
    """Writes `path` whole or not at all: a reader never sees half a key. False when another process published
    it first (unless `replace`)."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, a name of its own
    staged = Path(name)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    staged.chmod(mode)
    try:
        if replace:
            os.replace(staged, path)
            return True
        os.link(staged, path)  # fails when the name exists: the first key linked wins
        return True
    except FileExistsError:
        return False
    finally:
        staged.unlink(missing_ok=True)


def read_public_key(path: Path) -> Ed25519PublicKey:
    loaded = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key: replace it")
    return loaded


def key_id(public_key: Ed25519PublicKey) -> str:
    """A public key's name in what it signed: the first 16 hex digits of sha256 over its SubjectPublicKeyInfo
    (DER), as Certificate Transparency names a log's key by the hash of the same bytes."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]
