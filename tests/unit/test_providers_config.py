"""Provider configuration: what the factory builds, and errors that name the source, the key and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from services.answerer.providers import (
    LocalGGUFConfig,
    OpenAICompatibleProvider,
    OpenAIProviderConfig,
    ProviderConfigError,
    parse_provider_config,
    provider_from_config,
)

OPENAI = {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1/", "model": "qwen2.5-7b-instruct"}


def config_error(config: dict[str, Any]) -> str:
    with pytest.raises(ProviderConfigError) as raised:
        provider_from_config(config, source="providers.yaml")
    return str(raised.value)


async def test_an_openai_config_builds_an_openai_compatible_provider() -> None:
    provider = provider_from_config({**OPENAI, "name": "vllm-east", "timeout_s": 3, "retries": 1})
    try:
        assert isinstance(provider, OpenAICompatibleProvider)
        assert (provider.name, provider.model) == ("vllm-east", "qwen2.5-7b-instruct")
        assert provider.config.base_url == "http://127.0.0.1:8000/v1"
    finally:
        await provider.aclose()


def test_a_local_config_gets_the_documented_defaults() -> None:
    parsed = parse_provider_config({"kind": "local_gguf"})
    assert isinstance(parsed, LocalGGUFConfig)
    assert (parsed.model, parsed.n_threads, parsed.max_context, parsed.prompt_format) == (
        "gemma3-270m",
        1,
        2048,
        "auto",
    )


def test_an_openai_config_gets_the_documented_defaults() -> None:
    parsed = parse_provider_config(OPENAI)
    assert isinstance(parsed, OpenAIProviderConfig)
    assert (parsed.timeout_s, parsed.retries, parsed.api_key_env) == (10.0, 2, None)


def test_a_config_that_is_not_a_mapping_says_so() -> None:
    message = config_error(["openai"])  # type: ignore[arg-type]
    assert message == "providers.yaml: must be a mapping with keys such as kind and model, not ['openai']"


def test_a_missing_kind_names_the_key_and_the_choices() -> None:
    message = config_error({"base_url": "http://x/v1", "model": "m"})
    assert message == "providers.yaml: key 'kind' is missing: set it to 'openai', 'custom' or 'local_gguf'"


def test_an_unknown_kind_names_the_value_and_the_choices() -> None:
    message = config_error({"kind": "anthropic"})
    assert "key 'kind' is 'anthropic': set it to 'openai', 'custom' or 'local_gguf'" in message


def test_a_missing_base_url_names_the_key() -> None:
    assert config_error({"kind": "openai", "model": "m"}) == "providers.yaml: key 'base_url' is required: add it"


def test_every_bad_key_is_reported_at_once() -> None:
    message = config_error({**OPENAI, "timeout_s": 0, "retries": -1, "timout_s": 3})
    assert "key 'timeout_s': Input should be greater than 0 (got 0)" in message
    assert "key 'retries': Input should be greater than or equal to 0 (got -1)" in message
    assert "key 'timout_s' is not known: remove it or fix its spelling" in message


def test_a_base_url_without_scheme_is_refused_with_an_example() -> None:
    message = config_error({**OPENAI, "base_url": "127.0.0.1:8000/v1"})
    assert "key 'base_url': must be an http:// or https:// URL such as http://127.0.0.1:8000/v1" in message


def test_an_api_key_pasted_into_api_key_env_is_refused() -> None:
    message = config_error({**OPENAI, "api_key_env": "sk-live-abc123"})
    assert "key 'api_key_env': must be the NAME of an environment variable" in message


def test_an_unset_api_key_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_ABSENT_KEY", raising=False)
    message = config_error({**OPENAI, "api_key_env": "SWITCHYARD_ABSENT_KEY"})
    assert "key 'api_key_env' names SWITCHYARD_ABSENT_KEY, which is not set" in message


def test_local_settings_out_of_range_name_the_key() -> None:
    message = config_error({"kind": "local_gguf", "n_threads": 0, "prompt_format": "chatml"})
    assert "key 'n_threads': Input should be greater than or equal to 1 (got 0)" in message
    assert "key 'prompt_format'" in message


def test_an_unknown_packaged_model_names_the_ones_that_exist() -> None:
    message = config_error({"kind": "local_gguf", "model": "llama-70b"})
    assert "key 'model' is 'llama-70b', which no installed package ships" in message
    assert "gemma3-270m" in message
