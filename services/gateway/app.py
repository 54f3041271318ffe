"""The HTTP entry of the chain (`switchyard run gateway`): OpenAI-compatible `POST /v1/chat/completions`, async
`POST /v1/requests` + `GET /v1/requests/{id}`, and `POST /v1/feedback`. A request is produced to `requests`
(acknowledged by Kafka before the gateway waits), its `Audited` record is read back from `audited`
(read_committed), and the released answer is returned with the route, verdict and audit hash in headers. The
answer travels PII-tokenised through the chain; here, where it leaves Switchyard to the store that asked, the
tokens of the types the store may see are restored from the sealed vault entry the record carries
(services.gateway.restore); an answer read back from ClickHouse is restored from `pii.vault` while its entry lives.

Each replica reads replies with its own consumer and tags its requests with a `switchyard-reply-to` header, which
the runtime carries to `audited`: a replica decodes only its own replies and skips the rest by header."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from confluent_kafka import Consumer, KafkaError, Producer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.gateway import keys, quotas, shapes
from services.gateway.restore import AnswerRestorer
from services.gateway.shapes import GatewayError
from services.learning.feedback import FeedbackError, make_feedback
from services.runtime import tracing
from services.runtime.cache import BoundedCache
from services.runtime.kafka_clients import confluent_config
from services.runtime.observability import LATENCY_BUCKETS
from services.runtime.request_key import STORE_PARTITIONER
from services.settings import Settings, get_settings
from services.shared.vault import VAULT_TOPIC, VaultError, VaultTable, vault_key_for
from services.wire.models import ApiKey, FeedbackKind
from services.wire.registry_client import codec_from_settings

log = logging.getLogger("switchyard.gateway")
REPLY_TO = "switchyard-reply-to"
IDEMPOTENCY_NAMESPACE = uuid.UUID("6d1f1f0e-3b1e-4c55-9a55-5a1f0c6a7e11")
ANSWER_BY_ID_SQL = """
SELECT request_id, store_id, intent, route, verdict, provider, model, answer, tokens_in, tokens_out,
       toUnixTimestamp64Milli(created_at), audit_hash
