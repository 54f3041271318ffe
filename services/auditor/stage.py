"""The auditor: appends each answered request to its store's tamper-evident hash chain (services.auditor.record)
and releases it on `audited`. Chains are per store (namespaced by the topic prefix, so isolated chains on one
cluster never mix); seq counts from 1. The chain heads are recovered whenever partitions are assigned
(services.auditor.chain), so a restart or a rebalance continues each chain where it ended. Now and then a
chain's head is signed and produced to `audit.checkpoints` beside the record (services.auditor.checkpoint)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import ClassVar

import rfc8785

from services.auditor.chain import ChainHead, ChainHeadStore
from services.auditor.checkpoint import CHECKPOINT_TOPIC, CheckpointSchedule, CheckpointSigner
from services.auditor.record import JCS_SCHEME, chain_hash, chain_payload, tokenised
from services.runtime.faults import RejectedRecord, TransientError
from services.runtime.signing_keys import secrets_dir
from services.runtime.stage import SideRecord, Stage, now_us
from services.settings import Settings, get_settings
from services.wire.codec import AvroCodec
from services.wire.models import Answered, AuditInfo
from services.wire.schema_registry import SchemaRegistry

log = logging.getLogger("switchyard.auditor")


class Auditor(Stage[Answered, AuditInfo]):
    name: ClassVar[str] = "auditor"
    input_topic: ClassVar[str] = "answered"
    input_record: ClassVar[str] = "Answered"
    input_model = Answered
    output_topic: ClassVar[str] = "audited"
    output_record: ClassVar[str] = "Audited"
    section: ClassVar[str] = "audit"
    # decide never awaits, so its whole time is hash-chaining work
    work_category: ClassVar[str] = "audit"

    def __init__(
        self,
        settings: Settings | None = None,
        heads: ChainHeadStore | None = None,
        recovery_attempts: int = 5,
        signer: CheckpointSigner | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.chain_heads: dict[str, ChainHead] = {}
        self.head_store = heads
        self.recovery_attempts = recovery_attempts
        self.recovery_error: Exception | None = None
        self.signer = signer
        self.checkpoints = CheckpointSchedule(self.settings.audit_checkpoint_records, self.settings.audit_checkpoint_s)

    async def start(self) -> None:
        # the key is read (or made) before the first record, so a bad key file stops the auditor at once
        if self.signer is None:
            self.signer = CheckpointSigner(secrets_dir(self.settings))

    def chain_key(self, store_id: str) -> str:
        return f"{self.settings.topic_prefix}{store_id}"

    async def on_assigned(self, partitions: list[int]) -> None:
        """Before any record of the new assignment is decided: continue every chain where it ended. When the heads
        cannot be recovered the auditor fails closed: it decides nothing (records are retried, /healthz says why)
        rather than start a chain anew, until a later assignment recovers them."""
        if self.head_store is None:
            self.head_store = ChainHeadStore(self.settings, AvroCodec(SchemaRegistry.load(self.settings.schemas_dir)))
        self.chain_heads, self.recovery_error = {}, None
        self.checkpoints.reset()
        for attempt in range(self.recovery_attempts):
            try:
                recovery = await self.head_store.recover(partitions)
                break
            except Exception as error:  # Kafka unreachable: back off and try again, then fail closed
                self.recovery_error = error
                log.warning("chain head recovery failed", extra={"attempt": attempt + 1, "error": repr(error)})
                if attempt + 1 < self.recovery_attempts:
                    await asyncio.sleep(min(0.5 * 2**attempt, 5.0))
        else:
            return
        self.chain_heads, self.recovery_error = recovery.heads, None
        log.info(
            "audit chain heads recovered",
            extra={
                "partitions": partitions,
                "chains": len(recovery.heads),
                "from_clickhouse": recovery.from_clickhouse,
                "records_read_from_topic": recovery.from_topic,
            },
        )

    async def healthy(self) -> tuple[bool, str]:
        if self.recovery_error is not None:
            return False, f"audit chain heads not recovered: {self.recovery_error!r}"
        return True, f"{len(self.chain_heads)} audit chains continued"

    async def decide(self, record: Answered) -> AuditInfo:
        # No await in here: records of one partition are decided in offset order, one at a time.
        if self.recovery_error is not None:
            raise TransientError(
                f"audit chain heads not recovered, nothing is chained: {self.recovery_error!r}",
                request_id=record.request.request_id,
            )
        chain_key = self.chain_key(record.request.store_id)
        head = self.chain_heads.get(chain_key)
        prev_hash, seq = (head.hash, head.seq + 1) if head else ("", 1)
        audit = {
            "audit_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:audit:{record.request.request_id}")),
            "chain_key": chain_key,
            "prev_hash": prev_hash,
            "recorded_at": now_us(),
            "seq": seq,
            "hash_scheme": JCS_SCHEME,
        }
        audit_record = tokenised(record.model_dump(mode="json", exclude={"pii_vault"}))
        audit_record["audit"] = audit
        try:
            digest = chain_hash(prev_hash, chain_payload(audit_record))
        except rfc8785.CanonicalizationError as error:
            reason = f"not auditable as RFC 8785 JSON: {error}"
            raise RejectedRecord(reason, request_id=record.request.request_id) from error
        self.chain_heads[chain_key] = ChainHead(seq, digest)
        return AuditInfo(hash=digest, **audit)

    def side_records(self, record: Answered, section: AuditInfo) -> list[SideRecord]:
        """The chain's signed head, when one is due (called right after decide, in the record's transaction)."""
        if not self.checkpoints.due(section.chain_key, section.seq):
            return []
        if self.signer is None:  # start() was not run (a bench, a test): sign with the deployment's key
            self.signer = CheckpointSigner(secrets_dir(self.settings))
        checkpoint = self.signer.sign(section.chain_key, section.seq, section.hash, now_us())
        return [SideRecord(CHECKPOINT_TOPIC, "AuditCheckpoint", section.chain_key, checkpoint.model_dump())]
