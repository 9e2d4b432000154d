"""A token bucket per caller (API key / token subject, or client address when auth is off), and
the same buckets for failed authentications per client address."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.problems import RateLimited

MAX_BUCKETS = 100_000


class TokenBucket:
    """`rate` tokens per second up to `burst`; each request takes one."""

    __slots__ = ("tokens", "updated")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.updated = now


class RateLimiter:
    """Buckets by key, least recently used evicted beyond MAX_BUCKETS (memory stays bounded).
    Limits are per instance: N gateway instances admit up to N × rate in total."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        problem: type[RateLimited] = RateLimited,
        what: str = "requests",
    ) -> None:
        self.problem = problem
        self.what = what
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> None:
        """Spend one token of `key`'s bucket, or raise RateLimited with the seconds to wait."""
        if not self.enabled:
            return
        self.check(key)
        self._bucket(key).tokens -= 1.0

    def check(self, key: str) -> None:
        """Raise RateLimited when `key`'s bucket is empty, spending nothing."""
        if not self.enabled:
            return
        bucket = self._bucket(key)
        if bucket.tokens >= 1.0:
            return
        wait = (1.0 - bucket.tokens) / self.rate
        raise self.problem(
            f"{key!r} exceeded {self.rate:g} {self.what}/s (burst {self.burst:g})",
            retry_after=max(1, math.ceil(wait)),
        )

    def spend(self, key: str) -> None:
        """Take one token of `key`'s bucket if it has one (an event already happened)."""
        if self.enabled:
            bucket = self._bucket(key)
            bucket.tokens = max(0.0, bucket.tokens - 1.0)

    def _bucket(self, key: str) -> TokenBucket:
        """`key`'s bucket, refilled up to now."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket
