"""Pydantic models of the Switchyard wire contract, one per Avro record, to validate input.

Generated from schemas/ by `python -m services.wire.gen_models`; do not edit.
Timestamps are int, as on the wire; the alias names the unit. model_dump() gives what AvroCodec.encode takes.
"""


from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

AvroInt = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
AvroLong = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
TimestampMillis = Annotated[
    int, Field(ge=-(2**63), le=2**63 - 1, description="milliseconds since the Unix epoch, UTC")
]
TimestampMicros = Annotated[
    int, Field(ge=-(2**63), le=2**63 - 1, description="microseconds since the Unix epoch, UTC")
]


class Finding(BaseModel):
    """One governance rule that matched a text."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str = Field(description="Rule that matched.")
    rule_version: str = Field(description="Version of the rule set the rule came from.")
    kind: str = Field(description="What was found, e.g. pii.card_number, policy.discount_limit.")
    action: str = Field(description="What the rule did: allow, mask, block or escalate.")
    detail: str = Field(description="Why the rule matched, without repeating the sensitive text.")
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="The facts the rule was evaluated on (intent, amounts, tier, ...), without sensitive text.",
    )


class Answer(BaseModel):
    """The model's answer and what it cost."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        description="Answer text, PII tokenised: tokens of the types the store may see are kept as tokens and restored only where the answer leaves Switchyard (the gateway's responses), other PII is in neutral words.",
    )
    provider: str = Field(description="Provider that produced the answer.")
    model: str = Field(description="Model name at the provider.")
    model_version: str = Field(description="Model version or snapshot at the provider.")
    prompt_template_version: str = Field(description="Version of the prompt template used.")
    prompt_hash: str = Field(
        description="Hash of the exact prompt sent, so it can be matched without storing it twice.",
    )
    tokens_in: AvroInt = Field(description="Prompt tokens billed.")
    tokens_out: AvroInt = Field(description="Completion tokens billed.")
    cost_usd: float = Field(description="Cost of the call in US dollars.")
    latency_ms: float = Field(description="Provider latency in milliseconds.")
    failover: list[str] = Field(
        default_factory=list,
        description="The provider chain as tried, in order: each that failed with why (\"primary: timeout\"), then the one that answered; empty when the first answered.",
    )
    output_findings: list[Finding] = Field(
        default_factory=list,
        description="Governance rules that matched the answer text.",
    )


class Channel(enum.StrEnum):
    """Where the request was typed or spoken."""

    POS = "POS"
    STORE_APP = "STORE_APP"
    KIOSK = "KIOSK"
    WEB = "WEB"
    CALL_CENTER = "CALL_CENTER"
    OTHER = "OTHER"


