"""Restore at the edge: an answer leaves Switchyard to the store that asked with the PII tokens of the types the
store may see (policies/privacy.yaml `store`) put back, from the governor's sealed vault entry; every record,
table and audit chain inside Switchyard keeps the answer tokenised. Used by the HTTP gateway's responses and by
whatever else hands answers to a store (the POS reader)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from services.answerer.guard import restore_for_store
from services.policy.engine import PolicyWatcher
from services.settings import Settings
from services.shared.vault import VaultCipher, VaultError, vault_key_for
from services.wire.models import PiiVaultEntry

log = logging.getLogger("switchyard.gateway")


class AnswerRestorer:
    """Opens a record's sealed vault entry with the key ring and restores its answer for the store. Without an
    entry that opens (nothing tokenised, expired, erased, another request's), tokens become neutral words."""

    def __init__(self, cipher: VaultCipher, policy: PolicyWatcher) -> None:
        self.cipher, self.policy = cipher, policy
        policy.load()  # an invalid policy stops the edge at start-up, naming the file and the rule
        self.restored_count = 0
        self.unopened = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerRestorer:
        return cls(VaultCipher.from_settings(settings), PolicyWatcher(settings.policies))

    @property
    def visible(self) -> frozenset[str]:
        return self.policy.current().visible_types("store")

    def tokens(self, record: Mapping[str, Any]) -> dict[str, str]:
        """The token mapping of the record's sealed entry, opened as this store's request (never the name the
        entry carries); empty when there is none or it does not open."""
        sealed = record.get("pii_vault")
        if not sealed:
            return {}
        request = record["request"]
        try:
            entry = sealed if isinstance(sealed, PiiVaultEntry) else PiiVaultEntry.model_validate(sealed)
            return self.cipher.open(entry, vault_key_for(request["store_id"], request["request_id"]))
        except (VaultError, ValidationError) as error:
            self.unopened += 1
            extra = {"request_id": request["request_id"], "error": str(error)}
            log.warning("PII vault entry not opened at the edge", extra=extra)
            return {}

    def restored(self, record: Mapping[str, Any], tokens: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A copy of an answered or audited record (Avro's dict form) with its answer text restored for the store,
        and without the sealed entry: what the edge keeps holds the store's values, not a key to others."""
        mapping = self.tokens(record) if tokens is None else tokens
        answer = dict(record["answer"])
        answer["text"] = restore_for_store(answer["text"], mapping, self.visible)
        self.restored_count += 1
        return {**{k: v for k, v in record.items() if k != "pii_vault"}, "answer": answer}
