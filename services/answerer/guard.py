"""The output guard: what a model wrote is checked before the store sees it, with the governor's rule engine.

- Unauthorized commitments (refund, discount, price match, delivery date, warranty, exception) and stock the
  inventory data does not show: the policy's `output` rules on the commitments extracted from the answer
  (services.policy.facts); a breach replaces the answer with the rule's compliant reply or escalates it.
- Toxicity of the answer (the governor's toxicity classifier, when loaded).
- PII leakage: a model only ever saw tokens, so a raw e-mail, phone, card or id in its answer was invented or
  leaked and is withheld; a value it echoed of what it was shown goes back to its token; an invented token, and
  a token of a type the store may not see (policies/privacy.yaml `store`), become neutral words. The tokens the
  store may see stay tokens in the answer: they are restored only where the answer leaves Switchyard to the store
  that asked (`restore_for_store`, at the edge: services.gateway.restore), so no record, table or audit chain
  downstream holds the values.

Replies for requests the governor held (BLOCK, ESCALATE) live here too, so the customer always gets a calm,
fixed answer that says what happens next.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from services.policy.engine import FINDING_ACTION, PolicyEngine
from services.policy.facts import extract_answer_facts
from services.shared.pii import TOKEN, retokenise
from services.wire.models import Finding, Governance, Governed, Verdict

GUARD_VERSION: Final = "output-guard-1"
CALM_REPLY: Final = (
    "I'd like to help, and I'll keep this respectful. A colleague will be with you shortly to sort this out."
)
INJECTION_REPLY: Final = (
    "I can help with our products, orders, returns and store services. What would you like to know?"
)
APPROVAL_REPLY: Final = "This needs a manager's approval: a manager must approve it and will confirm with you shortly."
BLOCK_REPLY: Final = "Thanks for your patience: a colleague will help you with this request shortly."
TOXIC_ANSWER_REPLY: Final = "Sorry, I couldn't put together a good answer. A colleague will help you shortly."
WITHHELD: Final = "[withheld]"
# raw identifiers a model must never produce: it only saw tokens. A match without the `leak` group is text a
# pattern consumed so as not to scan it again, and stays: the e-mail pattern takes a run of local-part characters
# not followed by an address whole, since every later start inside it fails the same way and trying them all made
# the scan quadratic.
LEAK_PATTERNS: Final[Mapping[str, re.Pattern[str]]] = {
    "EMAIL": re.compile(
        r"(?P<leak>[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})|[A-Za-z0-9._%+-]++"
    ),
    "CARD": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    "PHONE": re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4}(?!\w)"),
    "GOV_ID": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
}
NEUTRAL: Final[Mapping[str, str]] = {
    "PERSON": "the customer",
    "EMAIL": "the e-mail address on file",
    "PHONE": "the phone number on file",
    "CARD": "the card on file",
    "ACCOUNT": "the account on file",
    "ADDRESS": "the address on file",
    "DOB": "the date of birth on file",
    "GOV_ID": "the id on file",
}


@dataclass(frozen=True)
class GuardResult:
    text: str
    findings: list[Finding]
    replaced: bool


def held_reply(governance: Governance, engine: PolicyEngine | None) -> str:
    """The fixed reply for a request the governor held: the strictest finding decides which."""
    for finding in governance.findings:
        if finding.kind == "toxicity" and finding.action == "block":
            return CALM_REPLY
    for finding in governance.findings:
        if finding.rule_id == "injection.request":
            return INJECTION_REPLY
    wanted = "block" if governance.verdict == Verdict.BLOCK else "escalate"
    for finding in governance.findings:
        if finding.action == wanted and engine is not None:
            reply = _rule_reply(engine, finding.rule_id)
            if reply:
                return reply
    return BLOCK_REPLY if governance.verdict == Verdict.BLOCK else APPROVAL_REPLY


def _rule_reply(engine: PolicyEngine, rule_id: str) -> str | None:
    try:
        return engine.rule(rule_id).reply
    except KeyError:  # the rule was removed by a reload since the governor ran
        return None


def check_answer(
    record: Governed,
    answer: str,
    engine: PolicyEngine,
    *,
    tokens: Mapping[str, str],
    toxicity: Callable[[str], float] | None = None,
    toxicity_threshold: float = 0.5,
) -> GuardResult:
    """The answer the store may see, and the findings that shaped it. Pure, given the toxicity scorer."""
    checked = check_commitments(record, answer, engine)
    if checked.replaced:
        return checked
    score = None if toxicity is None else toxicity(answer)
    return screen_answer(
        answer, checked.findings, engine, tokens=tokens, toxicity=score, toxicity_threshold=toxicity_threshold
    )


def check_commitments(record: Governed, answer: str, engine: PolicyEngine) -> GuardResult:
    """The first half of check_answer: the policy's output rules on what the answer commits to. A breach replaces
    the answer, and then nothing else is checked (the answer's toxicity is not needed: score it after this)."""
    facts = extract_answer_facts(answer, record.context, record.governance.facts)
    outcome = engine.decide(facts, "output")
    findings = list(outcome.findings)
    if outcome.action in ("block", "require_approval"):
        reply = outcome.reply or (APPROVAL_REPLY if outcome.action == "require_approval" else BLOCK_REPLY)
        return GuardResult(reply, findings, replaced=True)
    return GuardResult(answer, findings, replaced=False)


def screen_answer(
    answer: str,
    findings: Sequence[Finding],
    engine: PolicyEngine,
    *,
    tokens: Mapping[str, str],
    toxicity: float | None,
    toxicity_threshold: float = 0.5,
) -> GuardResult:
    """The second half of check_answer, for an answer check_commitments released with `findings`: its toxicity
    score (None: not scored), then leaked PII withheld and the answer tokenised for the store
    (`tokenised_for_store`)."""
    kept = list(findings)
    if toxicity is not None and toxicity >= toxicity_threshold:
        kept.append(_finding("toxicity.answer", "toxicity", "block", f"the answer reads as abusive ({toxicity:.2f})"))
        return GuardResult(TOXIC_ANSWER_REPLY, kept, replaced=True)
    text, leaks = _withhold_leaks(answer)
    text, token_findings = tokenised_for_store(text, tokens, engine.visible_types("store"))
    return GuardResult(text, kept + leaks + token_findings, replaced=False)


def _withhold_leaks(answer: str) -> tuple[str, list[Finding]]:
    findings: list[Finding] = []
    for kind, pattern in LEAK_PATTERNS.items():
        answer, count = _withhold(pattern, answer)
        if count:
            findings.append(
                _finding(
                    f"pii.output_{kind.lower()}",
                    f"pii.{kind.lower()}",
                    "mask",
                    f"{count} {kind.lower()} value(s) in the answer the model never saw: withheld",
                )
            )
    return answer, findings


def _withhold(pattern: re.Pattern[str], text: str) -> tuple[str, int]:
    """`text` with each leak `pattern` finds replaced by WITHHELD, and how many were."""
    withheld = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal withheld
        if "leak" in pattern.groupindex and match.group("leak") is None:
            return match.group(0)
        withheld += 1
        return WITHHELD

    return pattern.sub(replace, text), withheld


def tokenised_for_store(text: str, tokens: Mapping[str, str], visible: frozenset[str]) -> tuple[str, list[Finding]]:
    """The answer as it travels on and is audited: values the model echoed back as their tokens again, the tokens
    of the types the store may see kept (the edge restores them), any other token in neutral words."""
    invented: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token, kind = match.group(0), match.group(1)
        if token not in tokens:
            invented.append(token)
            return NEUTRAL[kind]
        return token if kind in visible else NEUTRAL[kind]

    kept = TOKEN.sub(replace, retokenise(text, tokens))
    findings = []
    if invented:
        findings.append(
            _finding(
                "pii.invented_token",
                "pii.invented",
                "mask",
                f"the answer used {len(invented)} token(s) the request never had: {', '.join(sorted(set(invented)))}",
            )
        )
    return kept, findings


def restore_for_store(text: str, tokens: Mapping[str, str], visible: frozenset[str]) -> str:
    """Where an answer leaves Switchyard to the store that asked: the tokens of the types the store may see back
    to their values; a token the mapping does not hold (the vault entry expired or erased) or of another type in
    neutral words, so the store never reads a bare token."""

    def replace(match: re.Match[str]) -> str:
        token, kind = match.group(0), match.group(1)
        return tokens[token] if token in tokens and kind in visible else NEUTRAL[kind]

    return TOKEN.sub(replace, text)


def visible_for_chain(engine: PolicyEngine, providers: Sequence[str]) -> frozenset[str]:
    """The PII types every provider of a fallback chain may see: a failover must not widen what is seen."""
    visible: frozenset[str] | None = None
    for name in providers:
        types = engine.visible_types(name)
        visible = types if visible is None else visible & types
    return visible or frozenset()


def _finding(rule_id: str, kind: str, action: str, detail: str) -> Finding:
    return Finding(
        rule_id=rule_id,
        rule_version=GUARD_VERSION,
        kind=kind,
        action=FINDING_ACTION.get(action, action),
        detail=detail,
        inputs={},
    )