class Request(BaseModel):
    """A retail AI request as a point-of-sale system, app, kiosk or web client sends it; the head of every chain."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        description="UUID text identifying this request end to end; the Kafka key of every stage record.",
    )
    store_id: str = Field(description="Store the request comes from, as in the Store reference data.")
    terminal_id: str = Field(description="Till, device or session inside the store that sent the request.")
    customer_id: str | None = Field(
        default=None,
        description="Loyalty customer, when the customer identified themselves; null otherwise.",
    )
    channel: Channel = Field(
        description="Channel the request arrived on; readers that do not know a newer symbol read OTHER.",
    )
    locale: str = Field(default="en-US", description="BCP 47 language tag the answer should be written in.")
    text: str = Field(
        description="The request as the user wrote or said it, unredacted, on requests, routed and stitched; from the governor on (governed, answered, audited) the same text with PII replaced by the governor's tokens (as governance.redacted_text).",
    )
    created_at: TimestampMillis = Field(
        description="When the client created the request: milliseconds since the Unix epoch, UTC.",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form client metadata (app version, basket id); not interpreted by the chain.",
    )


class RouteKind(enum.StrEnum):
    """What kind of handler serves the route."""

    WORKFLOW = "WORKFLOW"
    SMALL_MODEL = "SMALL_MODEL"
    LARGE_MODEL = "LARGE_MODEL"
    CUSTOM_MODEL = "CUSTOM_MODEL"


class RouteDecision(BaseModel):
    """Where the router sent a request and why."""

    model_config = ConfigDict(extra="forbid")

    route_id: str = Field(description="Route table entry that matched.")
    kind: RouteKind = Field(
        description="Handler kind; readers that do not know a newer symbol read LARGE_MODEL, the general fallback.",
    )
    intent: str = Field(description="Intent the router classified the request as.")
    confidence: float = Field(description="Classifier confidence in the intent, 0.0 to 1.0.")
    provider: str | None = Field(
        default=None,
        description="Model provider chosen for model routes; null for workflows.",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Route ids to fall back to, in order, when the chosen route's provider is unhealthy (the rest of the route table's list).",
    )
    reason: str = Field(
        description="Human-readable explanation of the decision, for audits and route corrections.",
    )
    route_table_version: str = Field(description="Version of the route table that made the decision.")
    classifier_version: str = Field(
        default="",
        description="Version (weights fingerprint) of the intent classifier that predicted the intent; empty where none was recorded. Lets a promoted router model's live results be told apart from its predecessor's.",
    )


class ClassifierScore(BaseModel):
    """A trained classifier's score of a text, made when the text was written (a knowledge passage at ingest, a request when it was governed) so that a later reader does not embed and score the same text again."""

    model_config = ConfigDict(extra="forbid")

    classifier: str = Field(
        description="Version of the classifier that made the score (a fingerprint of its weights and of the embedder they apply to); a reader whose classifier has another version ignores the score and scores the text itself.",
    )
    score: float = Field(
        description="The classifier's probability that the text is positive (for injection: that it addresses instructions to the model).",
    )


class ContextItem(BaseModel):
    """One piece of retrieved context (store hours, stock, policy) given to the model."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where the item came from, e.g. store, inventory, customer, policy.")
    source_id: str = Field(description="Identifier of the item in its source.")
    version: str = Field(description="Version of the source item, so an answer can be reproduced.")
    score: float | None = Field(
        default=None,
        description="Retrieval relevance score; null for items fetched by key.",
    )
    text: str = Field(description="The text given to the model.")
    flags: list[str] = Field(
        default_factory=list,
        description="Marks for later stages, e.g. instruction_like for a passage that reads like instructions to the model.",
    )
    tokens: AvroInt = Field(
        default=0,
        description="Tokens the text takes with the route's tokenizer; 0 when not counted.",
    )
    injection_score: ClassifierScore | None = Field(
        default=None,
        description="The injection classifier's score of `text`, made when the text was written: at ingest for a knowledge passage, when the request was governed for a customer-history item (the customer's own words in it). Set by the stitcher only (requests carry no context); null: not known ahead, the governor scores the text. The governor ignores a score from another classifier version.",
    )


class PromptMessage(BaseModel):
    """One chat message of a prompt, in the OpenAI chat form."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="system, user or assistant.")
    content: str = Field(description="The message text.")


