"""Limits per store at the gateway: requests per minute (a moving window from the `limits` library) and model
tokens and cost per UTC day. The counters survive a restart because they start from what ClickHouse already
holds: the store's answered gateway requests of the last minute, and its answers of the day, refreshed
periodically and topped up with the replies this replica has seen since."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from services.gateway.shapes import GatewayError
from services.wire.models import ApiKey

# requests the gateway made in the last minute that have been answered (those still in the chain are not counted)
RECENT_REQUESTS_SQL = """
SELECT store_id, count() FROM answers FINAL
WHERE created_at > now64(3) - INTERVAL 60 SECOND AND api_key != ''
GROUP BY store_id
"""
SPENT_TODAY_SQL = """
SELECT store_id, sum(tokens_in + tokens_out), sum(cost_usd) FROM answers FINAL
WHERE created_at >= toStartOfDay(now64(3, 'UTC'))
GROUP BY store_id
"""


@dataclass(frozen=True, slots=True)
class Defaults:
    """Limits of a key that sets none of its own."""

    requests_per_minute: int
    tokens_per_day: int
    cost_per_day_usd: float


def too_many(message: str, code: str, retry_after_s: float) -> GatewayError:
    return GatewayError(
        429, message, kind="rate_limit_error", code=code, retry_after_s=max(1, math.ceil(retry_after_s))
    )


def seconds_to_midnight_utc(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


@dataclass
class StoreQuotas:
    defaults: Defaults
    _limiter: MovingWindowRateLimiter = field(init=False)
    _spent_base: dict[str, tuple[int, float]] = field(default_factory=dict)
    _spent_since: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    _day: str = ""

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def _item(self, key: ApiKey) -> RateLimitItemPerMinute:
        return RateLimitItemPerMinute(key.requests_per_minute or self.defaults.requests_per_minute)

    def admit(self, key: ApiKey) -> None:
        """Counts one request for the key's store, or raises 429 with the seconds until it would be admitted."""
        self._roll_day()
        tokens, cost = self.spent(key.store_id)
        token_budget = key.tokens_per_day or self.defaults.tokens_per_day
        cost_budget = key.cost_per_day_usd if key.cost_per_day_usd is not None else self.defaults.cost_per_day_usd
        if tokens >= token_budget:
            raise too_many(
                f"store {key.store_id} has used {tokens} of its {token_budget} model tokens today (UTC)",
                "tokens_per_day_exceeded",
                seconds_to_midnight_utc(),
            )
        if cost >= cost_budget:
            raise too_many(
                f"store {key.store_id} has spent ${cost:.4f} of its ${cost_budget:.2f} model budget today (UTC)",
                "cost_per_day_exceeded",
                seconds_to_midnight_utc(),
            )
        item = self._item(key)
        if not self._limiter.hit(item, key.store_id):
            reset = self._limiter.get_window_stats(item, key.store_id).reset_time
            raise too_many(
                f"store {key.store_id} is over {item.amount} requests a minute",
                "requests_per_minute_exceeded",
                reset - time.time(),
            )

    def spent(self, store_id: str) -> tuple[int, float]:
        base_tokens, base_cost = self._spent_base.get(store_id, (0, 0.0))
        since = self._spent_since.get(store_id)
        return (base_tokens + int(since[0]), base_cost + since[1]) if since else (base_tokens, base_cost)

    def record_answer(self, store_id: str, tokens: int, cost_usd: float) -> None:
        spent = self._spent_since[store_id]
        spent[0] += tokens
        spent[1] += cost_usd

    def warm(self, recent_requests: dict[str, int], keys: Iterable[ApiKey]) -> None:
        """Counts requests made in the last minute (before a restart) against each store's window, once per
        distinct limit its keys carry."""
        warmed: set[tuple[str, int]] = set()
        for key in keys:
            item = self._item(key)
            count = recent_requests.get(key.store_id, 0)
            if count > 0 and (key.store_id, item.amount) not in warmed:
                warmed.add((key.store_id, item.amount))
                self._limiter.hit(item, key.store_id, cost=min(count, item.amount))

    def refresh_spent(self, spent_today: dict[str, tuple[int, float]]) -> None:
        """ClickHouse's totals for today replace the base; what this replica counted since is now inside it."""
        self._roll_day()
        self._spent_base = dict(spent_today)
        self._spent_since.clear()

    def _roll_day(self) -> None:
        today = datetime.now(UTC).date().isoformat()
        if today != self._day:
            self._day = today
            self._spent_base.clear()
            self._spent_since.clear()


def recent_requests(client: Any) -> dict[str, int]:
    return {str(store): int(count) for store, count in client.query(RECENT_REQUESTS_SQL).result_rows}


def spent_today(client: Any) -> dict[str, tuple[int, float]]:
    return {str(store): (int(tokens), float(cost)) for store, tokens, cost in client.query(SPENT_TODAY_SQL).result_rows}