FROM answers FINAL
WHERE store_id = {store_id:String} AND request_id = {request_id:String} AND api_key = {key_id:String}
LIMIT 1
"""


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.responses = Counter(
            "switchyard_gateway_responses",
            "HTTP responses by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self.refused = Counter(
            "switchyard_gateway_refused", "Requests refused, by error code", ["code"], registry=self.registry
        )
        self.seconds = Histogram(
            "switchyard_gateway_seconds",
            "HTTP in to answer out, for answered chat completions",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.own_seconds = Histogram(
            "switchyard_gateway_own_seconds",
            "The gateway's and Kafka's share of an answered request: HTTP in to answer out less the chain's stages",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.pending = Gauge("switchyard_gateway_pending", "Requests waiting for their answer", registry=self.registry)
        self.replies_skipped = Counter(
            "switchyard_gateway_replies_skipped",
            "audited records for other replicas, skipped by header without decoding",
            registry=self.registry,
        )
        self.tokens = Counter(
            "switchyard_gateway_tokens", "Model tokens of answers returned, by store", ["store"], registry=self.registry
        )
        self.cost = Counter(
            "switchyard_gateway_cost_usd", "Model cost of answers returned, by store", ["store"], registry=self.registry
        )


@dataclass(frozen=True, slots=True)
class Answered:
    store_id: str
    key_id: str  # the API key that asked: only it reads the answer
    record: dict[str, Any]
    chain_ms: float


def chain_ms(record: dict[str, Any]) -> float:
    """Time spent inside the chain's stages (their own work), from the record's timings."""
    return sum(float(t["finished_at"]) - float(t["received_at"]) for t in record.get("timings", [])) / 1000.0


class Gateway:
    def __init__(self, settings: Settings, replica: str) -> None:
        self.settings, self.replica = settings, replica
        self.started = False  # set once the keys are read and the quotas warmed; until then requests get 503
        self.reply_to = f"{settings.topic_prefix}gateway/{replica}/{uuid.uuid4().hex[:8]}".encode()
        self.codec = codec_from_settings(settings)
        self.metrics = GatewayMetrics()
        self.keys = keys.key_table(settings, self.codec)
        self.restorer = AnswerRestorer.from_settings(settings)
        # the vault entries of answers read back from ClickHouse (another replica's, or from before a restart)
        self.vault = VaultTable(
            bootstrap=settings.kafka_bootstrap,
            topic=settings.topic(VAULT_TOPIC),
            codec=self.codec,
            cipher=self.restorer.cipher,
        )
        self.quotas = quotas.StoreQuotas(
            quotas.Defaults(
                settings.gateway_requests_per_minute, settings.gateway_tokens_per_day, settings.gateway_cost_per_day_usd
            )
        )
        self.pending: dict[str, asyncio.Future[Answered]] = {}
        self.pending_key: dict[str, str] = {}
        self.answered: BoundedCache[str, Answered] = BoundedCache(
            settings.gateway_answers_kept, settings.gateway_answers_kept_bytes
        )
        self.producer = Producer(
            confluent_config(
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "client.id": f"gateway-{replica}",
                    **STORE_PARTITIONER,
                },
                settings,
            )
        )
        self.consumer = Consumer(
            confluent_config(
                {
                    "group.id": f"{settings.topic('gateway')}-{self.reply_to.decode().rsplit('/', 1)[1]}",
                    "auto.offset.reset": "latest",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 5,
                    "client.id": f"gateway-{replica}",
                    **STORE_PARTITIONER,
                },
                settings,
            )
        )
        self.assigned = threading.Event()
        self.stopping = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clickhouse_error = ""
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.keys.start()
        await self.vault.start()
        self.consumer.subscribe([self.settings.topic("audited")], on_assign=lambda *_: self.assigned.set())
        for target, name in ((self._read_replies, "gateway-replies"), (self._poll_producer, "gateway-producer")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        # no deadline of its own: /healthz says "reading gateway.keys" until then, and the orchestrator's probe
        # decides how long is too long
        while not self.keys.ready.is_set():
            try:
                await asyncio.wait_for(self.keys.ready.wait(), 30)
            except TimeoutError:
                log.warning("still reading gateway.keys", extra={"topic": self.settings.topic("gateway.keys")})
        await self._refresh_quotas(warm=True)
        self.started = True

    async def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)
        self.producer.flush(10)
        await self.keys.stop()
        await self.vault.stop()

    async def health(self) -> tuple[bool, str]:
        if not self.keys.ready.is_set():
            return False, "reading gateway.keys"
        if not self.assigned.is_set():
            return False, "waiting for the audited partitions"
        if not self.started:
            return False, "reading today's spending from ClickHouse"
        detail = f"{len(self.keys)} keys, {len(self.pending)} pending"
        return True, detail + (f"; ClickHouse: {self.clickhouse_error}" if self.clickhouse_error else "")

    async def refresh_forever(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.settings.gateway_budget_refresh_s)
            await self._refresh_quotas(warm=False)

    async def _refresh_quotas(self, *, warm: bool) -> None:
        """Today's spending (and, at start, the last minute's requests) from ClickHouse; the gateway serves on
        without it, counting locally, and /healthz says so."""
        try:
            client = await asyncio.to_thread(self._clickhouse)
            spent = await asyncio.to_thread(quotas.spent_today, client)
            recent = await asyncio.to_thread(quotas.recent_requests, client) if warm else {}
        except Exception as error:
            self.clickhouse_error = f"{type(error).__name__}: {error}"[:300]
            log.warning("quota refresh failed", extra={"error": self.clickhouse_error})
            return
        self.clickhouse_error = ""
        self.quotas.refresh_spent(spent)
        if warm:
            self.quotas.warm(recent, self.keys.rows.values())

    def _clickhouse(self) -> Any:
        from services.infra.clickhouse import get_client

        if not hasattr(self, "_clickhouse_client"):
            self._clickhouse_client = get_client(self.settings)
        return self._clickhouse_client

    # -- Kafka threads -----------------------------------------------------------------------------------------

    def _poll_producer(self) -> None:
        while not self.stopping.is_set():
            self.producer.poll(0.05)

    def _read_replies(self) -> None:
        try:
            while not self.stopping.is_set():
                first = self.consumer.poll(0.1)
                if first is None:
                    continue
                batch: list[Answered] = []
                for message in [first, *self.consumer.consume(500, 0)]:
                    answered = self._reply(message)
                    if answered is not None:
                        batch.append(answered)
                if batch and self.loop is not None:
                    self.loop.call_soon_threadsafe(self._resolve, batch)
        finally:
            self.consumer.close()

    def _reply(self, message: Any) -> Answered | None:
        if message.error() is not None or message.value() is None:
            if message.error() is not None and message.error().code() != KafkaError._PARTITION_EOF:
                log.warning("reply reader error", extra={"error": str(message.error())})
            return None
        reply_to = dict(message.headers() or ()).get(REPLY_TO)
        if reply_to is not None and reply_to != self.reply_to:
            self.metrics.replies_skipped.inc()
            return None
        if reply_to is None:  # a request that did not come through a gateway: nobody here waits for it
            return None
        try:
            _, record = self.codec.decode(message.value(), reader="Audited")
        except Exception as error:
            log.warning("undecodable audited record", extra={"error": str(error)})
            return None
        request = record["request"]
        restored = self.restorer.restored(record)  # the edge: from here the answer goes to the store that asked
        return Answered(request["store_id"], request["attributes"].get("api_key", ""), restored, chain_ms(record))

    def _resolve(self, batch: list[Answered]) -> None:
        for answered in batch:
            request_id = answered.record["request"]["request_id"]
            self._remember(request_id, answered)
            answer = answered.record["answer"]
            tokens = int(answer["tokens_in"]) + int(answer["tokens_out"])
            self.quotas.record_answer(answered.store_id, tokens, float(answer["cost_usd"]))
            self.metrics.tokens.labels(store=answered.store_id).inc(tokens)
            self.metrics.cost.labels(store=answered.store_id).inc(float(answer["cost_usd"]))
            waiting = self.pending.pop(request_id, None)
            self.pending_key.pop(request_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answered)
        self.metrics.pending.set(len(self.pending))

    def _remember(self, request_id: str, answered: Answered) -> None:
        self.answered.put(request_id, answered)

    # -- submitting --------------------------------------------------------------------------------------------

    async def submit(
        self, http: web.Request, key: ApiKey, call: shapes.ChatCall
    ) -> tuple[str, asyncio.Future[Answered]]:
        """Produces the request (or finds the one an Idempotency-Key already made) and returns its reply future.
        Returns once Kafka has acknowledged the request: from then on it is not lost, whatever the client does."""
        idempotency = http.headers.get("Idempotency-Key")
        request_id = (
            str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{key.key_id}:{idempotency}")) if idempotency else str(uuid.uuid4())
        )
        assert self.loop is not None
        known = self.answered.peek(request_id)
        if known is not None:
            done: asyncio.Future[Answered] = self.loop.create_future()
            done.set_result(known)
            return request_id, done
        if request_id in self.pending:
            return request_id, self.pending[request_id]
        if len(self.pending) >= self.settings.gateway_max_pending:
            raise GatewayError(
                503,
                f"the gateway is waiting on {len(self.pending)} answers already: retry shortly",
                kind="server_error",
                code="overloaded",
                retry_after_s=1,
            )
        self.quotas.admit(key)
        request = shapes.chain_request(call, key, request_id)
        parent = tracing.parse_traceparent(http.headers.get("traceparent"))
        trace = tracing.child_of(parent) if parent is not None else tracing.start()
        reply: asyncio.Future[Answered] = self.loop.create_future()
        self.pending[request_id] = reply
        self.pending_key[request_id] = key.key_id
        self.metrics.pending.set(len(self.pending))
        acked: asyncio.Future[None] = self.loop.create_future()
        try:
            self.producer.produce(
                self.settings.topic("requests"),
                key=request.store_id.encode(),
                value=self.codec.encode("Request", request.model_dump()),
                headers=[("traceparent", tracing.format_traceparent(trace)), (REPLY_TO, self.reply_to)],
                on_delivery=lambda error, _message: self._acked(acked, error),
            )
            await asyncio.wait_for(asyncio.shield(acked), self.settings.gateway_produce_timeout_s)
        except Exception as error:
            self.pending.pop(request_id, None)
            self.pending_key.pop(request_id, None)
            raise GatewayError(
                503, f"Kafka did not accept the request: {error}", kind="server_error", code="broker_unavailable"
            ) from error
        return request_id, reply

    def _acked(self, acked: asyncio.Future[None], error: Any) -> None:
        assert self.loop is not None

        def settle() -> None:
            if acked.done():
                return
            if error is None:
                acked.set_result(None)
            else:
                acked.set_exception(RuntimeError(str(error)))

        self.loop.call_soon_threadsafe(settle)

    async def stored_answer(self, request_id: str, key: ApiKey) -> dict[str, Any] | None:
        """An answer this replica no longer holds (another replica's, or from before a restart), from ClickHouse;
        only when `key` asked it."""
        try:
            client = await asyncio.to_thread(self._clickhouse)
            rows = await asyncio.to_thread(
                lambda: (
                    client.query(
                        ANSWER_BY_ID_SQL,
                        parameters={"request_id": request_id, "store_id": key.store_id, "key_id": key.key_id},
                    ).result_rows
                )
            )
        except Exception as error:
            raise GatewayError(
                503, f"answers are not readable now: {error}", kind="server_error", code="store_unavailable"
            ) from error
        if not rows:
            return None
        rid, store, intent, route, verdict, provider, model, text, tokens_in, tokens_out, created, audit_hash = rows[0]
        try:
            tokens = await self.vault.mapping(vault_key_for(store, rid), wait_s=0)
        except VaultError:  # nothing tokenised, expired or erased: the store's tokens read as neutral words
            tokens = {}
        stored = {
            "request": {"request_id": rid, "store_id": store, "created_at": created},
            "route": {"route_id": route, "intent": intent},
            "governance": {"verdict": verdict},
            "answer": {
                "text": text,
                "provider": provider,
                "model": model,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
            },
            "audit": {"hash": audit_hash},
        }
        return self.restorer.restored(stored, tokens)


# -- HTTP ------------------------------------------------------------------------------------------------------


def error_response(error: GatewayError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else {}
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    gateway: Gateway = request.app["gateway"]
    path = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response: web.StreamResponse = await handler(request)
    except GatewayError as error:
        gateway.metrics.refused.labels(code=error.code).inc()
        response = error_response(error)
    except web.HTTPRequestEntityTooLarge as error:
        response = error_response(
            GatewayError(
                413, error.text or "the body is too large", kind="invalid_request_error", code="body_too_large"
            )
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = error.reason.lower().replace(" ", "_")
        response = error_response(GatewayError(error.status, error.reason, kind="invalid_request_error", code=code))
    gateway.metrics.responses.labels(path=path, status=str(response.status)).inc()
    return response


def _key(request: web.Request) -> ApiKey:
    gateway: Gateway = request.app["gateway"]
    if not gateway.started:
        raise GatewayError(503, "the gateway is starting", kind="server_error", code="starting", retry_after_s=1)
    return keys.authenticate(request.headers.get("Authorization"), gateway.keys, int(time.time() * 1000))


def _wait_s(request: web.Request, settings: Settings) -> float:
    asked = request.headers.get("x-switchyard-wait-s")
    if asked is None:
        return settings.gateway_timeout_s
    try:
        return min(max(float(asked), 0.0), settings.gateway_timeout_s)
    except ValueError as error:
        raise shapes.invalid("x-switchyard-wait-s must be a number of seconds", param="x-switchyard-wait-s") from error


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app["gateway"]
    started = time.perf_counter()
    key = _key(request)
    call = shapes.chat_call(shapes.parse_body(await request.read()), gateway.settings.gateway_models)
    request_id, reply = await gateway.submit(request, key, call)
    try:
        answered = await asyncio.wait_for(asyncio.shield(reply), _wait_s(request, gateway.settings))
    except TimeoutError:
        return web.json_response(
            shapes.pending_status(request_id),
            status=202,
            headers={"x-switchyard-request-id": request_id, "Location": f"/v1/requests/{request_id}"},
        )
    total_s = time.perf_counter() - started
    own_ms = max(0.0, total_s * 1000.0 - answered.chain_ms)
    gateway.metrics.seconds.observe(total_s)
    gateway.metrics.own_seconds.observe(own_ms / 1000.0)
    # where the time went, as LiteLLM's x-litellm-overhead-duration-ms does: the stages' work, and the rest
    # (HTTP in, Kafka both ways, the reply out)
    headers = {
        **shapes.decision_headers(answered.record),
        "x-switchyard-chain-ms": f"{answered.chain_ms:.1f}",
        "x-switchyard-gateway-ms": f"{own_ms:.1f}",
    }
    if not call.stream:
        return web.json_response(shapes.completion(answered.record, call.model), headers=headers)
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for chunk in shapes.completion_chunks(answered.record, call.model):
        await response.write(chunk)
    await response.write_eof()
    return response


async def create_request(request: web.Request) -> web.Response:
    """The asynchronous form: accepted once Kafka holds it; the answer is polled with GET /v1/requests/{id}."""
    gateway: Gateway = request.app["gateway"]
    key = _key(request)
    call = shapes.chat_call(shapes.parse_body(await request.read()), gateway.settings.gateway_models)
    request_id, _ = await gateway.submit(request, key, call)
    return web.json_response(
        shapes.pending_status(request_id),
        status=202,
        headers={"x-switchyard-request-id": request_id, "Location": f"/v1/requests/{request_id}"},
    )


async def get_request(request: web.Request) -> web.Response:
    gateway: Gateway = request.app["gateway"]
    key = _key(request)
    request_id = request.match_info["request_id"]
    record = await _answer_of(gateway, request_id, key)
    if record is None and request_id in gateway.pending and gateway.pending_key.get(request_id) == key.key_id:
        return web.json_response(shapes.pending_status(request_id), status=200)
    if record is None:
        raise _not_found(request_id)
    return web.json_response(shapes.request_status(record), headers=shapes.decision_headers(record))


def _not_found(request_id: str) -> GatewayError:
    # the same answer whether the id is unknown or another key's: a key cannot probe what others asked
    return GatewayError(
        404, f"no request {request_id} asked with this key", kind="invalid_request_error", code="not_found"
    )


async def _answer_of(gateway: Gateway, request_id: str, key: ApiKey) -> dict[str, Any] | None:
    held = gateway.answered.peek(request_id)
    if held is not None:
        return held.record if (held.store_id, held.key_id) == (key.store_id, key.key_id) else None
    if request_id in gateway.pending:
        return None
    return await gateway.stored_answer(request_id, key)


async def feedback(request: web.Request) -> web.Response:
    """A rating, correction, route correction or escalation outcome on one of the key's store's answers."""
    gateway: Gateway = request.app["gateway"]
    key = _key(request)
    body = shapes.parse_body(await request.read())
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise shapes.invalid("`request_id` is required", param="request_id")
    if await _answer_of(gateway, request_id, key) is None:
        raise _not_found(request_id)
    try:
        kind = FeedbackKind(str(body.get("kind", "")).upper())
        if kind == FeedbackKind.ESCALATION_OUTCOME:
            raise GatewayError(
                403,
                "an escalation outcome is a manager's decision, taken with `switchyard approve|reject`; "
                "an API key (a till) cannot approve or reject",
                kind="permission_error",
                code="manager_only",
                param="kind",
            )
        record = make_feedback(
            request_id,
            kind,
            store_id=key.store_id,
            author=f"api:{key.key_id}",
            rating=body.get("rating"),
            corrected_text=body.get("corrected_text"),
            corrected_intent=body.get("corrected_intent"),
            outcome=body.get("outcome"),
        )
    except ValueError as error:  # FeedbackError, or an unknown kind
        kinds = ", ".join(kind.value.lower() for kind in FeedbackKind)
        message = str(error) if isinstance(error, FeedbackError) else f"`kind` must be one of {kinds}"
        raise shapes.invalid(message, param="kind") from error
    gateway.producer.produce(
        gateway.settings.topic("feedback"),
        key=request_id.encode(),
        value=gateway.codec.encode("Feedback", record.model_dump()),
    )
    return web.json_response({"id": record.feedback_id, "object": "switchyard.feedback", "request_id": request_id})


async def models(request: web.Request) -> web.Response:
    _key(request)
    names = request.app["gateway"].settings.gateway_models
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "switchyard"} for name in names]
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    ok, detail = await request.app["gateway"].health()
    body = {"status": "ready" if ok else "not ready", "detail": detail, "ts": time.time()}
    return web.json_response(body, status=200 if ok else 503)


async def metrics_page(request: web.Request) -> web.Response:
    body = generate_latest(request.app["gateway"].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.settings.gateway_max_body_bytes, middlewares=[openai_errors])
    app["gateway"] = gateway
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/requests", create_request)
    app.router.add_get("/v1/requests/{request_id}", get_request)
    app.router.add_post("/v1/feedback", feedback)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(settings: Settings, host: str, port: int, replica: str) -> None:
    gateway = Gateway(settings, replica)
    # the port is taken first (its /healthz says "not ready" until the keys are read and the replies assigned),
    # so a port handed out by a launcher is not lost to another process's socket while Kafka is read
    runner = web.AppRunner(build_app(gateway), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    await gateway.start()
    log.info("gateway listening", extra={"host": host, "port": port, "reply_to": gateway.reply_to.decode()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    refresher = asyncio.create_task(gateway.refresh_forever())
    await stop.wait()
    refresher.cancel()
    # stop taking requests, then give the ones in flight the timeout to be answered before closing
    await site.stop()
    if gateway.pending:
        await asyncio.wait(list(gateway.pending.values()), timeout=settings.gateway_timeout_s)
    await runner.cleanup()
    await gateway.stop()


def run(*, port: int, replica: str | None = None) -> None:
    """`switchyard run gateway`: serves until SIGTERM, then answers what is in flight before it exits."""
    settings = get_settings()
    asyncio.run(serve(settings, settings.host, port, replica or settings.replica or socket.gethostname()))