class DroppedContext(BaseModel):
    """A context item the stitcher found but left out of the prompt, and why."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Source of the item, as in ContextItem.source.")
    source_id: str = Field(description="Identifier of the item in its source.")
    tokens: AvroInt = Field(description="Tokens the item would have taken.")
    reason: str = Field(description="Why it was left out: over_budget, duplicate, consent, ...")


class Context(BaseModel):
    """Everything the stitcher gathered for a request, within the token budget."""

    model_config = ConfigDict(extra="forbid")

    items: list[ContextItem] = Field(description="Context items in the order they enter the prompt.")
    token_count: AvroInt = Field(description="Tokens the items take up.")
    token_budget: AvroInt = Field(description="Tokens the route allowed for context.")
    prompt: list[PromptMessage] = Field(
        default_factory=list,
        description="The rendered prompt for a model route, empty for workflow routes, on stitched; from the governor on (governed, answered, audited) the governor's PII-tokenised prompt (governance.redacted_prompt).",
    )
    template_id: str = Field(default="", description="Prompt template the prompt was rendered from.")
    template_version: str = Field(default="", description="Version of that template.")
    dropped: list[DroppedContext] = Field(
        default_factory=list,
        description="Items found but left out (budget, duplicates, consent), so the audit can say what the model did not see.",
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="Sources that were unavailable for this request, e.g. knowledge_base; empty when all answered.",
    )


class Verdict(enum.StrEnum):
    """Outcome of governance. A reader meeting a symbol it does not know reads ESCALATE: unknown verdicts fail safe, to a human."""

    ALLOW = "ALLOW"
    MASK = "MASK"
    BLOCK = "BLOCK"
    ESCALATE = "ESCALATE"


class Governance(BaseModel):
    """The governor's verdict on a request before any model sees it."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict = Field(description="Overall outcome; the strictest action among the findings.")
    findings: list[Finding] = Field(description="Rules that matched the request text.")
    redacted_text: str = Field(
        description="Request text with masked spans replaced; the only text later stages may send to a model. From the governor on, request.text carries this same text.",
    )
    request_text_chars: AvroInt = Field(
        default=0,
        description="Length in characters of the request text as the store sent it, before tokenising (route conditions were decided on it); 0 in records from governors before it.",
    )
    redacted_prompt: list[PromptMessage] = Field(
        default_factory=list,
        description="The stitched prompt with PII replaced by typed tokens: the most any model may see.",
    )
    vault_key: str = Field(
        default="",
        description="Key of the encrypted token-to-value mapping in the PII vault; empty when nothing was tokenised.",
    )
    facts: dict[str, str] = Field(
        default_factory=dict,
        description="Facts extracted from the request for the policy rules, e.g. discount_percent, days_since_purchase.",
    )
    fact_sources: dict[str, str] = Field(
        default_factory=dict,
        description="Where each fact came from: request (the request's envelope and what its text asks for), reference (Switchyard's reference data), approval (a manager's approval whose signature verified), claim (what the request text states, e.g. a purchase date) or attribute (a client-set attribute). Claims and attributes can only tighten a rule, never loosen it.",
    )
    policy_version: str = Field(default="", description="Version of the policy rule set that was evaluated.")
    request_injection_score: ClassifierScore | None = Field(
        default=None,
        description="The injection classifier's score of the request text as the store sent it, with the classifier's version, so that the stitcher's customer history carries it on the interaction instead of the governor scoring the text again; null in records from governors before it.",
    )


class PiiVaultEntry(BaseModel):
    """One request's PII token mapping, encrypted (AES-256-GCM), on topic pii.vault keyed by vault_key; the topic's time retention expires it."""

    model_config = ConfigDict(extra="forbid")

    vault_key: str = Field(
        description="Name of the entry, as in Governance.vault_key: the store (percent-encoded), ':' and the request id, so stores that reuse each other's request ids never share an entry.",
    )
    key_id: str = Field(
        description="Identifier of the encryption key (a hash prefix of it, never the key), so a rotated key is recognised.",
    )
    nonce: bytes = Field(description="The 12-byte AES-GCM nonce.")
    ciphertext: bytes = Field(
        description="AES-GCM encryption of the JSON token-to-value mapping, with the vault key as associated data.",
    )
    created_at: TimestampMillis = Field(
        description="When the entry was written: milliseconds since the Unix epoch, UTC.",
    )
    expires_at: TimestampMillis = Field(
        description="After this instant the entry is refused even if the topic still holds it.",
    )


