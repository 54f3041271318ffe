"""The model registry (var/models/registry): every trained model with its weights in portable, code-free formats
(.npz loaded without pickles, .json, .onnx, .gguf), the data-set version it came from, its evaluation results and
its parent; which model is deployed per kind; and the lifecycle events (registered, shadow, promoted, rolled back),
appended to events.jsonl and to ClickHouse's switchyard.model_events.

    registry/models/<model_id>/card.json + weights
    registry/deployed.json      {"answer_memory": "<model_id>", ...}   read by the answerer's memory provider
    registry/shadow.json        the answer candidate in shadow, when there is one (shadow.router.json: router)
    registry/route_tables/      the route table before and after each change, for rollback
    registry/events.jsonl
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from services.answerer.memory import DEPLOYED_FILE, default_registry_dir
from services.learning.switch import ANSWER_KIND, ROUTER_KIND, shadow_path

log = logging.getLogger("switchyard.learning")
PORTABLE_SUFFIXES: Final = frozenset({".npz", ".json", ".onnx", ".gguf", ".jsonl"})
EVENT_COLUMNS: Final = [
    "event_id", "event", "model_id", "kind", "intents", "route_table_version", "reason", "details", "created_at",
]  # fmt: skip


class RegistryError(ValueError):
    """A model cannot be registered or found; the message says what to do."""


def _write_json(path: Path, value: Any) -> None:
    """Atomic: readers (the answerer) never see half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


class ModelRegistry:
    def __init__(self, root: Path | None = None, *, clickhouse: bool = True) -> None:
        self.root = root or default_registry_dir()
        self.clickhouse = clickhouse
        (self.root / "models").mkdir(parents=True, exist_ok=True)

    def model_dir(self, model_id: str) -> Path:
        return self.root / "models" / model_id

    def register(
        self,
        kind: str,
        weights_dir: Path,
        card: dict[str, Any],
        *,
        dataset: dict[str, Any],
        evaluation: dict[str, Any],
        parent: str | None,
    ) -> str:
        """Copies the weights in, writes the card; the id is the kind plus a hash of the weights, so registering
        the same weights twice gives the same id."""
        files = sorted(p for p in weights_dir.iterdir() if p.is_file() and p.name != "registry_card.json")
        refused = [p.name for p in files if p.suffix not in PORTABLE_SUFFIXES]
        if refused:
            raise RegistryError(f"{refused}: only {sorted(PORTABLE_SUFFIXES)} are registered (no pickles)")
        digest = hashlib.sha256(kind.encode())
        for path in files:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        model_id = f"{kind}-{digest.hexdigest()[:12]}"
        target = self.model_dir(model_id)
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, target / path.name)
        full_card = {
            **card,
            "model_id": model_id,
            "kind": kind,
            "dataset": dataset,
            "evaluation": evaluation,
            "parent": parent,
            "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
            "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_json(target / "registry_card.json", full_card)
        self.record("registered", model_id, kind, reason=f"trained on {dataset.get('version', '?')}")
        return model_id

    def card(self, model_id: str) -> dict[str, Any]:
        path = self.model_dir(model_id) / "registry_card.json"
        if not path.is_file():
            raise RegistryError(f"no model {model_id!r} in {self.root}: see `switchyard models`")
        card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return card

    def models(self) -> list[dict[str, Any]]:
        cards = [self.card(p.name) for p in (self.root / "models").iterdir() if (p / "registry_card.json").is_file()]
        return sorted(cards, key=lambda c: (c["registered_at"], c["model_id"]))

    def live_promotion(self, kind: str | None = None) -> dict[str, Any] | None:
        """The latest promotion (of `kind`) not rolled back yet: its event, naming the model and its intents."""
        return live_promotion(self.events(), kind)

    def deployed(self) -> dict[str, str | None]:
        path = self.root / DEPLOYED_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def set_deployed(self, kind: str, model_id: str | None) -> None:
        _write_json(self.root / DEPLOYED_FILE, {**self.deployed(), kind: model_id})

    def shadow(self, kind: str = ANSWER_KIND) -> dict[str, Any] | None:
        path = shadow_path(self.root, kind)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def set_shadow(self, value: dict[str, Any] | None, kind: str = ANSWER_KIND) -> None:
        """Starts (a value naming the candidate) or stops (None) shadow mode for one kind of model; running
        answerers and routers pick the change up within a second (services/learning/switch.py)."""
        path = shadow_path(self.root, kind)
        if value is None:
            path.unlink(missing_ok=True)
        else:
            _write_json(path, value)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while the route table, the deployed models or the router artifact change: the CLI and the
        learning process never promote or roll back at the same time."""
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def events(self) -> list[dict[str, Any]]:
        path = self.root / "events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def record(
        self,
        event: str,
        model_id: str,
        kind: str,
        *,
        intents: list[str] | None = None,
        route_table_version: str = "",
        reason: str = "",
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        entry = {
            "event_id": str(uuid.uuid4()),
            "event": event,
            "model_id": model_id,
            "kind": kind,
            "intents": intents or [],
            "route_table_version": route_table_version,
            "reason": reason,
            "details": details or {},
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        with (self.root / "events.jsonl").open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        if self.clickhouse:
            self._to_clickhouse(entry)
        return entry

    def _to_clickhouse(self, entry: dict[str, Any]) -> None:
        from services.infra.clickhouse import get_client

        row = [
            *(entry[c] for c in EVENT_COLUMNS[:7]),
            json.dumps(entry["details"], sort_keys=True),
            datetime.fromisoformat(entry["created_at"]),
        ]
        try:
            client = get_client()
            client.insert("switchyard.model_events", [row], column_names=EVENT_COLUMNS)
            client.close()
        except Exception as error:  # the registry's own events.jsonl is the record; ClickHouse is a copy
            log.warning("model event not written to ClickHouse", extra={"error": repr(error), "event": entry["event"]})


def live_promotion(events: Sequence[dict[str, Any]], kind: str | None) -> dict[str, Any] | None:
    """The latest promotion (of `kind`) in `events` not rolled back yet."""
    rolled = {e["details"].get("promotion_event") for e in events if e["event"] == "rolled_back"}
    return next(
        (
            e
            for e in reversed(events)
            if e["event"] == "promoted" and e["event_id"] not in rolled and kind in (None, e["kind"])
        ),
        None,
    )


def format_models(registry: ModelRegistry) -> str:
    deployed = {v: k for k, v in registry.deployed().items() if v}
    shadow = {(registry.shadow(kind) or {}).get("candidate") for kind in (ANSWER_KIND, ROUTER_KIND)}
    lines = [f"{'model':<28} {'kind':<14} {'status':<10} {'dataset':<22} {'eval':<34} parent"]
    for card in registry.models():
        status = "deployed" if card["model_id"] in deployed else "shadow" if card["model_id"] in shadow else "-"
        evaluation = card.get("evaluation", {})
        summary = (
            f"acc {evaluation.get('candidate_accuracy', 0):.3f} vs {evaluation.get('incumbent_accuracy', 0):.3f}"
            if "candidate_accuracy" in evaluation
            else ""
        )
        lines.append(
            f"{card['model_id']:<28} {card['kind']:<14} {status:<10} {card['dataset'].get('version', '?'):<22} "
            f"{summary:<34} {card.get('parent') or '-'}"
        )
    return "\n".join(lines)
