"""The models the answerer calls, behind one async `complete()`: any OpenAI-compatible endpoint over pooled
HTTP (a hosted model or Switchyard's own custom models), or a local GGUF model (local_model.py); failures become
the runtime's retry or dead-letter faults. resilience.py guards each one with a breaker, a limit and a price."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import ErrorDetails

from services.runtime.faults import RejectedRecord, StageError, TransientError
from services.shared.prompts import ChatMessage

log = logging.getLogger(__name__)

TOKENS_PER_WORD = 1.3  # rough English BPE ratio, used only when an endpoint reports no usage


@dataclass(frozen=True)
class Completion:
    """One model answer with what telemetry records about it."""

    text: str
    provider: str
    model: str
    model_version: str
    tokens_in: int
    tokens_out: int
    latency_ms: float  # what the caller waited, queueing and retries included
    finish_reason: str  # "stop", "length", or what the endpoint said
    cost_usd: float = 0.0  # set from the provider's price by resilience.GuardedProvider


class Provider(Protocol):
    name: str
    model: str

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion: ...

    async def aclose(self) -> None: ...


class ProviderError(StageError):
    """Base of every provider failure; says which provider and, for HTTP, which status."""

    def __init__(
        self,
        reason: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(reason, request_id=request_id)


class ProviderTimeout(ProviderError, TransientError):
    """The provider did not answer within the call's deadline (or answered 408)."""


class ProviderUnavailable(ProviderError, TransientError):
    """The provider is down, overloaded or rate-limiting (5xx, 429, refused connection, garbled answer)."""


class ProviderMalformed(ProviderUnavailable):
    """The provider answered 2xx with a body that is not a chat completion (not JSON, or no choices)."""


class ProviderMisconfigured(ProviderUnavailable):
    """401, 403 or 404: our key, URL or model name is wrong, not the record. Not retried within the call (it
    cannot heal in milliseconds), but transient for the runtime, so records wait for the fix instead of all
    being dead-lettered."""


class ProviderRejected(ProviderError, RejectedRecord):
    """Any other 4xx, or a prompt the model cannot take: the request itself is bad, so retrying cannot help."""


class ProviderConfigError(ValueError):
    """A provider configuration that cannot be used; the message names the source, the key and the fix."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HTTP_URL = re.compile(r"^https?://[^/\s]+")


class CircuitBreakerConfig(BaseModel):
    """When a provider's circuit opens (calls fail fast, so the next provider answers) and when it is probed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(5, ge=1, description="consecutive failed calls that open the circuit")
    error_rate: float = Field(0.5, gt=0, le=1, description="share of failed calls in the window that opens it")
    window_s: float = Field(30.0, gt=0, description="length of the sliding window error_rate is measured over")
    min_calls: int = Field(20, ge=1, description="calls the window needs before error_rate can open the circuit")
    cooldown_s: float = Field(10.0, gt=0, description="how long an open circuit rejects calls before one probe")


class TokenPrice(BaseModel):
    """What a provider charges, so every completion carries its cost; a local model costs 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_usd: float = Field(0.0, ge=0, description="USD per `per_tokens` prompt tokens")
    output_usd: float = Field(0.0, ge=0, description="USD per `per_tokens` completion tokens")
    per_tokens: Literal[1000, 1000000] = Field(1000000, description="the prices are per 1000 or per 1000000 tokens")

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_usd + tokens_out * self.output_usd) / self.per_tokens


class GuardedProviderConfig(BaseModel):
    """What every provider kind shares: the guards around its calls and who answers when it fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: int | None = Field(None, ge=1, description="calls in flight at once; more wait for a slot")
    call_timeout_s: float | None = Field(
        None, gt=0, description="deadline of a whole call, waiting for a slot and retries included; none: no deadline"
    )
    breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    price: TokenPrice = Field(default_factory=TokenPrice)
    fallback: tuple[str, ...] = Field((), description="providers of the same file that answer, in order, if it fails")


