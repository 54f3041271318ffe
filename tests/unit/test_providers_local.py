"""The local GGUF provider's pure parts: the plain prompt a base model continues, and how a bad model file
is refused before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.answerer.local_model import GGUF_MAGIC, LocalGGUFProvider, plain_prompt, resolve_file
from services.answerer.providers import ProviderConfigError, provider_from_config


def test_the_plain_prompt_is_a_transcript_ending_on_the_assistant_cue() -> None:
    prompt = plain_prompt(
        [
            {"role": "system", "content": "You help store staff. "},
            {"role": "user", "content": "Is aisle 5 open?"},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "Until when?"},
        ]
    )
    assert prompt == "You help store staff.\n\nUser: Is aisle 5 open?\nAssistant: Yes.\nUser: Until when?\nAssistant:"


def test_a_file_that_is_not_gguf_is_refused_naming_the_path_key(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ProviderConfigError, match=r"providers.yaml: key 'path': .* is not a GGUF file"):
        provider_from_config({"kind": "local_gguf", "path": str(not_gguf)}, source="providers.yaml")


def test_a_missing_file_is_refused_naming_the_path_key(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match=r"key 'path': .*No such file"):
        provider_from_config({"kind": "local_gguf", "path": str(tmp_path / "absent.gguf")})


async def test_an_explicit_gguf_path_builds_a_provider_without_loading_it(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(GGUF_MAGIC + b"\x03\x00\x00\x00")
    provider = provider_from_config({"kind": "local_gguf", "model": "tiny", "path": str(gguf)})
    assert isinstance(provider, LocalGGUFProvider)
    assert (provider.name, provider.model) == ("local_gguf", "tiny")
    await provider.aclose()


def test_an_explicit_file_is_versioned_by_its_own_sha256(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(GGUF_MAGIC + b"\x03\x00\x00\x00")
    assert resolve_file(gguf).model_version == "file+sha256.527ee9a8eac0"
