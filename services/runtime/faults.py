"""How a stage tells the runtime what went wrong with a record: retry it, or dead-letter it and go on."""

from __future__ import annotations


class StageError(Exception):
    """Base of the errors a stage raises on purpose; carries the request id when it is known."""

    def __init__(self, reason: str, *, request_id: str | None = None) -> None:
        self.reason = reason
        self.request_id = request_id
        super().__init__(f"{reason} (request {request_id})" if request_id else reason)


class TransientError(StageError):
    """The record is fine, a dependency is not (provider timeout, database briefly away): the runtime retries
    it with backoff and never dead-letters it for this."""


class RejectedRecord(StageError):
    """The record itself cannot be processed (fails a stage rule): the runtime dead-letters it with the reason
    and goes on with the records behind it."""