class HTTPEndpointConfig(GuardedProviderConfig):
    """An OpenAI-compatible `/v1/chat/completions` endpoint; the fields the openai and custom kinds share."""

    name: str = Field("openai", min_length=1, description="the provider's name in telemetry and route tables")
    base_url: str = Field(description="endpoint root including /v1, e.g. http://127.0.0.1:8000/v1")
    base_url_env: str | None = Field(None, description="NAME of an environment variable that overrides base_url")
    model: str = Field(min_length=1, description="model name sent in each request")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key")
    timeout_s: float = Field(10.0, gt=0, description="deadline of one attempt, connect to last byte")
    connect_timeout_s: float = Field(2.0, gt=0, description="deadline of opening a connection")
    retries: int = Field(2, ge=0, le=10, description="extra attempts after a timeout, 429 or 5xx")
    backoff_s: float = Field(0.2, gt=0, description="first retry delay; doubles per attempt, with jitter")
    backoff_max_s: float = Field(5.0, gt=0, description="cap of one retry delay, Retry-After included")
    max_connections: int = Field(100, ge=1, description="concurrent connections to the endpoint")
    max_keepalive_connections: int = Field(20, ge=0, description="idle connections kept open for reuse")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not _HTTP_URL.match(value):
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @field_validator("api_key_env", "base_url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be the NAME of an environment variable (like OPENAI_API_KEY), never its value")
        return value


class OpenAIProviderConfig(HTTPEndpointConfig):
    """An OpenAI-compatible endpoint: vLLM, TGI, Ollama or a hosted API."""

    kind: Literal["openai"]


class CustomModelConfig(HTTPEndpointConfig):
    """Switchyard's own trained models, served OpenAI-compatibly; the learning loop deploys them and names the
    served model, so routes can send an intent to the model trained for it."""

    kind: Literal["custom"]
    name: str = Field("custom", min_length=1, description="the provider's name in telemetry and route tables")


class LocalGGUFConfig(GuardedProviderConfig):
    """A GGUF model run in-process by llama.cpp, shipped by a registry package or found at `path`."""

    kind: Literal["local_gguf"]
    name: str = Field("local_gguf", min_length=1, description="the provider's name in telemetry")
    model: str = Field("gemma3-270m", min_length=1, description="a packaged model name, or a label with `path`")
    path: Path | None = Field(None, description="an explicit .gguf file instead of a packaged model")
    cache_dir: Path | None = Field(None, description="where a chunked package assembles its .gguf once")
    n_threads: int = Field(1, ge=1, le=256, description="llama.cpp threads; 1 leaves a core for the broker")
    max_context: int = Field(2048, ge=128, le=131072, description="context window in tokens, prompt + answer")
    seed: int = Field(0, description="sampling seed, so runs repeat")
    repeat_penalty: float = Field(1.1, ge=1.0, description="discourages the loops a small model falls into")
    prompt_format: Literal["auto", "chat_template", "plain"] = Field(
        "auto", description="auto: the GGUF's chat template when it has one, else the plain transcript"
    )
    stop: tuple[str, ...] | None = Field(None, description="stop strings; default suits the prompt format")


AnyProviderConfig = OpenAIProviderConfig | CustomModelConfig | LocalGGUFConfig
ProviderConfig = Annotated[AnyProviderConfig, Field(discriminator="kind")]
_PROVIDER_CONFIG: TypeAdapter[AnyProviderConfig] = TypeAdapter(ProviderConfig)
_KINDS = "'openai', 'custom' or 'local_gguf'"


def parse_provider_config(
    config: Mapping[str, Any], *, source: str = "provider config", key_prefix: str = ""
) -> AnyProviderConfig:
    """Validate a provider's configuration, raising one error that lists every bad key and its fix; keys are
    named after `key_prefix` (like "providers.default.") when the config sits inside a larger file."""
    if not isinstance(config, Mapping):
        where = f"key {key_prefix.rstrip('.')!r} " if key_prefix else ""
        raise ProviderConfigError(
            source, [f"{where}must be a mapping with keys such as kind and model, not {config!r}"]
        )
    try:
        return _PROVIDER_CONFIG.validate_python(dict(config))
    except ValidationError as exc:
        raise ProviderConfigError(source, [_describe(error, key_prefix) for error in exc.errors()]) from None