class StageTiming(BaseModel):
    """When one stage received, started and finished a record; stages append one each."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="Stage name, e.g. router, stitcher, governor, answerer, auditor.")
    received_at: TimestampMicros = Field(
        description="When the stage consumed the record: microseconds since the Unix epoch, UTC.",
    )
    started_at: TimestampMicros = Field(
        description="When the stage began processing it: microseconds since the Unix epoch, UTC.",
    )
    finished_at: TimestampMicros = Field(
        description="When the stage produced its output: microseconds since the Unix epoch, UTC.",
    )
    work_ms: dict[str, float] = Field(
        default_factory=dict,
        description="Time this stage spent working, per orchestration category (routing, context_stitching, data_prep, governance, policy, audit), in ms, waiting excluded.",
    )


class Answered(BaseModel):
    """Stage record on topic answered: a governed request plus its answer."""

    model_config = ConfigDict(extra="forbid")

    request: Request = Field(description="The request, its text PII-tokenised by the governor.")
    route: RouteDecision = Field(description="The router's decision.")
    context: Context = Field(description="The stitched context.")
    governance: Governance = Field(description="The governor's verdict.")
    answer: Answer = Field(
        description="The answer, PII tokenised: restored only where it leaves Switchyard to the store.",
    )
    pii_vault: PiiVaultEntry | None = Field(
        default=None,
        description="The governor's sealed token mapping, carried from the governed record so the edge restores the answer for the store; null when nothing was tokenised.",
    )
    timings: list[StageTiming] = Field(description="One entry per stage the record passed through, in order.")


class ApiKey(BaseModel):
    """An HTTP gateway API key: which store (and terminal) it speaks for, its limits, and whether it still works. Only the SHA-256 of the secret is kept; the secret is shown once, when the key is created."""

    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(
        description="Public identifier of the key, the part of the secret before its last dash, e.g. sy_3f9a12c4.",
    )
    secret_sha256: str = Field(
        description="SHA-256 of the whole secret, hex; the secret itself is never stored.",
    )
    store_id: str = Field(
        description="The store every request made with this key speaks for; the body cannot override it.",
    )
    terminal_id: str | None = Field(
        default=None,
        description="The terminal the key is bound to; null lets the request name its terminal within the store.",
    )
    name: str = Field(
        description="What the key is for, as its creator described it (e.g. till 3, kiosk app).",
    )
    created_at: TimestampMillis = Field(
        description="When the key was created: milliseconds since the Unix epoch, UTC.",
    )
    expires_at: TimestampMillis | None = Field(
        default=None,
        description="When the key stops working; null: it does not expire.",
    )
    revoked_at: TimestampMillis | None = Field(
        default=None,
        description="When the key was revoked; null while it works.",
    )
    requests_per_minute: AvroInt | None = Field(
        default=None,
        description="Requests a minute the key's store may make through the gateway; null: the gateway's default.",
    )
    tokens_per_day: AvroLong | None = Field(
        default=None,
        description="Model tokens (in and out) the key's store may spend per UTC day; null: the gateway's default.",
    )
    cost_per_day_usd: float | None = Field(
        default=None,
        description="Model cost in US dollars the key's store may spend per UTC day; null: the gateway's default.",
    )


class ApprovalState(enum.StrEnum):
    """PENDING: escalated, no decision yet (no record); APPROVED: released once; REJECTED: final, the held answer stands; EXPIRED: no decision within the approval TTL, final."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class Approval(BaseModel):
    """The decided state of one store's escalated request, on the compacted topic approvals.state keyed by `<store>:<request id>`; written by the approvals process in the transaction that releases the request and commits the decision's feedback offset. No record means pending."""

    model_config = ConfigDict(extra="forbid")

    store_id: str = Field(description="Store the escalated request came from.")
    request_id: str = Field(description="The escalated request's id (unique within its store only).")
    state: ApprovalState = Field(description="Where the approval stands.")
    decided_by: str = Field(
        description="Staff id of the manager whose decision made this state (for EXPIRED, whose decision came too late).",
    )
    feedback_id: str = Field(description="The ESCALATION_OUTCOME feedback record that made this state.")
    released_request_id: str | None = Field(
        default=None,
        description="Id of the request an approval released; null in every other state.",
    )
    escalated_at: TimestampMillis = Field(
        description="When the request was escalated (its audit record's time, or its own created_at when earlier): milliseconds since the Unix epoch, UTC.",
    )
    decided_at: TimestampMillis = Field(
        description="When the decision arrived: milliseconds since the Unix epoch, UTC.",
    )


