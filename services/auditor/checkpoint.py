"""Signed checkpoints of the audit chains, as Certificate Transparency signs its tree heads: now and then the
auditor signs a chain's head (chain key, seq, hash, time) with an Ed25519 key only it holds and produces it to the
compacted topic `audit.checkpoints`, in the transaction that produces the record itself. The head hash covers
every record up to it, so a chain rewritten in ClickHouse and rehashed, or cut short, no longer matches a
checkpoint that anyone able to write ClickHouse cannot forge (`switchyard verify`).

The private key lives in var/secrets/auditor_ed25519.pem (0600, created by the auditor on first start); the public
key beside it (auditor_ed25519.pub.pem) is all a verifier needs. The signed message is the RFC 8785 canonical JSON
of the checkpoint's fields (signature excepted) with a context string, so it is checked in any language and a
signature over anything else (an approval, say) never passes for a checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.auditor.record import jcs
from services.runtime.signing_keys import key_id, read_or_create_private_key, read_public_key
from services.wire.models import AuditCheckpoint

CHECKPOINT_TOPIC: Final = "audit.checkpoints"
PRIVATE_KEY_FILE: Final = "auditor_ed25519.pem"
PUBLIC_KEY_FILE: Final = "auditor_ed25519.pub.pem"
SIGNATURE_CONTEXT: Final = "switchyard.audit.checkpoint.v1"


def signed_message(checkpoint: AuditCheckpoint) -> bytes:
    """What a checkpoint's signature covers: its fields but the signature, and the context, as RFC 8785 JSON."""
    return jcs({"context": SIGNATURE_CONTEXT, **checkpoint.model_dump(mode="json", exclude={"signature"})})


class CheckpointSigner:
    """The auditor's signing key, read from `secrets_dir` or created there (with its public key)."""

    def __init__(self, secrets_dir: Path) -> None:
        self._key = read_or_create_private_key(secrets_dir, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE)
        self.key_id = key_id(self._key.public_key())

    def sign(self, chain_key: str, seq: int, head_hash: str, checkpointed_at: int) -> AuditCheckpoint:
        unsigned = AuditCheckpoint(
            chain_key=chain_key,
            seq=seq,
            hash=head_hash,
            checkpointed_at=checkpointed_at,
            key_id=self.key_id,
            signature="",
        )
        signature = base64.b64encode(self._key.sign(signed_message(unsigned))).decode()
        return unsigned.model_copy(update={"signature": signature})


class CheckpointVerifier:
    """Checks checkpoints against the auditor's public key."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self.key_id = key_id(public_key)

    @classmethod
    def from_file(cls, path: Path) -> CheckpointVerifier:
        return cls(read_public_key(path))

    def problem(self, checkpoint: AuditCheckpoint) -> str | None:
        """Why the checkpoint is not the auditor's, or None when its signature verifies."""
        if checkpoint.key_id != self.key_id:
            return f"signed by key {checkpoint.key_id!r}, not the auditor's key {self.key_id!r}"
        try:
            self._key.verify(base64.b64decode(checkpoint.signature, validate=True), signed_message(checkpoint))
        except (InvalidSignature, binascii.Error, ValueError, rfc8785.CanonicalizationError):
            return "the signature does not verify (forged, or altered after signing)"
        return None


class CheckpointSchedule:
    """When the auditor signs a chain's head: on the chain's first record after an assignment (so a new owner
    anchors what it took over), then every `every_records` records, or on the first record `every_s` or more
    after the chain's last checkpoint. A head is signed only when a record is chained: the records after a
    chain's last checkpoint are anchored by its next one (verify counts them)."""

    def __init__(self, every_records: int, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_records, self.every_s, self.clock = every_records, every_s, clock
        self.last: dict[str, tuple[int, float]] = {}  # chain key: (seq, clock) of its last checkpoint

    def reset(self) -> None:
        self.last.clear()

    def due(self, chain_key: str, seq: int) -> bool:
        """Whether this record's head is to be signed; if so it counts as the chain's last checkpoint."""
        now = self.clock()
        last = self.last.get(chain_key)
        if last is not None and seq - last[0] < self.every_records and now - last[1] < self.every_s:
            return False
        self.last[chain_key] = (seq, now)
        return True
