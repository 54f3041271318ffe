"""The answerer's providers by name, from the declarative providers.yaml (or, without one, the single provider
the SWITCHYARD_MODEL_* settings describe), each guarded, each with its ordered fallback list."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.answerer.memory import guarded_memory_provider, memory_entries
from services.answerer.providers import AnyProviderConfig, ProviderConfigError, parse_provider_config
from services.answerer.resilience import GuardedProvider
from services.settings import Settings

PROVIDERS_FILE_ENV = "SWITCHYARD_PROVIDERS_FILE"  # the providers.yaml to use; unset: the model settings
DEFAULT_PROVIDER = "default"
_TOP_LEVEL_KEYS = ("default_provider", "providers")


class ProviderRegistry:
    """Guarded providers by the name routes use, and who answers after each one."""

    def __init__(
        self,
        providers: Mapping[str, GuardedProvider],
        *,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        default: str = DEFAULT_PROVIDER,
        source: str = "provider config",
    ) -> None:
        unknown = {name for chain in (fallbacks or {}).values() for name in chain} - set(providers)
        if default not in providers or unknown:
            problem = f"default {default!r} and fallbacks {sorted(unknown)} must be among {sorted(providers)}"
            raise ProviderConfigError(source, [problem])
        self.providers = dict(providers)
        self.fallbacks = {name: tuple((fallbacks or {}).get(name, ())) for name in providers}
        self.default = default
        self.source = source

    def __getitem__(self, name: str) -> GuardedProvider:
        return self.providers[name]

    def chain(self, name: str | None) -> tuple[list[GuardedProvider], list[str]]:
        """The providers to try, in order, for a route naming `name`, and notes for the failover record: a
        name this registry does not know falls back to the default provider's chain, and says so."""
        notes: list[str] = []
        if name is None:
            name = self.default
        elif name not in self.providers:
            notes.append(f"{name}: not configured")
            name = self.default
        ordered = dict.fromkeys([name, *self.fallbacks[name]])
        return [self.providers[n] for n in ordered], notes

    async def load(self) -> None:
        for provider in self.providers.values():
            await provider.load()

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


@dataclass(frozen=True)
class ProvidersFile:
    """A providers.yaml, validated but not built: the model providers' configs, the learning loop's answer memory
    entries (services/answerer/memory.py), and the default provider's name."""

    source: str
    configs: dict[str, AnyProviderConfig]
    memories: dict[str, dict[str, Any]]
    default: str

    @property
    def names(self) -> set[str]:
        return {*self.configs, *self.memories}


def read_providers(path: Path) -> ProvidersFile:
    """Read and validate a providers.yaml, building nothing; every error names the file, the key and the fix."""
    source = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProviderConfigError(source, [f"cannot be read ({exc.strerror}): check {PROVIDERS_FILE_ENV}"]) from None
    except yaml.YAMLError as exc:
        raise ProviderConfigError(source, [f"is not valid YAML: {exc}"]) from None
    document, memories = memory_entries(document)
    configs, default = _validated(document, source)
    return ProvidersFile(source, configs, memories, default)


def load_providers(path: Path, environ: Mapping[str, str] = os.environ) -> ProviderRegistry:
    """Read, validate and build a providers.yaml; every error names the file, the key and the fix."""
    found = read_providers(path)
    source = found.source
    providers = {
        name: GuardedProvider.from_config(c, source=source, environ=environ) for name, c in found.configs.items()
    }
    fallbacks = {name: config.fallback for name, config in found.configs.items()}
    for name, entry in found.memories.items():
        providers[name], fallbacks[name] = guarded_memory_provider(name, entry, source)
    return with_shadow(ProviderRegistry(providers, fallbacks=fallbacks, default=found.default, source=source))


def answerer_registry(settings: Settings, environ: Mapping[str, str] = os.environ) -> ProviderRegistry:
    """The providers.yaml that settings.providers_file (SWITCHYARD_PROVIDERS_FILE) names, else the one provider
    of the model settings, registered as "default" (the provider name the router's routes use)."""
    if settings.providers_file:
        return load_providers(settings.providers_file, environ)
    source = "answerer model settings (SWITCHYARD_MODEL_*)"
    config = parse_provider_config(settings.model_provider_config(), source=source)
    provider = GuardedProvider.from_config(config, source=source, environ=environ)
    return with_shadow(ProviderRegistry({DEFAULT_PROVIDER: provider}, source=source))


def with_shadow(registry: ProviderRegistry) -> ProviderRegistry:
    """A candidate model in shadow mode (the learning loop's shadow.json) answers beside its incumbent."""
    from services.learning.shadow import attach_shadow  # the learning loop imports the answerer, not the reverse

    return attach_shadow(registry)


def _validated(document: Any, source: str) -> tuple[dict[str, AnyProviderConfig], str]:
    if not isinstance(document, dict):
        raise ProviderConfigError(source, ["must be a mapping with keys default_provider and providers"])
    problems = [
        f"key {key!r} is not known: use {' or '.join(_TOP_LEVEL_KEYS)}"
        for key in document
        if key not in _TOP_LEVEL_KEYS
    ]
    entries = document.get("providers")
    if not isinstance(entries, dict) or not entries:
        raise ProviderConfigError(source, [*problems, "key 'providers' must map each provider's name to its config"])
    configs: dict[str, AnyProviderConfig] = {}
    for name, entry in entries.items():
        try:
            configs[str(name)] = _parsed_entry(str(name), entry, source)
        except ProviderConfigError as error:
            problems.extend(error.problems)
    default = document.get("default_provider", DEFAULT_PROVIDER)
    if default not in entries:
        problems.append(f"key 'default_provider' is {default!r}: set it to one of {sorted(map(str, entries))}")
    problems.extend(_fallback_problems(configs, known=set(map(str, entries))))
    if problems:
        raise ProviderConfigError(source, problems)
    return configs, str(default)


def _parsed_entry(name: str, entry: Any, source: str) -> AnyProviderConfig:
    prefix = f"providers.{name}."
    if isinstance(entry, dict) and entry.get("name", name) != name:
        problem = f"key '{prefix}name' is {entry['name']!r}, not the provider's key {name!r}: drop it"
        raise ProviderConfigError(source, [problem])
    config = {**entry, "name": name} if isinstance(entry, dict) else entry
    return parse_provider_config(config, source=source, key_prefix=prefix)


def _fallback_problems(configs: Mapping[str, AnyProviderConfig], *, known: set[str]) -> list[str]:
    problems = []
    for name, config in configs.items():
        for index, fallback in enumerate(config.fallback):
            key = f"providers.{name}.fallback.{index}"
            if fallback == name:
                problems.append(f"key {key!r} is {name!r} itself: a provider cannot be its own fallback")
            elif fallback not in known:
                problems.append(f"key {key!r} is {fallback!r}, which is not a provider: use one of {sorted(known)}")
    return problems