class AuditCheckpoint(BaseModel):
    """A signed head of one audit hash chain, on the compacted topic audit.checkpoints keyed by chain_key: the auditor alone holds the key, so a chain rewritten in ClickHouse no longer matches it."""

    model_config = ConfigDict(extra="forbid")

    chain_key: str = Field(description="The chain, as AuditInfo.chain_key.")
    seq: AvroLong = Field(description="Position of the chain's head record when it was checkpointed, from 1.")
    hash: str = Field(
        description="AuditInfo.hash of the record at seq, hex: it covers every record of the chain up to seq.",
    )
    checkpointed_at: TimestampMicros = Field(
        description="When the auditor signed the checkpoint: microseconds since the Unix epoch, UTC.",
    )
    key_id: str = Field(
        description="The signing key: the first 16 hex digits of sha256 over its public key's SubjectPublicKeyInfo (DER).",
    )
    signature: str = Field(
        description="Ed25519 signature, base64, over the RFC 8785 canonical JSON of the other fields and context 'switchyard.audit.checkpoint.v1'.",
    )


class AuditInfo(BaseModel):
    """Where a record sits in the tamper-evident audit hash chain."""

    model_config = ConfigDict(extra="forbid")

    audit_id: str = Field(description="Identifier of the audit entry.")
    chain_key: str = Field(description="Hash chain the entry belongs to, e.g. one per store.")
    prev_hash: str = Field(description="Hash of the previous entry in the chain, hex.")
    hash: str = Field(description="Hash of this entry including prev_hash, hex.")
    recorded_at: TimestampMicros = Field(
        description="When the auditor recorded the entry: microseconds since the Unix epoch, UTC.",
    )
    seq: AvroLong = Field(default=0, description="Position of the record in its chain, from 1.")
    hash_scheme: str = Field(
        default="",
        description="How hash was computed: 'sha256-jcs' is sha256 over prev_hash, a newline and the RFC 8785 canonical JSON (JCS) of the record without its own hash and the auditor's timing; '' (records from before it) the same over JSON with keys sorted as Python sorts them, and without this field.",
    )


class Audited(BaseModel):
    """Stage record on topic audited: an answered request plus its audit entry."""

    model_config = ConfigDict(extra="forbid")

    request: Request = Field(description="The request, its text PII-tokenised by the governor.")
    route: RouteDecision = Field(description="The router's decision.")
    context: Context = Field(description="The stitched context.")
    governance: Governance = Field(description="The governor's verdict.")
    answer: Answer = Field(
        description="The answer, PII tokenised: restored only where it leaves Switchyard to the store.",
    )
    audit: AuditInfo = Field(description="The audit chain entry.")
    pii_vault: PiiVaultEntry | None = Field(
        default=None,
        description="The governor's sealed token mapping, carried from the answered record so the edge restores the answer for the store; null when nothing was tokenised. Not part of the audit record: the hash chain never covers it.",
    )
    timings: list[StageTiming] = Field(description="One entry per stage the record passed through, in order.")


class Customer(BaseModel):
    """Reference data for one loyalty customer, on a compacted topic keyed by customer_id."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(description="Loyalty customer identifier.")
    tier: str = Field(description="Loyalty tier, e.g. basic, silver, gold.")
    preferences: dict[str, str] = Field(
        description="Preferences the customer gave, e.g. preferred store or language.",
    )
    consent_history: bool = Field(description="Whether past purchases may be used as context.")
    consent_marketing: bool = Field(description="Whether offers may be included in answers.")
    updated_at: TimestampMillis = Field(
        description="When this entry changed: milliseconds since the Unix epoch, UTC.",
    )


class DeadLetter(BaseModel):
    """A record a stage could not process, with the reason, on that stage's dead-letter topic."""

    model_config = ConfigDict(extra="forbid")

    dead_letter_id: str = Field(description="UUID text identifying this dead letter.")
    stage: str = Field(description="Stage that gave up on the record.")
    reason: str = Field(description="Why the stage gave up, in words that say what to fix.")
    error_type: str = Field(description="Exception type name that caused it.")
    original: bytes = Field(
        description="The consumed record value: byte for byte where original_sealed_with is empty, else sealed to the operator's dead-letter key (services/runtime/sealing.py; `switchyard dead-letters show --open`).",
    )
    original_sealed_with: str = Field(
        default="",
        description="Key id of the X25519 public key that sealed `original` (its associated data is dead_letter_id); '' where `original` is the bytes as consumed (dead letters from before sealing).",
    )
    key: bytes | None = Field(
        default=None,
        description="The consumed record key; null when the record had none.",
    )
    topic: str = Field(description="Topic the record was consumed from.")
    partition: AvroInt = Field(description="Partition the record was consumed from.")
    offset: AvroLong = Field(description="Offset of the record in that partition.")
    request_id: str | None = Field(
        default=None,
        description="Request id when it could be read from the record; null otherwise.",
    )
    failed_at: TimestampMicros = Field(
        description="When the stage gave up: microseconds since the Unix epoch, UTC.",
    )


