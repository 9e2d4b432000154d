"""What the Kafka broker can do, asked rather than assumed: whether it gives producer ids
(InitProducerId), which the idempotent producer needs. Kafka does; some Kafka-protocol brokers
(the `tansu` broker of the tests) answer UnknownError, and an idempotent producer started
against them fails at every try (docs/outbox.md, "The producer")."""

from __future__ import annotations

import logging

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NoError, for_code
from aiokafka.protocol.transaction import InitProducerIdRequest

from sagaway.messaging.transport import TransportError
from sagaway.settings import MessagingSettings

log = logging.getLogger("sagaway.kafka")

SETTING = "SAGAWAY_PRODUCER_IDEMPOTENCE"
# Asked once per process and broker: every transport of the process then agrees, and the
# warning is logged once.
_refusals: dict[str, str | None] = {}


class BrokerCannotDoThat(TransportError):
    """The broker answered, and refused what the settings require; waiting will not help."""


async def producer_ids_refused(bootstrap: str, request_timeout_ms: int) -> str | None:
    """None when the broker gives producer ids; else why not (the error it answered).
    Raises KafkaError when the broker cannot be reached, to be retried like any outage."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        if node is None:
            raise KafkaConnectionError(f"no broker of {bootstrap} is known")
        # What an idempotent producer sends first (no transactional id): a request a broker
        # that gives producer ids answers with one.
        request = InitProducerIdRequest(
            transactional_id=None,  # type: ignore[arg-type]
            transaction_timeout_ms=60_000,
        )
        try:
            response = await client.send(node, request)
        except KafkaError as exc:
            if exc.retriable or isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)):
                raise
            return type(exc).__name__
        error = for_code(response.error_code)
        if error is NoError:
            return None
        if error.retriable:
            raise error()
        return error.__name__
    finally:
        await client.close()


async def use_idempotence(settings: MessagingSettings, bootstrap: str, timeout_ms: int) -> bool:
    """Whether to start the idempotent producer, as `producer_idempotence` says: `false` never;
    `auto` when the broker gives producer ids, else the plain producer, with one warning per
    process; `true` requires it, and raises BrokerCannotDoThat when the broker refuses."""
    wanted = settings.producer_idempotence
    if wanted is False:
        return False
    if bootstrap not in _refusals:
        refused = await producer_ids_refused(bootstrap, timeout_ms)
        _refusals[bootstrap] = refused
        if refused is not None and wanted == "auto":
            log.warning(
                "the Kafka broker at %s cannot give producer ids (InitProducerId answered %s): "
                "using the plain producer instead of the idempotent one. A send retried after a "
                "lost acknowledgement may then write a record twice; every consumer's inbox "
                "drops the copy, so nothing is handled twice. %s=false skips this check",
                bootstrap,
                refused,
                SETTING,
            )
    refused = _refusals[bootstrap]
    if refused is None:
        return True
    if wanted is True:
        raise BrokerCannotDoThat(
            f"the Kafka broker at {bootstrap} cannot give producer ids (InitProducerId answered "
            f"{refused}), which {SETTING}=true requires: set it to auto (use the plain producer "
            "on such a broker) or false"
        )
    return False
