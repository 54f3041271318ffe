"""A thin client for Python tills, for what OpenAI's shapes cannot carry: the store's context (customer, locale,
channel), an idempotency key per ticket, the decision behind an answer, polling, and feedback. Anything else
goes through the official `openai` package pointed at the gateway (`base_url=".../v1"`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


class SwitchyardError(Exception):
    """The gateway refused: the HTTP status, its error code and message (and when to retry, for 429 and 503)."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after_s = status, code, message, retry_after_s


@dataclass(frozen=True, slots=True)
class Answer:
    """A released answer and why it is what it is."""

    request_id: str
    text: str
    route: str
    intent: str
    verdict: str
    audit_hash: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Pending:
    """Accepted and in Kafka, not answered within the wait: poll `SwitchyardClient.answer(request_id)`."""

    request_id: str


class SwitchyardClient:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 35.0, transport: Any = None) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> SwitchyardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ask(
        self,
        text: str,
        *,
        customer_id: str | None = None,
        locale: str | None = None,
        channel: str | None = None,
        terminal_id: str | None = None,
        idempotency_key: str | None = None,
        wait_s: float | None = None,
    ) -> Answer | Pending:
        """Ask the chain; a retry with the same `idempotency_key` (say, the ticket number) is answered once."""
        metadata = {
            name: value
            for name, value in (
                ("customer_id", customer_id),
                ("locale", locale),
                ("channel", channel),
                ("terminal_id", terminal_id),
            )
            if value is not None
        }
        headers = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if wait_s is not None:
            headers["x-switchyard-wait-s"] = str(wait_s)
        body = {"model": "switchyard", "messages": [{"role": "user", "content": text}], "metadata": metadata}
        response = self._http.post("/v1/chat/completions", json=body, headers=headers)
        if response.status_code == 202:
            return Pending(response.json()["id"])
        payload = _checked(response)
        return _answer(payload, response.headers)

    def answer(self, request_id: str) -> Answer | Pending:
        """The answer of a request this key's store made, or Pending while the chain works on it."""
        payload = _checked(self._http.get(f"/v1/requests/{request_id}"))
        if payload["status"] != "answered":
            return Pending(request_id)
        headers = {f"x-switchyard-{key.replace('_', '-')}": str(payload[key]) for key in _DECISION if key in payload}
        return _answer(payload["completion"], headers)

    def wait(self, request_id: str, timeout_s: float = 60.0, every_s: float = 0.25) -> Answer:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.answer(request_id)
            if isinstance(got, Answer):
                return got
            if time.monotonic() >= deadline:
                raise TimeoutError(f"request {request_id} not answered within {timeout_s} s")
            time.sleep(every_s)

    def feedback(
        self,
        request_id: str,
        kind: str,
        *,
        rating: int | None = None,
        corrected_text: str | None = None,
        corrected_intent: str | None = None,
        outcome: str | None = None,
    ) -> str:
        """A rating (1-5), correction, route correction or escalation outcome; returns the feedback id."""
        body: dict[str, Any] = {"request_id": request_id, "kind": kind}
        for name, value in (
            ("rating", rating),
            ("corrected_text", corrected_text),
            ("corrected_intent", corrected_intent),
            ("outcome", outcome),
        ):
            if value is not None:
                body[name] = value
        return str(_checked(self._http.post("/v1/feedback", json=body))["id"])


_DECISION = ("request_id", "route", "intent", "verdict", "audit_hash")


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code < 400:
        payload: dict[str, Any] = response.json()
        return payload
    try:
        error = response.json()["error"]
        code, message = str(error.get("code")), str(error.get("message"))
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:300]
    retry = response.headers.get("Retry-After")
    raise SwitchyardError(response.status_code, code, message, float(retry) if retry else None)


def _answer(completion: dict[str, Any], headers: Any) -> Answer:
    return Answer(
        request_id=str(headers["x-switchyard-request-id"]),
        text=str(completion["choices"][0]["message"]["content"]),
        route=str(headers.get("x-switchyard-route", "")),
        intent=str(headers.get("x-switchyard-intent", "")),
        verdict=str(headers.get("x-switchyard-verdict", "")),
        audit_hash=str(headers.get("x-switchyard-audit-hash", "")),
        tokens=int(completion["usage"]["total_tokens"]),
    )
