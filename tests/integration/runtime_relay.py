"""A relay stage process for the runtime's fault tests: the real StageWorker around the bench's Relay, with one
fault of the test's choosing inside a transaction.

usage: python -m tests.integration.runtime_relay REPLICA {none|kill-in-commit|stop-before-commit}
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from confluent_kafka import Producer

from services.runtime.observability import configure_logging
from services.runtime.worker import Outgoing, PartitionKey, StageWorker, WorkerConfig
from services.tools.bench.runtime import Relay

# the first transaction of at least this many records is killed before it commits
KILL_AT_RECORDS = 20


class FaultyWorker(StageWorker):
    def __init__(self, fault: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fault = fault
        self.batch_records = 0

    def _transact(self, batch: list[Outgoing], offsets: dict[PartitionKey, int]) -> None:
        self.batch_records = len(batch)
        if self.fault == "stop-before-commit":
            # a paused pod: the group moves on while this one holds decided records; it resumes on SIGCONT
            self.fault = "none"
            print(f"stopping with {len(batch)} records decided", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        super()._transact(batch, offsets)

    def _commit_transaction(self, producer: Producer, timeout_s: float) -> None:
        if self.fault == "kill-in-commit" and self.batch_records >= KILL_AT_RECORDS:
            print(f"killed with {self.batch_records} records in the open transaction", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        super()._commit_transaction(producer, timeout_s)


async def main(replica: str, fault: str) -> None:
    config = WorkerConfig(
        replica=replica,
        commit_linger_ms=300,
        commit_max_records=50,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        transaction_timeout_ms=10_000,
    )
    worker = FaultyWorker(fault, stage=Relay(0), config=config)
    worker.install_signal_handlers()
    await worker.run()


if __name__ == "__main__":
    configure_logging(os.environ.get("SWITCHYARD_LOG_LEVEL", "INFO"))
    asyncio.run(main(sys.argv[1], sys.argv[2]))
