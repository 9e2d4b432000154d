"""Roles run inside the test's own process, on a stack: participants (the examples, or any other),
the orchestrator, and the scripted participant double of the orchestrator's tests. Each role has
its own transport (which a test may wrap, to tamper with what it sends) and its stack's database
and relay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from examples.place_order import EXAMPLE_NAMES, example
from orchestrator.registry import SagaRegistry
from orchestrator.service import OrchestratorService
from participants.sdk import Participant
from participants.service import ParticipantService
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.transport import Transport
from sagaway.outbox.choose import make_relay
from sagaway.settings.composed import Settings
from tests.harness.participant_double import ParticipantDouble

if TYPE_CHECKING:
    from tests.harness.stack import Stack

TransportWrapper = Callable[[Transport], Transport]


class InProcessRoles:
    """What runs in process on one stack: `services` by name, the `orchestrator`, the `double`."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.services: dict[str, ParticipantService] = {}
        self.orchestrator: OrchestratorService | None = None
        self.double: ParticipantDouble | None = None
        self._transports: dict[str, Transport] = {}  # by role name

    async def _transport(
        self, role: str, settings: Settings, wrap: TransportWrapper | None
    ) -> Transport:
        """A connected transport for `role` (closed with it), wrapped by `wrap` if given."""
        connected = await connect_transport(settings.messaging)
        self._transports[role] = connected
        return wrap(connected) if wrap else connected

    async def _close_transport(self, role: str) -> None:
        transport = self._transports.pop(role, None)
        if transport is not None:
            await transport.close()

    # -- participants --------------------------------------------------------------------------

    async def start_participant(
        self, participant: Participant, wrap: TransportWrapper | None = None, **update: Any
    ) -> ParticipantService:
        """Run `participant` on its database with its relay; `update`: settings (flat names)."""
        settings = self.stack.service_settings(participant.name)
        if update:
            settings = settings.replace(**update)
        transport = await self._transport(participant.name, settings, wrap)
        engine = self.stack.engines[participant.name]
        service = ParticipantService(
            participant,
            settings.participant,
            engine=engine,
            transport=transport,
            relay=make_relay(settings.relay, participant.name, engine, transport),
        )
        await service.start()
        self.services[participant.name] = service
        return service

    async def start_examples(self, overrides: dict[str, Participant] | None = None) -> None:
        """Inventory, payments and shipping (or the participants `overrides` names instead),
        all ready."""
        overrides = overrides or {}
        started = await asyncio.gather(
            *(self.start_participant(overrides.get(n) or example(n)) for n in EXAMPLE_NAMES)
        )
        await asyncio.gather(*(service.wait_ready() for service in started))

    async def stop_participant(self, name: str) -> None:
        service = self.services.pop(name)
        await service.stop(grace_s=1)
        await self._close_transport(name)

    # -- the orchestrator ----------------------------------------------------------------------

    async def start_orchestrator(
        self, registry: SagaRegistry, wrap: TransportWrapper | None = None
    ) -> OrchestratorService:
        """The orchestrator with its relay, once it owns its partitions."""
        settings = self.stack.service_settings("orchestrator")
        transport = await self._transport("orchestrator", settings, wrap)
        engine = self.stack.engines["orchestrator"]
        orchestrator = OrchestratorService(
            settings.orchestrator,
            registry,
            engine,
            transport,
            relay=make_relay(settings.relay, "orchestrator", engine, transport),
        )
        self.orchestrator = orchestrator
        await orchestrator.start()
        await orchestrator.wait_assigned()
        return orchestrator

    async def stop_orchestrator(self) -> None:
        orchestrator, self.orchestrator = self.orchestrator, None
        if orchestrator is not None:
            await orchestrator.stop()
            await self._close_transport("orchestrator")

    # -- the participant double ----------------------------------------------------------------

    async def start_double(self) -> ParticipantDouble:
        """The scripted participant of tests/orchestrator/sagas.py's services, on the stack's
        `double` database."""
        settings = self.stack.service_settings("double")
        transport = await self._transport("double", settings, None)
        self.double = ParticipantDouble(self.stack.engines["double"], transport, settings.relay)
        await self.double.start()
        return self.double

    async def close(self) -> None:
        await self.stop_orchestrator()
        for name in list(self.services):
            await self.stop_participant(name)
        if self.double is not None:
            await self.double.stop()
            await self._close_transport("double")
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()
