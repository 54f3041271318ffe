"""The policy rule engine shared by the governor (before the model) and the answerer's output guard (after it).

Rules are declarative YAML files under policies/ (one file, or every *.yaml of a directory), validated by pydantic
at start-up with errors that name the file and the rule, and reloaded when they change (`PolicyWatcher`).
`PolicyEngine.evaluate(facts)` is pure and deterministic: rules run in (priority descending, id ascending) order,
every matching rule yields one Finding, and `outcome` folds them into the strictest action.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from services.runtime.watched import WatchedConfig

# strict YAML (a key given twice is an error) and error wording shared with the route table
from services.shared.route_table import _key_path, _StrictLoader, _yaml_problem
from services.wire.models import Finding, Verdict

log = logging.getLogger("switchyard.policy")

DEFAULT_CHECK_EVERY_S: Final = 2.0
RULE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]*$"
FACT_PATTERN: Final = r"^[a-z][a-z0-9_]*$"

ActionName = Literal["allow", "modify", "require_approval", "block"]
Stage = Literal["input", "output"]

# strictest last: the outcome of several findings is the one with the highest rank
ACTION_RANK: Final[Mapping[str, int]] = {"allow": 0, "modify": 1, "require_approval": 2, "block": 3}
# what a finding records as its action, in the vocabulary of Finding.action and Verdict
FINDING_ACTION: Final[Mapping[str, str]] = {
    "allow": "allow",
    "modify": "modify",
    "require_approval": "escalate",
    "block": "block",
}
VERDICT_OF: Final[Mapping[str, Verdict]] = {
    "allow": Verdict.ALLOW,
    "modify": Verdict.ALLOW,
    "require_approval": Verdict.ESCALATE,
    "block": Verdict.BLOCK,
}
# the Finding.action of a require_approval rule that a manager's approval satisfied (see approval_covers)
APPROVED_ACTION: Final = "approved"
# the facts a manager's approval adds (services.policy.facts, from the request's attributes)
APPROVAL_FACTS: Final = ("approved_by", "approval_for")
# the PII token types (services.shared.pii) a pii_visibility entry may name
PII_TYPES: Final = ("PERSON", "EMAIL", "PHONE", "CARD", "ACCOUNT", "ADDRESS", "DOB", "GOV_ID")
PiiType = Literal["PERSON", "EMAIL", "PHONE", "CARD", "ACCOUNT", "ADDRESS", "DOB", "GOV_ID"]
OPERATORS: Final = ("equals", "one_of", "not_one_of", "gt", "gte", "lt", "lte", "present", "any")


class PolicyError(ValueError):
    """A policy file cannot be used. `problems` holds one line per problem: `file: rule: key: what is wrong: fix`."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid policy:\n" + "\n".join(f"  {line}" for line in self.problems))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Spec):
    """One test on one fact, or `any` of a list of conditions. Strings compare case-insensitively; a numeric
    test on a fact that is missing or not a number does not hold."""

    fact: str | None = Field(None, pattern=FACT_PATTERN)
    equals: str | None = None
    one_of: tuple[str, ...] | None = None
    not_one_of: tuple[str, ...] | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    present: bool | None = None
    any: tuple[Condition, ...] | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in OPERATORS if getattr(self, name) is not None]
        if self.any is not None:
            if self.fact is not None or len(given) != 1:
                raise ValueError("a condition with `any` has no fact and no other operator")
            return self
        if self.fact is None:
            raise ValueError("a condition needs `fact` (or `any`)")
        if len(given) != 1:
            raise ValueError(f"give exactly one operator of {', '.join(OPERATORS[:-1])}; got {given or 'none'}")
        return self

    def facts(self) -> list[str]:
        if self.any is not None:
            return [name for condition in self.any for name in condition.facts()]
        return [self.fact] if self.fact else []

    def holds(self, facts: Mapping[str, str]) -> bool:
        if self.any is not None:
            return any(condition.holds(facts) for condition in self.any)
        value = facts.get(self.fact or "")
        if self.present is not None:
            return (value is not None and value != "") == self.present
        if value is None:
            return self.not_one_of is not None
        if self.equals is not None:
            return value.casefold() == self.equals.casefold()
        if self.one_of is not None:
            return value.casefold() in {option.casefold() for option in self.one_of}
        if self.not_one_of is not None:
            return value.casefold() not in {option.casefold() for option in self.not_one_of}
        return _numeric(value, self)


