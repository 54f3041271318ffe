"""Signed approvals: the approvals service signs each request it releases (Ed25519, a key it alone holds), and the
policy trusts a manager's approval only where that signature verifies. An `approved_by` attribute a client sets
itself is a claim: it can tighten a decision but never loosen one.

The private key lives in var/secrets/approvals_ed25519.pem (0600, created by the approvals service on first
start); the public key beside it (approvals_ed25519.pub.pem) is all the governor, stitcher and answerer read. The
signed message is canonical JSON (sorted keys, no spaces) of the released request's id, store, text digest and
the approval itself, so a signature cannot be replayed onto another request, store or text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.runtime.signing_keys import read_or_create_private_key, read_public_key
from services.wire.models import Request

log = logging.getLogger("switchyard.approvals")

SIGNATURE_ATTRIBUTE: Final = "approval_signature"
SIGNED_ATTRIBUTES: Final = ("approval_for", "approved_by", "approval_feedback_id")
PRIVATE_KEY_FILE: Final = "approvals_ed25519.pem"
PUBLIC_KEY_FILE: Final = "approvals_ed25519.pub.pem"


def signed_message(request: Request) -> bytes:
    """What a signature covers: the released request's id, store and text digest, and the approval attributes."""
    fields = {
        "request_id": request.request_id,
        "store_id": request.store_id,
        "text_sha256": hashlib.sha256(request.text.encode()).hexdigest(),
        **{name: request.attributes.get(name, "") for name in SIGNED_ATTRIBUTES},
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ApprovalSigner:
    """The approvals service's signing key, read from `secrets_dir` or created there (with its public key)."""

    def __init__(self, secrets_dir: Path) -> None:
        self._key = _read_or_create(secrets_dir)

    def sign(self, request: Request) -> Request:
        """The request with its approval signature attribute set."""
        signature = base64.b64encode(self._key.sign(signed_message(request))).decode()
        return request.model_copy(update={"attributes": {**request.attributes, SIGNATURE_ATTRIBUTE: signature}})


class ApprovalVerifier:
    """Checks approval signatures with the public key in `secrets_dir`, read when first needed (the approvals
    service may start after the governor); without it no approval verifies."""

    def __init__(self, secrets_dir: Path) -> None:
        self.path = secrets_dir / PUBLIC_KEY_FILE
        self._key: Ed25519PublicKey | None = None

    def verifies(self, request: Request) -> bool:
        signature = request.attributes.get(SIGNATURE_ATTRIBUTE, "")
        if not signature or not request.attributes.get("approved_by") or not request.attributes.get("approval_for"):
            return False
        key = self._public_key()
        if key is None:
            return False
        try:
            key.verify(base64.b64decode(signature, validate=True), signed_message(request))
        except (InvalidSignature, binascii.Error, ValueError):
            log.warning("approval signature does not verify", extra={"request_id": request.request_id})
            return False
        return True

    def _public_key(self) -> Ed25519PublicKey | None:
        if self._key is None and self.path.is_file():
            self._key = read_public_key(self.path)
        return self._key


def _read_or_create(directory: Path) -> Ed25519PrivateKey:
    return read_or_create_private_key(directory, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE)


def main(argv: list[str] | None = None) -> int:
    """`python -m services.approvals.signing DIR`: the keys a deployment mounts (services/export/deploy.py), made
    once by the operator: the approvals key pair, the PII vault key, the auditor's checkpoint key pair and the
    dead-letter key pair, in DIR. The dead letters' private key is the operator's: no pod mounts it."""
    import sys

    from services.auditor import checkpoint
    from services.runtime import sealing
    from services.shared.vault import _read_or_create as vault_key

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.approvals.signing DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    _read_or_create(directory)
    vault_key(directory / "pii_vault.key")
    read_or_create_private_key(directory, checkpoint.PRIVATE_KEY_FILE, checkpoint.PUBLIC_KEY_FILE)
    sealing.ensure_key_pair(directory)
    auditor_keys = f"{checkpoint.PRIVATE_KEY_FILE}, {checkpoint.PUBLIC_KEY_FILE}"
    dead_letter_keys = f"{sealing.PRIVATE_KEY_FILE} (keep it: no pod mounts it), {sealing.PUBLIC_KEY_FILE}"
    print(
        f"keys in {directory}: {PRIVATE_KEY_FILE}, {PUBLIC_KEY_FILE}, pii_vault.key, {auditor_keys}, {dead_letter_keys}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
