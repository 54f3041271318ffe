"""providers.yaml: the shipped file loads, and a bad file is refused with errors that name it and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.answerer.local_model import LocalGGUFProvider
from services.answerer.providers import OpenAICompatibleProvider, ProviderConfigError
from services.answerer.registry import PROVIDERS_FILE_ENV, ProviderRegistry, answerer_registry, load_providers
from services.settings import REPO_ROOT, Settings

SHIPPED = REPO_ROOT / "providers" / "providers.yaml"
DEFAULT = {"kind": "openai", "base_url": "http://127.0.0.1:8199/v1", "model": "stub", "fallback": ["local"]}
LOCAL = {"kind": "local_gguf", "model": "gemma3-270m"}


def written(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def load_error(tmp_path: Path, document: Any) -> str:
    path = written(tmp_path, document)
    with pytest.raises(ProviderConfigError) as raised:
        load_providers(path, environ={})
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    return message


async def test_the_shipped_providers_file_loads_with_its_fallback_order() -> None:
    registry = load_providers(SHIPPED, environ={})
    try:
        assert set(registry.providers) == {"default", "local", "custom", "answer_memory"}
        chain, notes = registry.chain("default")
        assert [p.name for p in chain] == ["default", "local"]
        assert notes == []
        default = registry["default"]
        assert isinstance(default.provider, OpenAICompatibleProvider)
        assert default.provider.config.base_url == "http://127.0.0.1:8199/v1"
        assert (default.limit.limit, default.call_timeout_s) == (64, 30.0)
        assert default.price.output_usd == 0.60
        assert isinstance(registry["local"].provider, LocalGGUFProvider)
        assert registry["local"].price.cost_usd(1000, 1000) == 0.0
        assert [p.name for p in registry.chain("custom")[0]] == ["custom", "default", "local"]
    finally:
        await registry.aclose()


async def test_base_url_env_overrides_the_base_url() -> None:
    registry = load_providers(SHIPPED, environ={"SWITCHYARD_MODEL_BASE_URL": "http://10.0.0.7:8000/v1/"})
    try:
        provider = registry["default"].provider
        assert isinstance(provider, OpenAICompatibleProvider)
        assert provider.config.base_url == "http://10.0.0.7:8000/v1"
    finally:
        await registry.aclose()


def test_a_base_url_env_holding_no_url_names_the_key_and_the_variable(tmp_path: Path) -> None:
    path = written(tmp_path, {"providers": {"default": {**DEFAULT, "fallback": [], "base_url_env": "MODEL_URL"}}})
    with pytest.raises(ProviderConfigError, match="key 'base_url_env' names MODEL_URL, whose value 'nope'"):
        load_providers(path, environ={"MODEL_URL": "nope"})


def test_a_bad_provider_key_is_named_with_its_path_in_the_file(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        {"providers": {"default": {**DEFAULT, "timeout_s": -1, "breaker": {"cooldown_s": 0}}, "local": LOCAL}},
    )
    assert "key 'providers.default.timeout_s': Input should be greater than 0 (got -1)" in message
    assert "key 'providers.default.breaker.cooldown_s': Input should be greater than 0 (got 0)" in message


def test_an_unknown_kind_names_the_provider_and_the_kinds(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"providers": {"default": {"kind": "anthropic"}}})
    assert "key 'providers.default.kind' is 'anthropic': set it to 'openai', 'custom' or 'local_gguf'" in message


def test_a_misspelt_key_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"providers": {"default": {**DEFAULT, "max_concurency": 4}, "local": LOCAL}})
    assert "key 'providers.default.max_concurency' is not known: remove it or fix its spelling" in message


def test_a_fallback_that_is_not_a_provider_is_named(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, {"providers": {"default": {**DEFAULT, "fallback": ["local", "gpt4"]}, "local": LOCAL}}
    )
    assert "key 'providers.default.fallback.1' is 'gpt4', which is not a provider: use one of" in message


def test_a_provider_cannot_be_its_own_fallback(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"providers": {"default": {**DEFAULT, "fallback": ["default"]}}})
    assert "key 'providers.default.fallback.0' is 'default' itself" in message


def test_a_default_provider_that_does_not_exist_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"default_provider": "primary", "providers": {"local": LOCAL}})
    assert "key 'default_provider' is 'primary': set it to one of ['local']" in message


def test_a_name_that_differs_from_the_providers_key_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"providers": {"local": {**LOCAL, "name": "gemma"}}})
    assert "key 'providers.local.name' is 'gemma', not the provider's key 'local'" in message


def test_an_api_key_instead_of_its_variable_name_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"providers": {"default": {**DEFAULT, "fallback": [], "api_key_env": "sk-1"}}})
    assert "key 'providers.default.api_key_env': must be the NAME of an environment variable" in message


def test_a_file_without_providers_or_with_unknown_keys_says_what_it_needs(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"provider": {"local": LOCAL}})
    assert "key 'provider' is not known: use default_provider or providers" in message
    assert "key 'providers' must map each provider's name to its config" in message


def test_invalid_yaml_and_a_missing_file_name_the_file(tmp_path: Path) -> None:
    assert "is not valid YAML" in load_error(tmp_path, "providers: [unclosed")
    with pytest.raises(ProviderConfigError, match=f"{tmp_path / 'absent.yaml'}: cannot be read"):
        load_providers(tmp_path / "absent.yaml", environ={})


async def test_without_a_providers_file_the_model_settings_are_the_default_provider() -> None:
    settings = Settings(
        model_provider="openai", model_base_url="http://127.0.0.1:9/v1", model_name="stub", providers_file=None
    )
    registry = answerer_registry(settings, environ={})
    try:
        chain, _ = registry.chain("default")
        assert [(p.name, p.model) for p in chain] == [("openai", "stub")]
    finally:
        await registry.aclose()


async def test_the_providers_file_env_var_selects_a_providers_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROVIDERS_FILE_ENV, str(SHIPPED))
    registry = answerer_registry(Settings(), environ={})
    try:
        assert isinstance(registry, ProviderRegistry)
        assert registry.source == str(SHIPPED)
    finally:
        await registry.aclose()