def _numeric(value: str, condition: Condition) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    if number != number:  # NaN compares false with everything: treat it as not a number
        return False
    if condition.gt is not None:
        return number > condition.gt
    if condition.gte is not None:
        return number >= condition.gte
    if condition.lt is not None:
        return number < condition.lt
    assert condition.lte is not None
    return number <= condition.lte


class Modification(_Spec):
    """What a `modify` rule changes: caps the fact at `cap` (e.g. the offer at 20%)."""

    fact: str = Field(pattern=FACT_PATTERN)
    cap: float


class RuleSpec(_Spec):
    """One rule as written. `when` holds when ALL its conditions hold; `exempts` names lower-priority rules that
    do not run when this one matches (e.g. a pilot store allowed a bigger discount)."""

    id: str = Field(pattern=RULE_ID_PATTERN)
    version: int = Field(ge=1)
    kind: str = Field(pattern=RULE_ID_PATTERN, description="what the rule is about, e.g. discount_limit")
    stage: Stage = "input"
    priority: int = 0
    description: str = Field(min_length=1)
    when: tuple[Condition, ...] = Field(min_length=1)
    action: ActionName
    reason: str = Field(min_length=1, description="why, with {fact} placeholders; never the sensitive text")
    reply: str | None = Field(None, min_length=1, description="the safe reply a block or approval sends")
    modify: Modification | None = None
    exempts: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _action_fields(self) -> RuleSpec:
        if self.action == "modify" and self.modify is None:
            raise ValueError("a modify rule needs `modify: {fact, cap}`")
        if self.action != "modify" and self.modify is not None:
            raise ValueError("`modify` is only for action: modify")
        if self.action == "block" and self.reply is None:
            raise ValueError("a block rule needs `reply`: the safe answer the customer gets instead")
        return self

    def facts(self) -> list[str]:
        return sorted({name for condition in self.when for name in condition.facts()})


