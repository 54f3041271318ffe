"""The HTTP gateway on the real broker, ClickHouse and the fused chain: the official `openai` package asks through
it, a key speaks only for its store, limits answer 429, a slow answer becomes 202 and a poll, a retried or
abandoned request is answered once, and feedback reaches the feedback topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from confluent_kafka.admin import AdminClient
from openai.types.chat import ChatCompletionMessageParam

from services.gateway import keys, quotas
from services.gateway.client import Answer, Pending, SwitchyardClient, SwitchyardError
from services.infra.clickhouse import get_client
from services.settings import Settings
from services.wire.codec import AvroCodec
from services.wire.models import ApiKey
from tests.integration.chain_harness import Chain, running_chain

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Does this blender come with a warranty?"}]


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    log_dir = tmp_path_factory.mktemp("gateway")
    with running_chain(settings, codec, admin, log_dir, model_latency_ms=20, fused=True) as running:
        yield running
    assert running.exit_codes.get("gateway/0") == 0, f"gateway exit: {running.exit_codes}; logs in {log_dir}"


@pytest.fixture(scope="module")
def base_url(chain: Chain) -> str:
    return chain.launcher.url("gateway/0").rstrip("/")


# Spending is counted per store from ClickHouse's `answers`, which every test and benchmark on this machine
# writes to today: the keys these tests make carry daily budgets that traffic elsewhere cannot exhaust, unless
# a test asks for its own limits.
UNSPENT: dict[str, Any] = {"tokens_per_day": 10**12, "cost_per_day_usd": 10.0**9}


def make_key(chain: Chain, codec: AvroCodec, store_id: str, **limits: Any) -> tuple[str, ApiKey]:
    made = keys.new_key(store_id, name="integration test", **{**UNSPENT, **limits})
    keys.KeyPublisher(chain.settings.model_copy(update={"topic_prefix": chain.prefix}), codec).publish(made.record)
    return made.secret, made.record


def wait_key_active(base_url: str, secret: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{base_url}/v1/models", headers=bearer(secret)).status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError("the gateway never saw the new key")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def store_one(chain: Chain, codec: AvroCodec, base_url: str) -> str:
    secret, _ = make_key(chain, codec, "0001")
    wait_key_active(base_url, secret)
    return secret


@pytest.fixture(scope="module")
def store_two(chain: Chain, codec: AvroCodec, base_url: str) -> str:
    secret, _ = make_key(chain, codec, "0002")
    wait_key_active(base_url, secret)
    return secret


def client(base_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=secret, max_retries=0, timeout=60)


def requests_with_id(chain: Chain, request_id: str) -> int:
    records = chain.read("requests", until=10**9, timeout_s=3.0)
    return sum(1 for record in records if record["request_id"] == request_id)


def test_the_openai_package_gets_the_chains_answer_with_its_decision_in_headers(base_url: str, store_one: str) -> None:
    raw = client(base_url, store_one).chat.completions.with_raw_response.create(model="switchyard", messages=QUESTION)
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    request_id = raw.headers["x-switchyard-request-id"]
    assert completion.id == f"chatcmpl-{request_id}"
    assert raw.headers["x-switchyard-verdict"] in ("ALLOW", "MASK", "BLOCK", "ESCALATE")
    assert len(raw.headers["x-switchyard-audit-hash"]) == 64 and raw.headers["x-switchyard-route"]
    polled = httpx.get(f"{base_url}/v1/requests/{request_id}", headers=bearer(store_one)).json()
    assert polled["status"] == "answered"
    assert polled["completion"]["choices"][0]["message"]["content"] == completion.choices[0].message.content


def test_a_stream_carries_the_same_answer_in_chunks(base_url: str, store_one: str) -> None:
    stream = client(base_url, store_one).chat.completions.create(model="switchyard", messages=QUESTION, stream=True)
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text and chunks[-1].choices[0].finish_reason == "stop"


def test_a_key_cannot_ask_as_another_store_nor_read_its_answers(base_url: str, store_one: str, store_two: str) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="store 0001, not 0002"):
        client(base_url, store_one).chat.completions.create(
            model="switchyard", messages=QUESTION, metadata={"store_id": "0002"}
        )
    raw = client(base_url, store_one).chat.completions.with_raw_response.create(model="switchyard", messages=QUESTION)
    request_id = raw.headers["x-switchyard-request-id"]
    other = httpx.get(f"{base_url}/v1/requests/{request_id}", headers=bearer(store_two))
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    feedback = httpx.post(
        f"{base_url}/v1/feedback",
        headers=bearer(store_two),
        json={"request_id": request_id, "kind": "rating", "rating": 1},
    )
    assert feedback.status_code == 404


def test_an_answer_goes_only_to_the_key_that_asked_even_within_the_store(
    chain: Chain, codec: AvroCodec, base_url: str, store_one: str
) -> None:
    raw = client(base_url, store_one).chat.completions.with_raw_response.create(model="switchyard", messages=QUESTION)
    request_id = raw.headers["x-switchyard-request-id"]
    other_till, _ = make_key(chain, codec, "0001")
    wait_key_active(base_url, other_till)
    assert httpx.get(f"{base_url}/v1/requests/{request_id}", headers=bearer(other_till)).status_code == 404
    assert httpx.get(f"{base_url}/v1/requests/{request_id}", headers=bearer(store_one)).status_code == 200


def test_keys_that_are_missing_wrong_or_revoked_get_401(chain: Chain, codec: AvroCodec, base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(base_url, "sy_00000000_" + "0" * 48).chat.completions.create(model="switchyard", messages=QUESTION)
    assert httpx.post(f"{base_url}/v1/chat/completions", json={}).json()["error"]["code"] == "missing_api_key"
    secret, record = make_key(chain, codec, "0003")
    wait_key_active(base_url, secret)
    keys.KeyPublisher(chain.settings.model_copy(update={"topic_prefix": chain.prefix}), codec).publish(
        record.model_copy(update={"revoked_at": int(time.time() * 1000)})
    )
    deadline = time.monotonic() + 15
    while httpx.get(f"{base_url}/v1/models", headers=bearer(secret)).status_code == 200:
        assert time.monotonic() < deadline, "the revocation never reached the gateway"
        time.sleep(0.1)
    refused = httpx.get(f"{base_url}/v1/models", headers=bearer(secret))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key"


def test_a_store_over_its_request_limit_gets_429_with_retry_after(
    chain: Chain, codec: AvroCodec, base_url: str, store_one: str
) -> None:
    secret, _ = make_key(chain, codec, "0004", requests_per_minute=2)
    wait_key_active(base_url, secret)
    asker = client(base_url, secret)
    before_first = time.monotonic()
    asker.chat.completions.create(model="switchyard", messages=QUESTION)
    after_first = time.monotonic()
    asker.chat.completions.create(model="switchyard", messages=QUESTION)
    asked = time.monotonic()
    with pytest.raises(openai.RateLimitError) as refused:
        asker.chat.completions.create(model="switchyard", messages=QUESTION)
    answered = time.monotonic()
    assert refused.value.body["code"] == "requests_per_minute_exceeded"  # type: ignore[index]
    # a moving minute: the store is let in again when its first request leaves the window, and Retry-After says
    # when that is (whole seconds, rounded up), counted from the first request's admission
    retry_after = int(refused.value.response.headers["Retry-After"])
    assert 60 - (answered - before_first) <= retry_after <= 60 - (asked - after_first) + 1
    # the limit is the store's: another store's key is admitted at once
    other = client(base_url, store_one).chat.completions.create(model="switchyard", messages=QUESTION)
    assert other.choices[0].message.content


def test_an_answer_slower_than_the_wait_is_a_202_then_polled(base_url: str, store_one: str) -> None:
    accepted = httpx.post(
        f"{base_url}/v1/chat/completions",
        headers={**bearer(store_one), "x-switchyard-wait-s": "0"},
        json={"model": "switchyard", "messages": QUESTION},
    )
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
    location = accepted.headers["Location"]
    deadline = time.monotonic() + 60
    while (polled := httpx.get(f"{base_url}{location}", headers=bearer(store_one)).json())["status"] != "answered":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert polled["completion"]["choices"][0]["message"]["content"]


def test_a_retried_or_abandoned_request_is_asked_once_and_answered_once(
    chain: Chain, base_url: str, store_one: str
) -> None:
    body = {"model": "switchyard", "messages": QUESTION}
    headers = {**bearer(store_one), "Idempotency-Key": "till-7-ticket-991"}
    with pytest.raises(httpx.TimeoutException):  # the till gives up before the answer
        httpx.post(f"{base_url}/v1/chat/completions", headers=headers, json=body, timeout=0.02)
    first = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, json=body, timeout=60)
    again = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, json=body, timeout=60)
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert requests_with_id(chain, first.headers["x-switchyard-request-id"]) == 1


def test_async_requests_and_feedback(base_url: str, store_one: str, chain: Chain) -> None:
    accepted = httpx.post(
        f"{base_url}/v1/requests", headers=bearer(store_one), json={"model": "switchyard", "messages": QUESTION}
    )
    assert accepted.status_code == 202
    request_id = accepted.json()["id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{base_url}/v1/requests/{request_id}", headers=bearer(store_one)).json()["status"] != "answered":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    sent = httpx.post(
        f"{base_url}/v1/feedback",
        headers=bearer(store_one),
        json={"request_id": request_id, "kind": "rating", "rating": 5},
    )
    assert sent.status_code == 200, sent.text
    bad = httpx.post(
        f"{base_url}/v1/feedback",
        headers=bearer(store_one),
        json={"request_id": request_id, "kind": "rating", "rating": 9},
    )
    assert bad.status_code == 400 and "rating must be 1 to 5" in bad.json()["error"]["message"]
    approval = httpx.post(
        f"{base_url}/v1/feedback",
        headers=bearer(store_one),
        json={"request_id": request_id, "kind": "escalation_outcome", "outcome": "approved"},
    )
    assert approval.status_code == 403 and approval.json()["error"]["code"] == "manager_only"
    feedback = [r for r in chain.read("feedback", until=1, timeout_s=10) if r["request_id"] == request_id]
    assert [(f["kind"], f["rating"], f["author"]) for f in feedback] == [("RATING", 5, feedback[0]["author"])]
    assert feedback[0]["author"].startswith("api:sy_")


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{oops", 400, "invalid_json"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found"),
        (b'{"model": "switchyard"}', 400, "invalid_request"),
        (
            b'{"model": "switchyard", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}',
            413,
            "body_too_large",
        ),
    ],
)
def test_bad_input_gets_a_clear_http_error(
    base_url: str, store_one: str, content: bytes, status: int, code: str
) -> None:
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        headers={**bearer(store_one), "Content-Type": "application/json"},
        content=content,
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_the_thin_client_carries_store_context_polls_and_sends_feedback(base_url: str, store_one: str) -> None:
    with SwitchyardClient(base_url, store_one) as till:
        answered = till.ask("Do you sell gift cards?", customer_id="C-00042", locale="en-GB", channel="POS")
        assert isinstance(answered, Answer) and answered.text and len(answered.audit_hash) == 64
        assert answered.verdict in ("ALLOW", "MASK", "BLOCK", "ESCALATE") and answered.route and answered.intent
        later = till.ask("Do you sell gift cards?", wait_s=0, idempotency_key="ticket-5531")
        assert isinstance(later, Pending)
        polled = till.wait(later.request_id)
        assert polled.request_id == later.request_id and polled.text
        assert till.feedback(polled.request_id, "rating", rating=4)
        with pytest.raises(SwitchyardError) as refused:
            till.feedback(polled.request_id, "rating", rating=11)
        assert refused.value.status == 400
    with SwitchyardClient(base_url, "sy_00000000_" + "0" * 48) as stranger, pytest.raises(SwitchyardError) as refused:
        stranger.ask("Do you sell gift cards?")
    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")


def test_another_replica_reads_the_answer_from_clickhouse_for_the_key_that_asked_only(
    chain: Chain, codec: AvroCodec, base_url: str, store_one: str
) -> None:
    raw = client(base_url, store_one).chat.completions.with_raw_response.create(model="switchyard", messages=QUESTION)
    request_id, text = raw.headers["x-switchyard-request-id"], raw.parse().choices[0].message.content
    replica = chain.start("gateway", "1")
    chain.wait_ready(replica)
    other = chain.launcher.url(replica).rstrip("/")
    deadline = time.monotonic() + 30
    while (polled := httpx.get(f"{other}/v1/requests/{request_id}", headers=bearer(store_one))).status_code != 200:
        assert polled.status_code == 404 and time.monotonic() < deadline, polled.text  # until telemetry has it
        time.sleep(0.5)
    assert polled.json()["completion"]["choices"][0]["message"]["content"] == text
    assert polled.headers["x-switchyard-audit-hash"] == raw.headers["x-switchyard-audit-hash"]
    other_till, _ = make_key(chain, codec, "0001")
    wait_key_active(other, other_till)
    assert httpx.get(f"{other}/v1/requests/{request_id}", headers=bearer(other_till)).status_code == 404
    clickhouse = get_client(chain.settings)
    assert quotas.recent_requests(clickhouse).get("0001", 0) >= 1  # what a restarted replica counts first
    assert quotas.spent_today(clickhouse)["0001"][0] > 0


def test_provider_breaker_state_and_store_spending_are_prometheus_series(
    chain: Chain, base_url: str, store_one: str
) -> None:
    client(base_url, store_one).chat.completions.create(model="switchyard", messages=QUESTION)
    stages = httpx.get(f"{chain.launcher.url('chain/0')}metrics").text
    assert 'switchyard_provider_breaker_state{model="stub",provider="openai"} 0.0' in stages
    gateway = httpx.get(f"{base_url}/metrics").text
    assert 'switchyard_gateway_tokens_total{store="0001"}' in gateway
    assert 'switchyard_gateway_responses_total{path="/v1/chat/completions",status="200"}' in gateway


def test_a_restarted_replica_still_counts_the_last_minute(chain: Chain, codec: AvroCodec, base_url: str) -> None:
    secret, _ = make_key(chain, codec, "0005", requests_per_minute=2)  # store 0005: no other test asks for it
    wait_key_active(base_url, secret)
    for _ in range(2):
        client(base_url, secret).chat.completions.create(model="switchyard", messages=QUESTION)
    clickhouse = get_client(chain.settings)
    deadline = time.monotonic() + 30
    while quotas.recent_requests(clickhouse).get("0005", 0) < 2:  # the telemetry writer flushes every second
        assert time.monotonic() < deadline
        time.sleep(0.5)
    fresh = chain.start("gateway", "2")
    chain.wait_ready(fresh)
    with pytest.raises(openai.RateLimitError):
        client(chain.launcher.url(fresh).rstrip("/"), secret).chat.completions.create(
            model="switchyard", messages=QUESTION
        )
