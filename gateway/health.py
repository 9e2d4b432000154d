"""Is the broker reachable? A background probe the accept path consults, so a request is refused
with 503 at once instead of being accepted while nothing can carry it."""

from __future__ import annotations

import asyncio
import logging

from sagaway.messaging.transport import Transport

log = logging.getLogger("sagaway.gateway.health")


class BrokerHealth:
    def __init__(self, transport: Transport, interval_s: float = 1.0, timeout_s: float = 3.0):
        self.transport = transport
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.up = True
        self.last_error: str | None = None

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.transport.ping()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the failure, the broker is not usable
            self.mark_down(exc)
            return False
        if not self.up:
            log.info("the broker is reachable again")
        self.up = True
        self.last_error = None
        return True

    def mark_down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("the broker is unavailable: %s: %s", type(exc).__name__, exc)
        self.up = False
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)
