"""An OpenAI-compatible model stub that answers after a fixed latency, so a bench can measure Switchyard's own
overhead apart from model time, and tests can drive the HTTP provider through real faults.

    python -m services.dev.stub_model --port 8199 --latency-ms 50 [--fail-rate 0.1] [--status 503]
        [--malformed-rate 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.answerer.providers import estimate_tokens
from services.runtime.observability import configure_logging

log = logging.getLogger(__name__)

STUB_MODEL = "switchyard-stub"


@dataclass
class StubBehaviour:
    """How the stub answers; tests read the counters and the last headers back."""

    latency_ms: float = 50.0
    fail_rate: float = 0.0  # share of completion requests answered with `status` instead
    status: int = 500
    malformed_rate: float = 0.0  # share answered 200 with a truncated, unparseable JSON body
    reply: str = ""  # when set, every completion answers this text instead of quoting the question
    max_prompt_chars: int = 0  # when set, a longer prompt is refused as a real provider refuses it: 400
    seed: int = 0
    requests: int = 0
    failures: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


STUB_BEHAVIOUR = web.AppKey("stub_behaviour", StubBehaviour)


def build_app(behaviour: StubBehaviour) -> web.Application:
    app = web.Application()
    app[STUB_BEHAVIOUR] = behaviour
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_post("/stub/behaviour", set_behaviour)
    return app


async def set_behaviour(request: web.Request) -> web.Response:
    """Change the stub's knobs while it runs (a latency spike, then recovery): POST {"latency_ms": 3000}.
    A test double's control; a real provider has no such endpoint."""
    behaviour = request.app[STUB_BEHAVIOUR]
    changes = await request.json()
    for knob in ("latency_ms", "fail_rate", "status", "malformed_rate", "reply", "max_prompt_chars"):
        if knob in changes:
            setattr(behaviour, knob, type(getattr(behaviour, knob))(changes[knob]))
    return web.json_response({"latency_ms": behaviour.latency_ms, "fail_rate": behaviour.fail_rate})


async def chat_completions(request: web.Request) -> web.Response:
    behaviour = request.app[STUB_BEHAVIOUR]
    behaviour.requests += 1
    behaviour.last_headers = dict(request.headers)
    await asyncio.sleep(behaviour.latency_ms / 1000)  # sleeping, not computing: hundreds of calls overlap
    if behaviour.fail_rate and behaviour.rng.random() < behaviour.fail_rate:
        behaviour.failures += 1
        return _error(behaviour.status, f"stub failure injected with status {behaviour.status}", "stub_fault")
    if behaviour.malformed_rate and behaviour.rng.random() < behaviour.malformed_rate:
        behaviour.failures += 1
        return web.Response(text='{"id": "chatcmpl-stub", "choices": [', content_type="application/json")
    try:
        body = await request.json()
        messages = body["messages"]
        question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        max_tokens = int(body.get("max_tokens") or 256)
    except (ValueError, KeyError, TypeError, StopIteration):
        return _error(400, "body needs messages with at least one user message", "invalid_request_error")
    if behaviour.max_prompt_chars and sum(len(m["content"]) for m in messages) > behaviour.max_prompt_chars:
        message = f"this model's maximum context is {behaviour.max_prompt_chars} characters"
        return _error(400, message, "context_length_exceeded")
    answer = _answer(body.get("model") or STUB_MODEL, messages, question, max_tokens, behaviour.reply)
    return web.json_response(answer)


def _answer(
    model: str, messages: list[dict[str, str]], question: str, max_tokens: int, reply: str = ""
) -> dict[str, Any]:
    """A deterministic answer that quotes the question (or the reply a test set), cut to what max_tokens allows."""
    words = (reply or f"Stub answer to: {question}").split()
    allowed_words = max(1, int(max_tokens / 1.3))
    finish_reason = "length" if len(words) > allowed_words else "stop"
    text = " ".join(words[:allowed_words])
    prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
    completion_tokens = estimate_tokens(text)
    digest = hashlib.sha256(question.encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": error_type, "code": status}}, status=status)


async def models(request: web.Request) -> web.Response:
    entry = {"id": STUB_MODEL, "object": "model", "created": 0, "owned_by": "switchyard"}
    return web.json_response({"object": "list", "data": [entry]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def start_stub(
    port: int = 0,
    latency_ms: float = 50.0,
    *,
    fail_rate: float = 0.0,
    status: int = 500,
    malformed_rate: float = 0.0,
    host: str = "127.0.0.1",
) -> tuple[web.AppRunner, str]:
    """Serve the stub in this event loop; returns the runner (`await runner.cleanup()` stops it) and the
    base URL to give a provider, ending in /v1. `runner.app[STUB_BEHAVIOUR]` holds counters and knobs."""
    behaviour = StubBehaviour(latency_ms, fail_rate, status, malformed_rate)
    # a test's cleanup should not wait out answers nobody awaits any more
    runner = web.AppRunner(build_app(behaviour), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}/v1"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="fixed delay of every completion")
    parser.add_argument("--fail-rate", type=float, help="share of completions that fail (default 1 with --status)")
    parser.add_argument("--status", type=int, help="HTTP status of a failed completion (default 500)")
    parser.add_argument("--malformed-rate", type=float, default=0.0, help="share answered with broken JSON")
    args = parser.parse_args(argv)
    fail_rate = args.fail_rate if args.fail_rate is not None else (1.0 if args.status else 0.0)
    configure_logging()
    behaviour = StubBehaviour(args.latency_ms, fail_rate, args.status or 500, args.malformed_rate)
    log.info(
        "stub model serving",
        extra={"url": f"http://{args.host}:{args.port}/v1", "latency_ms": args.latency_ms, "fail_rate": fail_rate},
    )
    web.run_app(build_app(behaviour), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