def _describe(error: ErrorDetails, key_prefix: str = "") -> str:
    if error["type"] == "union_tag_not_found":
        return f"key '{key_prefix}kind' is missing: set it to {_KINDS}"
    if error["type"] == "union_tag_invalid":
        return f"key '{key_prefix}kind' is {error['input'].get('kind')!r}: set it to {_KINDS}"
    key = key_prefix + ".".join(str(part) for part in error["loc"][1:])  # loc[0] is the kind's tag
    if error["type"] == "missing":
        return f"key {key!r} is required: add it"
    if error["type"] == "extra_forbidden":
        return f"key {key!r} is not known: remove it or fix its spelling"
    return f"key {key!r}: {error['msg'].removeprefix('Value error, ')} (got {error['input']!r})"


def provider_from_config(
    config: Mapping[str, Any], *, source: str = "provider config", environ: Mapping[str, str] = os.environ
) -> Provider:
    """Build the provider a config dict describes; `source` (a file name) leads every error message."""
    return build_provider(parse_provider_config(config, source=source), source=source, environ=environ)


def build_provider(
    config: AnyProviderConfig, *, source: str = "provider config", environ: Mapping[str, str] = os.environ
) -> Provider:
    """The unguarded provider of a validated config (resilience.GuardedProvider wraps it)."""
    if isinstance(config, HTTPEndpointConfig):
        return OpenAICompatibleProvider.from_config(config, environ=environ, source=source)
    from services.answerer.local_model import LocalGGUFProvider  # imported here: local_model imports this module

    return LocalGGUFProvider.from_config(config, source=source)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    headers: Mapping[str, str]
    text: str


