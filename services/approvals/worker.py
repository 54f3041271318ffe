"""The approvals process: consumes `feedback`, and for each manager's decision on an escalated request writes the
request's new state to `approvals.state` and, for an approval, publishes the released request to `requests`, in
one Kafka transaction with the consumed offsets (exactly once). Each consumed batch is decided first, every look-up
included, and only then is its transaction begun: a slow ClickHouse holds no transaction open.

What it holds, each read from the beginning of its compacted topic before the first decision and followed live:
the staff table (`ref.staff`: who may decide for which store, services.approvals.staff) and the decided states
(`approvals.state`, services.approvals.state). After a SIGKILL the restarted process reads back every state it
committed, so an approved request is never released twice and a rejected or expired one never at all.

Where the original comes from: ClickHouse switchyard.audit_records, by store_id and request_id (the store the
approval names: clients choose their request ids, so another store may hold the same one). It is the system of
record for every answer the chain released (kept seven years, indexed, already holding the verdict and the findings that
show the request was escalated), and a manager decides minutes or days later, long after the record is there.
Reading the `audited` topic instead would mean keeping a table of every audited record in this process.
The record there is the PII-tokenised view: the request's own text comes back from the encrypted `pii.vault`
entry the governor wrote for it (as the answerer restores an answer), and while that entry lives (its TTL) the
released request reads as the original did; after it expired, the released request keeps the tokens, never guesses.

Idempotent: the released id is deterministic (uuid5 of the store and the original id), the feedback of one
request lands on one partition in order, and an approval of a request whose state is already approved, or whose
released id ClickHouse already holds for that store (released before `approvals.state` existed), releases nothing.
A decision that cannot count (unknown request, not escalated, a decider the staff table does not know, inactive,
no manager or not one of the store's, the person who asked, expired, after a rejection) goes to `dlq.approvals`
with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from services.approvals.release import approval_store, parse_record
from services.approvals.signing import ApprovalSigner
from services.approvals.staff import staff_table
from services.approvals.state import STATE_TOPIC, decide_approval, state_key
from services.infra.clickhouse import get_client
from services.runtime.deadletter import dead_letter_for
from services.runtime.kafka_clients import aiokafka_config
from services.runtime.observability import StageMetrics, serve_http
from services.runtime.reference import ReferenceTable
from services.runtime.request_key import store_request_key
from services.runtime.sealing import Sealer, dead_letter_sealer
from services.runtime.signing_keys import secrets_dir
from services.settings import Settings, get_settings
from services.shared.pii import TOKEN, restore
from services.shared.vault import VAULT_TOPIC, VaultCipher, VaultError, VaultTable, vault_key_for
from services.wire.codec import AvroCodec
from services.wire.models import Approval, Feedback, FeedbackKind, Request, Staff
from services.wire.schema_registry import SchemaRegistry

log = logging.getLogger("switchyard.approvals")

NAME = "approvals"
LOOKUP_ATTEMPTS = 6
GROUP_ID = f"switchyard-{NAME}"


@dataclass
class ApprovalsConfig:
    replica: str = "0"
    http_host: str = "127.0.0.1"
    http_port: int = 0
    max_batch: int = 100


class AuditLookup:
    """The audit record of one store's request, from ClickHouse (the newest when the writer stored it twice)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None

    def _query(self, sql: str, store_id: str, request_id: str) -> list[Any]:
        """Retried while ClickHouse does not answer (about 30 s in all); then the error stops the process before
        its batch's transaction begins (ApprovalsWorker.process_batch), so nothing of the batch is committed and
        the feedback is decided again after a restart."""
        delay = 0.5
        for attempt in range(LOOKUP_ATTEMPTS):
            try:
                if self._client is None:
                    self._client = get_client(self.settings)
                parameters = {"store": store_id, "id": request_id}
                return list(self._client.query(sql, parameters=parameters).result_rows)
            except OperationalError as error:
                if attempt == LOOKUP_ATTEMPTS - 1:
                    raise
                log.warning("clickhouse unavailable, retrying", extra={"error": str(error), "retry_in_s": delay})
                self._client = None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def record(self, store_id: str, request_id: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT record FROM audit_records WHERE store_id = {store:String} AND request_id = {id:String}"
            " ORDER BY recorded_at DESC LIMIT 1",
            store_id,
            request_id,
        )
        return parse_record(rows[0][0]) if rows else None

    def exists(self, store_id: str, request_id: str) -> bool:
        sql = "SELECT 1 FROM audit_records WHERE store_id = {store:String} AND request_id = {id:String} LIMIT 1"
        return bool(self._query(sql, store_id, request_id))