class FeedbackKind(enum.StrEnum):
    """What the feedback says."""

    RATING = "RATING"
    CORRECTION = "CORRECTION"
    ESCALATION_OUTCOME = "ESCALATION_OUTCOME"
    ROUTE_CORRECTION = "ROUTE_CORRECTION"


class Feedback(BaseModel):
    """Feedback on an answer from staff or customers, used to correct routes and answers."""

    model_config = ConfigDict(extra="forbid")

    feedback_id: str = Field(description="UUID text identifying this feedback.")
    request_id: str = Field(description="Request the feedback is about.")
    kind: FeedbackKind = Field(description="Kind of feedback; decides which of the optional fields are set.")
    rating: AvroInt | None = Field(default=None, description="Rating from 1 to 5, for RATING feedback.")
    corrected_text: str | None = Field(
        default=None,
        description="The answer it should have been, for CORRECTION feedback.",
    )
    corrected_intent: str | None = Field(
        default=None,
        description="The intent it should have been routed as, for ROUTE_CORRECTION feedback.",
    )
    outcome: str | None = Field(
        default=None,
        description="How an escalation ended, for ESCALATION_OUTCOME feedback.",
    )
    author: str = Field(description="Who gave the feedback: a staff id or 'customer'.")
    created_at: TimestampMillis = Field(
        description="When the feedback was given: milliseconds since the Unix epoch, UTC.",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form metadata; not interpreted by the chain.",
    )


class Governed(BaseModel):
    """Stage record on topic governed: a stitched request plus its governance verdict."""

    model_config = ConfigDict(extra="forbid")

    request: Request = Field(
        description="The request, its text PII-tokenised by the governor (the raw text stays in requests, routed and stitched).",
    )
    route: RouteDecision = Field(description="The router's decision.")
    context: Context = Field(description="The stitched context.")
    governance: Governance = Field(description="The governor's verdict.")
    pii_vault: PiiVaultEntry | None = Field(
        default=None,
        description="The governor's sealed token mapping of this request (AES-256-GCM under the vault key ring), so the answerer and the edge (the gateway's responses) restore tokens without reading pii.vault; null when nothing was tokenised. Carried on in answered and audited, never into the audit record's hash.",
    )
    timings: list[StageTiming] = Field(description="One entry per stage the record passed through, in order.")


class HoursException(BaseModel):
    """Opening hours on one date that differ from the regular ones (holidays, events)."""

    model_config = ConfigDict(extra="forbid")

    date: str = Field(description="Local date, YYYY-MM-DD.")
    opens: str | None = Field(default=None, description="Opening time HH:MM; null when closed all day.")
    closes: str | None = Field(default=None, description="Closing time HH:MM; null when closed all day.")
    note: str = Field(description="Why the hours differ, as shown to customers.")


class InventoryItem(BaseModel):
    """Stock of one SKU in one store, on a compacted topic keyed by store_id and sku."""

    model_config = ConfigDict(extra="forbid")

    store_id: str = Field(description="Store holding the stock.")
    sku: str = Field(description="Stock keeping unit.")
    product: str = Field(description="Product name as shown to customers.")
    variant: str = Field(description="Size, colour or other variant; empty when the product has none.")
    quantity: AvroInt = Field(description="Units on hand.")
    price_cents: AvroLong = Field(description="Unit price in the currency's minor unit.")
    currency: str = Field(default="USD", description="ISO 4217 currency code.")
    updated_at: TimestampMillis = Field(
        description="When this entry changed: milliseconds since the Unix epoch, UTC.",
    )


