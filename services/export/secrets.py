"""Literal secrets in configuration: found before a file leaves the machine, then refused or replaced by an
environment reference (`${NAME}`), so a bundle carries where a secret comes from and never its value."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

# keys whose value is a credential; `*_env` keys name a variable instead and are the sanctioned form
SECRET_KEY: Final = re.compile(
    r"(^|_)(api_?key|apikey|token|secret|password|passwd|credentials?|authorization|bearer|private_key)$", re.I
)
# values that are credentials whatever their key: provider keys, bearer headers, cloud access keys, private keys
SECRET_VALUE: Final = re.compile(
    r"\b(sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|Bearer\s+[A-Za-z0-9._~+/=-]{16,}|AKIA[0-9A-Z]{16}|"
    r"gh[pousr]_[A-Za-z0-9]{30,}|xox[abp]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)
ENV_REFERENCE: Final = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*\}$")


class LiteralSecretError(ValueError):
    """A configuration file holds a secret value; the export is refused, naming each file and key."""

    def __init__(self, findings: list[SecretFinding]) -> None:
        self.findings = findings
        lines = "\n".join(f"  {finding}" for finding in findings)
        super().__init__(
            f"refusing to export literal secrets:\n{lines}\n"
            "move each value to an environment variable and name it (api_key_env: NAME), "
            "or export with --redact-secrets to replace them by ${NAME} references"
        )


@dataclass(frozen=True)
class SecretFinding:
    file: str
    key: str
    """Dotted path of the key in the YAML document."""
    value: str
    reason: str

    @property
    def reference(self) -> str:
        """The environment variable a redacted value is replaced by: SWITCHYARD_SECRET_<KEY PATH>."""
        name = re.sub(r"[^A-Z0-9]+", "_", self.key.upper()).strip("_")
        return f"SWITCHYARD_SECRET_{name}"

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


def find_secrets(text: str, file: str) -> list[SecretFinding]:
    """Every literal secret in one YAML file: secret-named keys with a literal value, credential-shaped
    values under any key, and URLs that carry a password."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return [SecretFinding(file, "", "", "not valid YAML: cannot be checked for secrets")]
    findings: list[SecretFinding] = []
    for document in documents:
        for key, value in _leaves(document, ""):
            reason = _secret_reason(key, value)
            if reason:
                findings.append(SecretFinding(file, key, value, reason))
    return findings


def redact(text: str, findings: list[SecretFinding]) -> str:
    """The file with each secret value replaced in place by its ${NAME} reference; comments and layout kept."""
    for finding in findings:
        if finding.value:
            text = text.replace(finding.value, "${" + finding.reference + "}")
    return text


def _leaves(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def _secret_reason(key: str, value: str) -> str | None:
    if not value or ENV_REFERENCE.match(value):
        return None
    last = re.split(r"[.\[]", key)[-1]
    if SECRET_KEY.search(last) and not last.lower().endswith("_env"):
        return "a secret-named key holds a literal value"
    if SECRET_VALUE.search(value):
        return "the value has the shape of a credential"
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            return "the URL carries a password"
        if re.search(r"(^|&)(api_?key|key|token|access_token|sig)=", parts.query, re.I):
            return "the URL carries a key in its query string"
    return None
