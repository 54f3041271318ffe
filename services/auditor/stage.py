"""First audit logic: each record is hash-chained per store (its hash covers the previous one and the whole
decision), so a removed or altered record breaks the chain. The chain head lives in memory here: a restarted
auditor starts a new chain segment (prev_hash empty); recovering the head from `audited` and the `verify` and
`replay` commands come with the audit issue."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, ClassVar

from services.runtime.models import Answered, AuditInfo
from services.runtime.stage import Stage, now_us


def decision_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """sha256 over the previous hash and the canonical JSON of the decision (without its timings, which are
    measurements, not decisions)."""
    decision = {k: v for k, v in record.items() if k != "timings"}
    canonical = json.dumps(decision, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical.encode()).hexdigest()


class Auditor(Stage[Answered, AuditInfo]):
    name: ClassVar[str] = "auditor"
    input_topic: ClassVar[str] = "answered"
    input_record: ClassVar[str] = "Answered"
    input_model = Answered
    output_topic: ClassVar[str] = "audited"
    output_record: ClassVar[str] = "Audited"
    section: ClassVar[str] = "audit"

    def __init__(self) -> None:
        self.chain_heads: dict[str, str] = {}

    async def decide(self, record: Answered) -> AuditInfo:
        chain_key = record.request.store_id
        prev_hash = self.chain_heads.get(chain_key, "")
        digest = decision_hash(prev_hash, record.model_dump(mode="json"))
        self.chain_heads[chain_key] = digest
        return AuditInfo(
            audit_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:audit:{record.request.request_id}")),
            chain_key=chain_key,
            prev_hash=prev_hash,
            hash=digest,
            recorded_at=now_us(),
        )