class CallOutcome(enum.StrEnum):
    """How the call ended. Unknown symbols read as ERROR."""

    OK = "OK"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    REJECTED = "REJECTED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"


class ModelCall(BaseModel):
    """One call to a model provider, as the answerer made it: the input of provider health monitoring (topic model.calls, keyed by provider)."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(description="Unique id of this call (a retry of the same request is another call).")
    request_id: str | None = Field(
        default=None,
        description="The request the call served; null for health probes.",
    )
    provider: str = Field(description="Provider name, as in providers/providers.yaml.")
    model: str = Field(description="Model name at the provider.")
    started_at: TimestampMicros = Field(
        description="When the call started: microseconds since the Unix epoch, UTC.",
    )
    latency_ms: float = Field(
        description="Time from the call's start to its answer or failure, milliseconds.",
    )
    ttft_ms: float | None = Field(
        default=None,
        description="Time to the first token when streamed, milliseconds; null otherwise.",
    )
    tokens_in: AvroInt = Field(default=0, description="Prompt tokens.")
    tokens_out: AvroInt = Field(default=0, description="Completion tokens.")
    outcome: CallOutcome = Field(description="How the call ended.")
    error: str = Field(default="", description="Why it failed; empty when OK.")


class OpeningHours(BaseModel):
    """Regular opening hours of a store on one weekday, in the store's time zone."""

    model_config = ConfigDict(extra="forbid")

    weekday: AvroInt = Field(description="Day of the week, 0 = Monday to 6 = Sunday.")
    opens: str = Field(description="Opening time, HH:MM.")
    closes: str = Field(description="Closing time, HH:MM.")


class ProviderState(enum.StrEnum):
    """Health state. A reader meeting a symbol it does not know reads DEGRADED."""

    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"


class ProviderHealth(BaseModel):
    """Latest health of one provider model, on compacted topic model.health keyed by provider and model."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="Model provider.")
    model: str = Field(description="Model name at the provider.")
    healthy: bool = Field(description="Whether the router may send traffic to it.")
    state: ProviderState = Field(
        default=ProviderState.HEALTHY,
        description="HEALTHY: within its limits; DEGRADED: breaching a limit but not yet long enough to be taken out; DOWN: the router skips it until it recovers (with hysteresis).",
    )
    p50_ms: float = Field(description="Median latency over the window, milliseconds.")
    p95_ms: float = Field(description="95th percentile latency over the window, milliseconds.")
    error_rate: float = Field(description="Share of failed calls over the window, 0.0 to 1.0.")
    window_seconds: AvroInt = Field(description="Length of the observation window, seconds.")
    observed_at: TimestampMicros = Field(
        description="End of the observation window: microseconds since the Unix epoch, UTC.",
    )
    reason: str = Field(description="Why it is (un)healthy, in words.")


class TextEmbedding(BaseModel):
    """A sentence embedding of a whole text (never a truncated one), passed on so later stages do not embed the same text again."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="The embedding model's identity (package, weights and tokenizer hashes); a reader uses the vector only when its own embedder has the same identity.",
    )
    tokens: AvroInt = Field(
        description="Word pieces the text took; a reader whose embedder truncates below this embeds the text itself.",
    )
    vector: bytes = Field(description="The L2-normalised vector as float32 little-endian.")


class Routed(BaseModel):
    """Stage record on topic routed: a request and its route."""

    model_config = ConfigDict(extra="forbid")

    request: Request = Field(description="The original request.")
    route: RouteDecision = Field(description="The router's decision.")
    request_embedding: TextEmbedding | None = Field(
        default=None,
        description="The router's embedding of the request text, for the stitcher's knowledge-base search and the governor's classifiers; null where the text was too long to embed whole. Not carried past the governor.",
    )
    timings: list[StageTiming] = Field(description="One entry per stage the record passed through, in order.")


class StaffRole(enum.StrEnum):
    """What a member of staff may do: a clerk asks, a manager decides for the stores assigned, a regional manager for a region or, with the store wildcard, every store."""

    CLERK = "CLERK"
    MANAGER = "MANAGER"
    REGIONAL_MANAGER = "REGIONAL_MANAGER"