@dataclass
class ApprovalsWorker:
    settings: Settings
    config: ApprovalsConfig
    lookup: AuditLookup
    codec: AvroCodec
    vault: VaultTable | None = None
    # signs each released request: the policy trusts only an approval whose signature verifies
    signer: ApprovalSigner | None = None
    # seals dead letters' original bytes (a manager's note, a request) to the operator's key; None: kept in clear
    sealer: Sealer | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: StageMetrics = field(default_factory=lambda: StageMetrics(NAME))
    _consumer: AIOKafkaConsumer | None = None
    # who may decide for which store (ref.staff), and each decided request's state (approvals.state)
    staff: ReferenceTable[Staff] = field(init=False)
    states: ReferenceTable[Approval] = field(init=False)

    def __post_init__(self) -> None:
        self.staff = staff_table(self.settings, self.codec)
        self.states = state_table(self.settings, self.codec)

    @property
    def group_id(self) -> str:
        return self.settings.topic(GROUP_ID)  # prefixed like the topics, so test chains never share a group

    @property
    def tables(self) -> tuple[ReferenceTable[Staff], ReferenceTable[Approval]]:
        return self.staff, self.states

    async def health(self) -> tuple[bool, str]:
        failed = [f"{t.topic}: {t.error}" for t in self.tables if t.error]
        if failed:
            return False, f"tables stopped: {'; '.join(failed)}"
        if self._consumer is None:
            return False, "starting"
        assigned = len(self._consumer.assignment())
        return True, f"assigned {assigned} partitions; {len(self.staff)} staff, {len(self.states)} decided approvals"

    async def decide(self, message: ConsumerRecord[bytes, bytes]) -> list[tuple[str, str, bytes]]:
        """(topic, key, value) records to produce for one feedback record: the request's new state, the released
        request, a dead letter; none for feedback that is not a decision or changes nothing."""
        try:
            _, value = self.codec.decode(message.value or b"", "Feedback")
            feedback = Feedback.model_validate(value)
        except Exception as error:  # anything undecodable is dead-lettered; the rest goes on
            return [self._dead_letter(message, error, None)]
        store = approval_store(feedback)
        current = self.states.get(store_request_key(store, feedback.request_id))
        audited = None
        if feedback.kind == FeedbackKind.ESCALATION_OUTCOME and store and current is None:
            audited = await asyncio.to_thread(self.lookup.record, store, feedback.request_id)
        decision = decide_approval(
            feedback,
            audited,
            current=current,
            staff=self.staff.rows,
            # the later of its own time and its Kafka record's: backdating the feedback alone cannot revive a request
            decided_at=max(feedback.created_at, message.timestamp),
            ttl_ms=self.settings.approval_ttl_s * 1000,
        )
        out: list[tuple[str, str, bytes]] = []
        if decision.state is not None:
            self.states.put(decision.state)  # the next record of this batch sees it before the transaction commits
            encoded_state = self.codec.encode("Approval", decision.state.model_dump())
            out.append((self.settings.topic(STATE_TOPIC), state_key(decision.state), encoded_state))
        if decision.refused is not None:
            return [*out, self._dead_letter(message, decision.refused, feedback.request_id)]
        if decision.release is None:
            if feedback.outcome:
                log.info("not released", extra={"request_id": feedback.request_id, "outcome": feedback.outcome})
            return out
        request = await self._restored(decision.release, audited)
        if self.signer is not None:
            request = self.signer.sign(request)
        if await asyncio.to_thread(self.lookup.exists, request.store_id, request.request_id):
            log.info("already released", extra={"request_id": feedback.request_id, "released": request.request_id})
            return out
        log.info(
            "released",
            extra={"request_id": feedback.request_id, "released": request.request_id, "approved_by": feedback.author},
        )
        self.metrics.records_out.inc()
        encoded = self.codec.encode("Request", request.model_dump())
        # keyed by store as every producer of requests: the store's chain stays on one auditor (request_key.py)
        return [*out, (self.settings.topic("requests"), request.store_id, encoded)]

    async def _restored(self, request: Request, audited: dict[str, Any] | None) -> Request:
        """The request with its text restored from the governor's vault entry for the original, when it lives: the
        entry of this store's request, named as the governor names it, not as the audit record says."""
        original = request.attributes.get("approval_for", "")
        sealed = ((audited or {}).get("governance") or {}).get("vault_key")
        if not sealed or not original or self.vault is None or not TOKEN.search(request.text):
            return request
        try:
            tokens = await self.vault.mapping(vault_key_for(request.store_id, original), wait_s=0.5)
        except VaultError as error:
            log.warning("PII vault entry unavailable: released with tokens", extra={"error": str(error)})
            return request
        return request.model_copy(update={"text": restore(request.text, tokens)})

    async def process_batch(
        self, producer: AIOKafkaProducer, batch: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Decides every record of one consumed batch, then produces what it released and commits its offsets in
        one transaction.

        Every look-up that can wait (ClickHouse, with its retries; the vault entry) is awaited before the
        transaction begins, so it holds only the produce calls and the offsets: a slow or absent ClickHouse would
        otherwise keep it open past transaction.timeout.ms (aborted by the broker, this producer fenced, and the
        partitions it wrote blocked for read_committed readers meanwhile). A look-up that fails past its retries
        raises before anything is begun: no offset of the batch is committed, and it is decided again after the
        restart. It is not dead-lettered: an unreachable ClickHouse says nothing about the approval, which must
        not be lost.
        """
        outgoing: list[tuple[str, str, bytes]] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, messages in batch.items():
            for message in messages:
                self.metrics.records_in.inc()
                outgoing.extend(await self.decide(message))
            offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "")
        async with producer.transaction():
            for topic, key, value in outgoing:
                await producer.send(topic, key=key.encode() or None, value=value)
            await producer.send_offsets_to_transaction(offsets, self.group_id)

    async def _load_tables(self) -> None:
        """Every staff row and decided state up to the topics' ends, before the first decision."""
        for table in self.tables:
            await table.start()
        while not all(table.ready.is_set() for table in self.tables):
            failed = [f"{t.topic}: {t.error}" for t in self.tables if t.error]
            if failed:
                raise RuntimeError(f"a table of the approvals process cannot load: {'; '.join(failed)}")
            await asyncio.sleep(0.05)

    def _dead_letter(
        self, message: ConsumerRecord[bytes, bytes], error: Exception, request_id: str | None
    ) -> tuple[str, str, bytes]:
        reason = str(error) or type(error).__name__
        self.metrics.dead_letter(type(error).__name__)
        log.warning("dead-lettered", extra={"stage": NAME, "request_id": request_id, "reason": reason})
        record = dead_letter_for(
            message, stage=NAME, reason=reason, error=error, request_id=request_id, sealer=self.sealer
        )
        return self.settings.topic(f"dlq.{NAME}"), request_id or "", self.codec.encode("DeadLetter", record)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **aiokafka_config(
                self.settings,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            )
        )
        producer = AIOKafkaProducer(
            **aiokafka_config(
                self.settings,
                transactional_id=f"{self.group_id}-{self.config.replica}",
                enable_idempotence=True,
                acks="all",
            )
        )
        await self._load_tables()
        if self.vault is not None:
            await self.vault.start()
        await producer.start()
        await consumer.start()
        # decisions of feedback partitions another replica owned until now: its committed states first
        consumer.subscribe([self.settings.topic("feedback")], listener=StatesFirst(self.states))
        self._consumer = consumer
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        log.info("stage started", extra={"stage": NAME, "replica": self.config.replica})
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.config.max_batch)
                if batch:
                    await self.process_batch(producer, batch)
        finally:
            await consumer.stop()
            await producer.stop()
            await runner.cleanup()
            if self.vault is not None:
                await self.vault.stop()
            for table in self.tables:
                await table.stop()
            log.info("stage stopped", extra={"stage": NAME})


class StatesFirst(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """At each assignment, before any feedback of the new partitions is decided: the state table catches up with
    every state committed so far. A replica taking over a partition from another then knows each decision the
    other committed (a rejection stays final, nothing is released twice) instead of lagging it by a few records."""

    def __init__(self, states: ReferenceTable[Approval]) -> None:
        self.states = states

    async def on_partitions_revoked(self, revoked: object) -> None:
        return None

    async def on_partitions_assigned(self, assigned: object) -> None:
        await self.states.caught_up()


def state_table(settings: Settings, codec: AvroCodec) -> ReferenceTable[Approval]:
    return ReferenceTable(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic(STATE_TOPIC),
        record="Approval",
        model=Approval,
        codec=codec,
        key_of=state_key,
    )


async def run_approvals(config: ApprovalsConfig, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    vault = VaultTable(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic(VAULT_TOPIC),
        codec=codec,
        cipher=VaultCipher.from_settings(settings),
    )
    signer = ApprovalSigner(secrets_dir(settings))
    worker = ApprovalsWorker(
        settings, config, AuditLookup(settings), codec, vault=vault, signer=signer, sealer=dead_letter_sealer(settings)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stopping.set)
    await worker.run()