class OpenAICompatibleProvider:
    """Any OpenAI-compatible `/v1/chat/completions` endpoint, over one pooled keep-alive HTTP session.

    aiohttp, not httpx: under a hundred concurrent calls httpcore's pool bookkeeping took two thirds of the
    answerer's CPU (profiled with py-spy in `make bench`); aiohttp's connector does not."""

    def __init__(self, config: HTTPEndpointConfig, *, api_key: str | None = None) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self._url = config.base_url + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running event loop, as aiohttp requires."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections,
                limit_per_host=self.config.max_connections,
                keepalive_timeout=30.0,
            )
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s, sock_connect=self.config.connect_timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers)
        return self._session

    @classmethod
    def from_config(
        cls,
        config: HTTPEndpointConfig,
        *,
        environ: Mapping[str, str] = os.environ,
        source: str = "provider config",
    ) -> OpenAICompatibleProvider:
        """Build the provider, reading its API key from the environment variable `api_key_env` names, and its
        base URL from the one `base_url_env` names when that is set."""
        config = _with_env_base_url(config, environ, source)
        if config.api_key_env is None:
            return cls(config)
        api_key = environ.get(config.api_key_env, "")
        if not api_key:
            raise ProviderConfigError(
                source,
                [
                    f"key 'api_key_env' names {config.api_key_env}, which is not set: export it, "
                    "or drop api_key_env for an endpoint without auth"
                ],
            )
        return cls(config, api_key=api_key)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion:
        started = time.perf_counter()
        body = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        attempt = 0
        while True:
            try:
                payload = await self._post(body, request_id)
                return self._completion(payload, messages, started, request_id)
            except (ProviderTimeout, ProviderUnavailable) as fault:
                if isinstance(fault, ProviderMisconfigured) or attempt >= self.config.retries:
                    raise
                delay_s = self._backoff_s(attempt, fault.retry_after_s)
                attempt += 1
                log.warning(
                    "provider call failed, retrying",
                    extra={
                        "request_id": request_id,
                        "provider": self.name,
                        "attempt": attempt,
                        "delay_s": round(delay_s, 3),
                        "reason": fault.reason,
                    },
                )
                await asyncio.sleep(delay_s)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, body: dict[str, Any], request_id: str | None) -> Any:
        where = f"{self.name} ({self.config.base_url})"
        try:
            async with asyncio.timeout(self.config.timeout_s):
                async with self._client().post(self._url, json=body) as response:
                    reply = _Reply(response.status, response.reason or "", response.headers, await response.text())
        except TimeoutError as exc:
            reason = f"{where} did not answer within {self.config.timeout_s} s"
            raise ProviderTimeout(reason, provider=self.name, request_id=request_id) from exc
        except aiohttp.ClientError as exc:
            reason = f"{where} cannot be reached: {exc!r}"
            raise ProviderUnavailable(reason, provider=self.name, request_id=request_id) from exc
        if reply.status >= 400:
            raise self._fault(reply, request_id)
        try:
            return json.loads(reply.text)
        except ValueError as exc:
            reason = f"{where} answered {reply.status} with a body that is not JSON: {reply.text[:200]!r}"
            raise ProviderMalformed(reason, provider=self.name, request_id=request_id) from exc

    def _fault(self, response: _Reply, request_id: str | None) -> ProviderError:
        status = response.status
        reason = f"{self.name} ({self.model}) answered HTTP {status}: {_error_detail(response)}"
        fault_type: type[ProviderError] = ProviderRejected
        if status == 408:
            fault_type = ProviderTimeout
        elif status == 429 or status >= 500:
            fault_type = ProviderUnavailable
        elif status in (401, 403, 404):
            fault_type = ProviderMisconfigured
            reason += "; check the provider's api_key_env, base_url and model"
        return fault_type(
            reason,
            provider=self.name,
            status=status,
            retry_after_s=_retry_after_s(response),
            request_id=request_id,
        )

    def _completion(
        self, payload: Any, messages: Sequence[ChatMessage], started: float, request_id: str | None
    ) -> Completion:
        try:
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            reason = f"{self.name} answered without choices[0].message: {str(payload)[:200]!r}"
            raise ProviderMalformed(reason, provider=self.name, request_id=request_id) from exc
        usage = payload.get("usage") or {}
        prompt_words = " ".join(m["content"] for m in messages)
        resolved_model = str(payload.get("model") or self.model)
        fingerprint = payload.get("system_fingerprint")
        return Completion(
            text=text,
            provider=self.name,
            model=self.model,
            model_version=f"{resolved_model}@{fingerprint}" if fingerprint else resolved_model,
            tokens_in=_count(usage.get("prompt_tokens"), estimate_tokens(prompt_words)),
            tokens_out=_count(usage.get("completion_tokens"), estimate_tokens(text)),
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason=str(choice.get("finish_reason") or "unknown"),
        )

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with equal jitter, so a burst of failed calls does not retry in lockstep."""
        if retry_after_s is not None:
            return min(retry_after_s, self.config.backoff_max_s)
        ceiling = min(self.config.backoff_s * 2.0**attempt, self.config.backoff_max_s)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _with_env_base_url(config: HTTPEndpointConfig, environ: Mapping[str, str], source: str) -> HTTPEndpointConfig:
    base_url = environ.get(config.base_url_env, "") if config.base_url_env else ""
    if not base_url:
        return config
    if not _HTTP_URL.match(base_url):
        problem = f"key 'base_url_env' names {config.base_url_env}, whose value {base_url!r} is not an http(s) URL"
        raise ProviderConfigError(source, [problem + ": set it to one such as http://127.0.0.1:8000/v1"])
    return config.model_copy(update={"base_url": base_url.rstrip("/")})


def _count(reported: Any, estimate: int) -> int:
    return reported if isinstance(reported, int) and reported >= 0 else estimate


def _error_detail(response: _Reply) -> str:
    """The endpoint's own error message (OpenAI puts it in error.message), else the start of the body."""
    try:
        error = json.loads(response.text).get("error")
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason
    if isinstance(error, dict):
        return str(error.get("message", error))[:200]
    return str(error)[:200]


def _retry_after_s(response: _Reply) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff
