"""OpenAI chat-completions shapes in and out of the gateway: a request body becomes a chain `Request` (store and
terminal from the API key, never from the body), an `Audited` record becomes a `chat.completion` (or its chunk
stream), and every refusal is an OpenAI-shaped error with the HTTP status peers use."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.wire.models import ApiKey, Channel, Request

GATEWAY_MODEL = "switchyard"
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_CUSTOMER = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# metadata keys a client may set: what the store already knows about the moment, never who the store is
CLIENT_METADATA = ("customer_id", "locale", "channel", "terminal_id", "store_id")
MAX_TEXT_CHARS = 8_000


class GatewayError(Exception):
    """A request the gateway refuses, with the HTTP status and the OpenAI error type and code to answer with."""

    def __init__(
        self, status: int, message: str, *, kind: str, code: str, param: str | None = None, retry_after_s: int = 0
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def invalid(message: str, *, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, kind="invalid_request_error", code=code, param=param)


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What the gateway takes from a chat-completions body."""

    model: str
    text: str
    stream: bool
    customer_id: str | None
    locale: str
    channel: Channel
    terminal_id: str | None
    store_id: str | None


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a body, or a 400 saying what is wrong with it."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid(f"the body is not valid JSON: {error}", code="invalid_json") from error
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", code="invalid_json")
    return body


def chat_call(body: dict[str, Any], models: Iterable[str]) -> ChatCall:
    """A chat-completions body read the way the chain can answer it: the last user message is the question.

    Earlier turns and system messages are not forwarded: the chain answers one question with its own prompt and
    policies, so a client cannot widen them from the body."""
    known = tuple(models)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("`model` is required: use one of " + ", ".join(known), param="model")
    if model not in known:
        raise GatewayError(
            404,
            f"the model {model!r} does not exist here: use one of {', '.join(known)} (GET /v1/models)",
            kind="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    text = last_user_text(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("`stream` must be true or false", param="stream")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid("`metadata` must be an object of strings", param="metadata")
    unknown = sorted(set(metadata) - set(CLIENT_METADATA))
    if unknown:
        raise invalid(f"unknown metadata {unknown}: the gateway reads {list(CLIENT_METADATA)}", param="metadata")
    return ChatCall(
        model=model,
        text=text,
        stream=stream,
        customer_id=_checked(metadata.get("customer_id") or body.get("user"), _CUSTOMER, "customer_id"),
        locale=_checked(metadata.get("locale"), _LOCALE, "locale") or "en-US",
        channel=_channel(metadata.get("channel")),
        terminal_id=_checked(metadata.get("terminal_id"), _CUSTOMER, "terminal_id"),
        store_id=metadata.get("store_id"),
    )


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise invalid("`messages` must be a non-empty list", param="messages")
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise invalid("each message must be an object with `role` and `content`", param="messages")
        if message.get("role") != "user":
            continue
        text = _content_text(message.get("content")).strip()
        if not text:
            raise invalid("the last user message is empty", param="messages")
        if len(text) > MAX_TEXT_CHARS:
            raise invalid(f"the last user message is over {MAX_TEXT_CHARS} characters", param="messages")
        return text
    raise invalid("`messages` has no user message to answer", param="messages")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts are read
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(part, str) for part in parts):
            return "\n".join(parts)
    raise invalid("message content must be a string or a list of text parts", param="messages")


def _checked(value: Any, pattern: re.Pattern[str], name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise invalid(f"metadata.{name} {value!r} is not well formed", param=f"metadata.{name}")
    return value


def _channel(value: str | None) -> Channel:
    if value is None:
        return Channel.STORE_APP
    try:
        return Channel(value.upper())
    except ValueError as error:
        names = ", ".join(channel.value for channel in Channel)
        raise invalid(f"metadata.channel {value!r} is not one of {names}", param="metadata.channel") from error


def chain_request(call: ChatCall, key: ApiKey, request_id: str, now_ms: int | None = None) -> Request:
    """The chain's Request: the store (and the terminal, when the key is bound to one) come from the key; a body
    that names another store or terminal is refused, not silently rewritten."""
    if call.store_id is not None and call.store_id != key.store_id:
        raise GatewayError(
            403,
            f"this key speaks for store {key.store_id}, not {call.store_id}",
            kind="permission_error",
            code="store_mismatch",
            param="metadata.store_id",
        )
    if key.terminal_id is not None and call.terminal_id not in (None, key.terminal_id):
        raise GatewayError(
            403,
            f"this key is bound to terminal {key.terminal_id}, not {call.terminal_id}",
            kind="permission_error",
            code="terminal_mismatch",
            param="metadata.terminal_id",
        )
    return Request(
        request_id=request_id,
        store_id=key.store_id,
        terminal_id=key.terminal_id or call.terminal_id or f"api:{key.key_id}",
        customer_id=call.customer_id,
        channel=call.channel,
        locale=call.locale,
        text=call.text,
        created_at=now_ms if now_ms is not None else int(time.time() * 1000),
        attributes={"api_key": key.key_id, "entry": "gateway"},
    )


def completion(record: dict[str, Any], model: str = GATEWAY_MODEL) -> dict[str, Any]:
    """The `chat.completion` for an audited record: the released answer text, and its tokens."""
    answer = record["answer"]
    return {
        "id": f"chatcmpl-{record['request']['request_id']}",
        "object": "chat.completion",
        "created": int(record["request"]["created_at"]) // 1000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer["text"], "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage(answer),
        "system_fingerprint": f"{answer['provider']}/{answer['model']}",
    }


def usage(answer: dict[str, Any]) -> dict[str, int]:
    tokens_in, tokens_out = int(answer["tokens_in"]), int(answer["tokens_out"])
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def completion_chunks(record: dict[str, Any], model: str = GATEWAY_MODEL) -> list[bytes]:
    """The answer as a server-sent event stream: the whole text in one chunk (the chain releases an answer only
    once governance has passed it), a closing chunk with the finish reason and usage, and `[DONE]`."""
    whole = completion(record, model)
    head = {key: whole[key] for key in ("id", "created", "model", "system_fingerprint")}
    content = {"index": 0, "delta": {"role": "assistant", "content": whole["choices"][0]["message"]["content"]}}
    chunks = [
        {**head, "object": "chat.completion.chunk", "choices": [{**content, "finish_reason": None}]},
        {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": whole["usage"],
        },
    ]
    return [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks] + [b"data: [DONE]\n\n"]


def decision_headers(record: dict[str, Any]) -> dict[str, str]:
    """Why the answer is what it is, for the till's logs: request id, route, verdict and audit hash."""
    route = record["route"]
    return {
        "x-switchyard-request-id": record["request"]["request_id"],
        "x-switchyard-route": route["route_id"],
        "x-switchyard-intent": route["intent"],
        "x-switchyard-verdict": str(record["governance"]["verdict"]),
        "x-switchyard-audit-hash": record["audit"]["hash"],
    }


def request_status(record: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/requests/{id}` for an answered request."""
    return {
        "id": record["request"]["request_id"],
        "object": "switchyard.request",
        "status": "answered",
        "completion": completion(record),
        **{
            key.removeprefix("x-switchyard-").replace("-", "_"): value
            for key, value in decision_headers(record).items()
        },
    }


def pending_status(request_id: str) -> dict[str, Any]:
    return {"id": request_id, "object": "switchyard.request", "status": "pending", "poll": f"/v1/requests/{request_id}"}
