"""What running processes read of the learning loop while they serve: which candidate is in shadow for each kind of
model (the registry's shadow files), re-read when the file changes, and a batching ClickHouse sink for the rows
a shadow writes. Kept free of model code so the router and the answerer can import it cheaply.

`switchyard shadow start MODEL` writes the file, `switchyard shadow stop` removes it; a running answerer or router
sees the change within `check_every_s`, with no restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("switchyard.learning")

ANSWER_KIND: Final = "answer_memory"  # services.answerer.memory.KIND
ROUTER_KIND: Final = "router"
SHADOW_FILES: Final = {ANSWER_KIND: "shadow.json", ROUTER_KIND: "shadow.router.json"}
CHECK_EVERY_S: Final = 1.0


def default_registry_dir() -> Path:
    """The model registry (services/learning/registry.py): SWITCHYARD_MODEL_REGISTRY_DIR, else var/models/registry."""
    from services.settings import get_settings

    settings = get_settings()
    return settings.model_registry_dir or settings.var_dir / "models" / "registry"


def shadow_path(registry_dir: Path, kind: str) -> Path:
    if kind not in SHADOW_FILES:
        raise ValueError(f"no shadow mode for {kind!r} models: use one of {sorted(SHADOW_FILES)}")
    return registry_dir / SHADOW_FILES[kind]


class ShadowSwitch:
    """The shadow configuration in force for one kind of model ({"candidate": id, ...} or None), from its file in
    the registry. `current()` stats the file at most every `check_every_s` and re-reads it when its stamp
    changed; a file that is not valid JSON naming a candidate turns shadow off, logged once."""

    def __init__(
        self,
        registry_dir: Path,
        kind: str,
        *,
        check_every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = shadow_path(registry_dir, kind)
        self.kind = kind
        self.check_every_s = check_every_s
        self._clock = clock
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._config: dict[str, Any] | None = None

    def current(self) -> dict[str, Any] | None:
        now = self._clock()
        if now < self._next_check:
            return self._config
        self._next_check = now + self.check_every_s
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            if self._config is not None:
                log.info("shadow stopped", extra={"kind": self.kind, "candidate": self._config.get("candidate")})
            self._stamp, self._config = None, None
            return None
        stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
        if stamp == self._stamp:
            return self._config
        self._stamp = stamp
        try:
            config = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(config, dict) or not isinstance(config.get("candidate"), str):
                raise ValueError("expected an object with a string 'candidate'")
        except (OSError, ValueError) as error:
            log.error("shadow file ignored: shadow is off", extra={"path": str(self.path), "error": repr(error)})
            self._config = None
            return None
        if config != self._config:
            log.info("shadow on", extra={"kind": self.kind, "candidate": config["candidate"]})
        self._config = config
        return config


class ClickHouseSink:
    """Rows for one ClickHouse table, inserted from a thread in batches by size (at once, in the background) or
    age (`flush_every_s`, by a timer started with `start`). A failed insert is logged and counted: a lost shadow
    sample costs a statistic, never an answer or a route. `add` never waits, so a stage may call it inline."""

    def __init__(
        self,
        table: str,
        columns: Sequence[str],
        *,
        max_rows: int = 500,
        flush_every_s: float = 1.0,
        insert: Callable[[str, list[list[Any]], Sequence[str]], None] | None = None,
    ) -> None:
        self.table = table
        self.columns = list(columns)
        self.max_rows = max_rows
        self.flush_every_s = flush_every_s
        self.rows: list[list[Any]] = []
        self.written = 0
        self.dropped = 0
        self._insert = insert or _insert
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._every())

    def add(self, row: list[Any]) -> None:
        self.rows.append(row)
        self.start()
        if len(self.rows) >= self.max_rows:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        async with self._lock:
            rows, self.rows = self.rows, []
            if not rows:
                return
            try:
                await asyncio.to_thread(self._insert, self.table, rows, self.columns)
                self.written += len(rows)
            except Exception as error:
                self.dropped += len(rows)
                log.warning(
                    "shadow rows not written", extra={"table": self.table, "rows": len(rows), "error": repr(error)}
                )

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every_s)
            await self.flush()

    async def aclose(self) -> None:
        """Writes what is buffered and stops the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            await asyncio.wait(set(self._flushes), timeout=30)
        await self.flush()


def _insert(table: str, rows: list[list[Any]], columns: Sequence[str]) -> None:
    from services.infra.clickhouse import get_client

    client = get_client()
    try:
        client.insert(table, rows, column_names=list(columns))
    finally:
        client.close()
