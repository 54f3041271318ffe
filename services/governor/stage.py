"""First governance logic: e-mail addresses and phone numbers are masked with stable typed tokens before any
model sees the request. Presidio-based PII, toxicity, injection and policy rules come in their own issue."""

from __future__ import annotations

import re
from typing import ClassVar

from services.runtime.models import Finding, Governance, Stitched, Verdict
from services.runtime.stage import Stage

RULE_VERSION = "builtin-1"
# RFC 5322 dot-atom local parts (letters, digits and !#$%&'*+/=?^_`{|}~.-) at a dotted domain.
EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# International or North American numbers: 7+ digits with optional separators, not part of a longer token.
PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().-]{6,}\d(?!\w)")


def mask_pii(text: str) -> tuple[str, list[Finding]]:
    """Replace each e-mail and phone number with <EMAIL_n>/<PHONE_n>; the same value gets the same token."""
    findings: list[Finding] = []
    for kind, pattern in (("EMAIL", EMAIL), ("PHONE", PHONE)):
        tokens: dict[str, str] = {}

        def token_for(match: re.Match[str], kind: str = kind, tokens: dict[str, str] = tokens) -> str:
            value = match.group(0)
            if kind == "PHONE" and sum(c.isdigit() for c in value) < 7:
                return value
            if value not in tokens:
                tokens[value] = f"<{kind}_{len(tokens) + 1}>"
            return tokens[value]

        text = pattern.sub(token_for, text)
        findings += [
            Finding(
                rule_id=f"pii.{kind.lower()}",
                rule_version=RULE_VERSION,
                kind="pii",
                action="mask",
                detail=f"{kind.lower()} replaced by {token}",
            )
            for token in tokens.values()
        ]
    return text, findings


class Governor(Stage[Stitched, Governance]):
    name: ClassVar[str] = "governor"
    input_topic: ClassVar[str] = "stitched"
    input_record: ClassVar[str] = "Stitched"
    input_model = Stitched
    output_topic: ClassVar[str] = "governed"
    output_record: ClassVar[str] = "Governed"
    section: ClassVar[str] = "governance"

    async def decide(self, record: Stitched) -> Governance:
        redacted, findings = mask_pii(record.request.text)
        return Governance(
            verdict=Verdict.MASK if findings else Verdict.ALLOW, findings=findings, redacted_text=redacted
        )