class PolicyFileSpec(_Spec):
    """One file, as written: rules, and/or which PII types each audience (a provider name from
    providers/providers.yaml, or `store` for the answer released to the store) may see in clear."""

    version: str = Field(min_length=1)
    description: str = ""
    rules: tuple[RuleSpec, ...] = ()
    pii_visibility: dict[str, tuple[PiiType, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _not_empty(self) -> PolicyFileSpec:
        if not self.rules and not self.pii_visibility:
            raise ValueError("a policy file needs rules, pii_visibility or both")
        return self


@dataclass(frozen=True)
class Rule:
    spec: RuleSpec
    source: Path


@dataclass(frozen=True)
class Outcome:
    """The findings of one evaluation folded into one decision."""

    action: ActionName
    verdict: Verdict
    findings: tuple[Finding, ...]
    reply: str | None
    caps: Mapping[str, float]


class PolicyEngine:
    """A validated rule set; `evaluate` is pure, cheap and deterministic, so it runs on the event loop."""

    def __init__(
        self,
        rules: Sequence[Rule],
        version: str,
        sources: Sequence[Path],
        visibility: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.rules = tuple(sorted(rules, key=lambda rule: (-rule.spec.priority, rule.spec.id)))
        self.version = version
        self.sources = tuple(sources)
        self.visibility: Mapping[str, frozenset[str]] = dict(visibility or {})
        self._by_id = {rule.spec.id: rule for rule in self.rules}

    def visible_types(self, audience: str) -> frozenset[str]:
        """The PII types `audience` may see in clear; an audience not listed sees tokens only."""
        return self.visibility.get(audience, frozenset())

    @classmethod
    def from_file(cls, path: Path) -> PolicyEngine:
        """A policy file, or every *.yaml in a directory; raises PolicyError naming each file and rule at fault."""
        return load_policy(path)

    def rule(self, rule_id: str) -> RuleSpec:
        return self._by_id[rule_id].spec

    def evaluate(self, facts: Mapping[str, str], stage: Stage = "input") -> list[Finding]:
        """One Finding per matching rule of `stage`, in evaluation order."""
        findings: list[Finding] = []
        exempt: set[str] = set()
        for rule in self.rules:
            spec = rule.spec
            if spec.stage != stage or spec.id in exempt:
                continue
            if all(condition.holds(facts) for condition in spec.when):
                exempt.update(spec.exempts)
                if spec.action == "require_approval" and approval_covers(facts):
                    findings.append(self._approved_finding(spec, facts))
                else:
                    findings.append(self._finding(spec, facts))
        return findings

    def decide(self, facts: Mapping[str, str], stage: Stage = "input") -> Outcome:
        return self.outcome(self.evaluate(facts, stage))

    def decide_strictest(
        self, variants: Sequence[Mapping[str, str]], stage: Stage = "input"
    ) -> tuple[Outcome, Mapping[str, str]]:
        """The strictest outcome over the fact variants (services.policy.facts.SourcedFacts.variants: trusted
        facts alone, then with claims and attributes), and the facts that gave it: what a client claims can
        tighten, never loosen. Ties go to the earlier, more trusted variant. Recording those facts lets a replay
        reproduce the findings from the record alone."""
        decided = [(self.decide(facts, stage), facts) for facts in variants]
        return max(decided, key=lambda pair: ACTION_RANK[pair[0].action])

    def outcome(self, findings: Iterable[Finding]) -> Outcome:
        """The strictest action among policy findings (ties: the first in evaluation order), its safe reply, and
        every cap the modify rules imposed (the lowest per fact)."""
        findings = tuple(findings)
        action: ActionName = "allow"
        reply: str | None = None
        caps: dict[str, float] = {}
        for finding in findings:
            spec = self._by_id.get(finding.rule_id)
            if spec is None:
                continue
            rule = spec.spec
            if rule.modify is not None:
                caps[rule.modify.fact] = min(caps.get(rule.modify.fact, rule.modify.cap), rule.modify.cap)
            if finding.action == APPROVED_ACTION:
                continue  # a require_approval rule a manager's approval satisfied: it holds nothing back
            if ACTION_RANK[rule.action] > ACTION_RANK[action]:
                action, reply = rule.action, rule.reply
        return Outcome(action=action, verdict=VERDICT_OF[action], findings=findings, reply=reply, caps=caps)

    def _finding(self, spec: RuleSpec, facts: Mapping[str, str]) -> Finding:
        inputs = {name: facts[name] for name in spec.facts() if name in facts}
        inputs["policy_version"] = self.version
        return Finding(
            rule_id=spec.id,
            rule_version=str(spec.version),
            kind=f"policy.{spec.kind}",
            action=FINDING_ACTION[spec.action],
            detail=_render(spec.reason, facts),
            inputs=inputs,
        )

    def _approved_finding(self, spec: RuleSpec, facts: Mapping[str, str]) -> Finding:
        """The finding of a require_approval rule that a manager's approval satisfies: recorded, with who approved
        which request, but it holds nothing back."""
        finding = self._finding(spec, facts)
        inputs = {**finding.inputs, **{name: facts[name] for name in APPROVAL_FACTS if facts.get(name)}}
        detail = f"approved by {facts['approved_by']} (request {facts['approval_for']}): {finding.detail}"
        return finding.model_copy(update={"action": APPROVED_ACTION, "detail": detail, "inputs": inputs})


def approval_covers(facts: Mapping[str, str]) -> bool:
    """Whether a manager's approval (facts approved_by and approval_for, set from the re-published request's
    attributes) satisfies require_approval rules. It never lifts block rules (they do not ask for approval) nor
    caps, and on the output side it covers no discount larger than the one the manager approved."""
    if not facts.get("approved_by") or not facts.get("approval_for"):
        return False
    promised = _number(facts.get("promised_discount_percent"))
    if promised is None:
        return True
    approved = _number(facts.get("discount_percent"))
    return approved is not None and promised <= approved


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _render(template: str, facts: Mapping[str, str]) -> str:
    class _Missing(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "?"

    try:
        return template.format_map(_Missing(facts))
    except (ValueError, IndexError):
        return template


# -- loading and validation --------------------------------------------------------------------------------------


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and not p.name.startswith("."))
    return [path]


def load_policy(path: Path) -> PolicyEngine:
    files = policy_files(path)
    if not files:
        raise PolicyError([f"{path}: no *.yaml policy files: add one, or point at another directory"])
    problems: list[str] = []
    rules: list[Rule] = []
    visibility: dict[str, frozenset[str]] = {}
    versions: list[str] = []
    digest = hashlib.sha256()
    for file in files:
        try:
            content = file.read_bytes()
        except OSError as error:
            problems.append(f"{file}: cannot be read ({error.strerror}): check the path")
            continue
        digest.update(file.name.encode() + b"\0" + content)
        spec = _parse_file(file, content, problems)
        if spec is not None:
            versions.append(spec.version)
            rules += [Rule(rule, file) for rule in spec.rules]
            for audience, types in spec.pii_visibility.items():
                if audience in visibility:
                    problems.append(f"{file}: pii_visibility.{audience}: also set in another file: keep one")
                visibility[audience] = frozenset(types)
    problems += _cross_check(rules)
    if problems:
        raise PolicyError(problems)
    version = f"{'+'.join(versions)}#{digest.hexdigest()[:12]}"
    return PolicyEngine(rules, version, files, visibility)


def _parse_file(file: Path, content: bytes, problems: list[str]) -> PolicyFileSpec | None:
    try:
        data = yaml.load(content, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        problems.append(f"{file}: is not valid YAML ({_yaml_problem(error)}): fix the syntax")
        return None
    if not isinstance(data, dict):
        problems.append(f"{file}: must be a mapping with keys version, description, rules")
        return None
    try:
        return PolicyFileSpec.model_validate(data)
    except ValidationError as error:
        problems += [_describe(file, data, detail) for detail in error.errors()]
        return None


def _cross_check(rules: Sequence[Rule]) -> list[str]:
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for rule in rules:
        where = f"{rule.source}: rule {rule.spec.id}"
        if rule.spec.id in seen:
            problems.append(f"{where}: duplicate rule id (also in {seen[rule.spec.id]}): give each rule its own id")
        seen.setdefault(rule.spec.id, rule.source)
    for rule in rules:
        where = f"{rule.source}: rule {rule.spec.id}"
        for exempted in rule.spec.exempts:
            if exempted not in seen:
                problems.append(f"{where}: exempts: unknown rule id {exempted!r}: name a rule defined in policies/")
            elif exempted == rule.spec.id:
                problems.append(f"{where}: exempts: a rule cannot exempt itself: remove it")
    return problems


def _describe(file: Path, data: dict[str, Any], detail: ErrorDetails) -> str:
    loc = detail["loc"]
    where = f"{file}"
    rest = loc
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules")
        rule_id = None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = rules[loc[1]].get("id")
        where += f": rule {rule_id}" if rule_id else f": rules[{loc[1]}]"
        rest = loc[2:]
    key = _key_path(rest)
    kind = detail["type"]
    if kind == "missing":
        message = "required key is missing: add it"
    elif kind == "extra_forbidden":
        message = "unknown key: remove it or fix its spelling"
    elif kind == "value_error":
        message = str(detail["msg"]).removeprefix("Value error, ")
    else:
        message = f"{detail['msg']}, got {detail['input']!r}"
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


# -- reload without a restart ------------------------------------------------------------------------------------


class PolicyWatcher(WatchedConfig[PolicyEngine]):
    """The policy in force for a file or directory. `current()` re-reads it when any file changed (names, inode,
    size or mtime), looking at most every `check_every_s`. An invalid change is logged once and the last good
    policy stays in force."""

    def __init__(
        self,
        path: Path,
        *,
        check_every_s: float = DEFAULT_CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            path,
            load_policy,
            invalid=PolicyError,
            what="policy",
            version=lambda engine: engine.version,
            version_field="policy_version",
            logger=log,
            # the files load_policy reads, so a README or a backup file beside the policies does not cause a reload
            files=policy_files,
            check_every_s=check_every_s,
            clock=clock,
        )

    def load(self) -> PolicyEngine:
        """Reads the policy now; raises PolicyError when it is invalid (at start-up, a bad policy stops the stage)."""
        return super().load()

    @property
    def engine(self) -> PolicyEngine:
        return self.value