class Staff(BaseModel):
    """Reference data for one member of staff, on the compacted topic ref.staff keyed by staff_id: who may decide an escalated request, and for which stores."""

    model_config = ConfigDict(extra="forbid")

    staff_id: str = Field(
        description="Staff identifier, as a manager names themselves with `switchyard approve --manager`.",
    )
    name: str = Field(description="Full name, for people reading decisions.")
    role: StaffRole = Field(
        description="Role; a reader that does not know a newer role reads it as CLERK, which decides nothing.",
    )
    stores: list[str] = Field(
        default_factory=list,
        description="Store ids this member of staff works for and may decide for; \"*\" means every store.",
    )
    active: bool = Field(
        default=True,
        description="False once the member of staff has left or is suspended: their decisions are refused.",
    )
    updated_at: TimestampMillis = Field(
        description="When this entry changed: milliseconds since the Unix epoch, UTC.",
    )


class Stitched(BaseModel):
    """Stage record on topic stitched: a routed request plus its context."""

    model_config = ConfigDict(extra="forbid")

    request: Request = Field(description="The original request.")
    route: RouteDecision = Field(description="The router's decision.")
    context: Context = Field(description="The stitched context.")
    request_embedding: TextEmbedding | None = Field(
        default=None,
        description="The router's embedding of the request text, for the stitcher's knowledge-base search and the governor's classifiers; null where the text was too long to embed whole. Not carried past the governor.",
    )
    timings: list[StageTiming] = Field(description="One entry per stage the record passed through, in order.")


class Store(BaseModel):
    """Reference data for one store, on a compacted topic keyed by store_id."""

    model_config = ConfigDict(extra="forbid")

    store_id: str = Field(description="Store identifier.")
    name: str = Field(description="Store name as shown to customers.")
    timezone: str = Field(description="IANA time zone of the store, e.g. Europe/Berlin.")
    region: str = Field(description="Sales region the store belongs to.")
    opening_hours: list[OpeningHours] = Field(
        description="Regular opening hours, one entry per open weekday.",
    )
    exceptions: list[HoursException] = Field(description="Dates with different hours.")
    manager_on_duty: str | None = Field(
        default=None,
        description="Staff id of the manager on duty; null when unknown.",
    )
    updated_at: TimestampMillis = Field(
        description="When this entry changed: milliseconds since the Unix epoch, UTC.",
    )


RECORD_MODELS: dict[str, type[BaseModel]] = {
    "switchyard.Answer": Answer,
    "switchyard.Answered": Answered,
    "switchyard.ApiKey": ApiKey,
    "switchyard.Approval": Approval,
    "switchyard.AuditCheckpoint": AuditCheckpoint,
    "switchyard.AuditInfo": AuditInfo,
    "switchyard.Audited": Audited,
    "switchyard.ClassifierScore": ClassifierScore,
    "switchyard.Context": Context,
    "switchyard.ContextItem": ContextItem,
    "switchyard.Customer": Customer,
    "switchyard.DeadLetter": DeadLetter,
    "switchyard.DroppedContext": DroppedContext,
    "switchyard.Feedback": Feedback,
    "switchyard.Finding": Finding,
    "switchyard.Governance": Governance,
    "switchyard.Governed": Governed,
    "switchyard.HoursException": HoursException,
    "switchyard.InventoryItem": InventoryItem,
    "switchyard.ModelCall": ModelCall,
    "switchyard.OpeningHours": OpeningHours,
    "switchyard.PiiVaultEntry": PiiVaultEntry,
    "switchyard.PromptMessage": PromptMessage,
    "switchyard.ProviderHealth": ProviderHealth,
    "switchyard.Request": Request,
    "switchyard.RouteDecision": RouteDecision,
    "switchyard.Routed": Routed,
    "switchyard.Staff": Staff,
    "switchyard.StageTiming": StageTiming,
    "switchyard.Stitched": Stitched,
    "switchyard.Store": Store,
    "switchyard.TextEmbedding": TextEmbedding,
}
