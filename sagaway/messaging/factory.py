"""Pick the transport the settings ask for, and connect to it the patient way at start-up."""

from __future__ import annotations

from sagaway.messaging.kafka_capabilities import BrokerCannotDoThat
from sagaway.messaging.transport import Transport
from sagaway.observability.startup import retry_until_up
from sagaway.settings import MessagingSettings


def make_transport(settings: MessagingSettings) -> Transport:
    """Kafka when `settings.kafka_bootstrap` is set, else the embedded broker in data_dir."""
    if settings.kafka_bootstrap:
        from sagaway.messaging.kafka import KafkaTransport

        return KafkaTransport(settings)
    from sagaway.messaging.embedded import EmbeddedTransport

    return EmbeddedTransport(settings)


def describe_broker(settings: MessagingSettings) -> str:
    """How the logs name the broker: "Kafka broker at host:port" or the embedded file."""
    if settings.kafka_bootstrap:
        return f"Kafka broker at {settings.kafka_bootstrap}"
    return f"embedded broker at {(settings.data_dir / 'broker.db').resolve()}"


async def connect_transport(
    settings: MessagingSettings, *, give_up_after_s: float | None = None
) -> Transport:
    """A started transport; while the broker is down, log which one and retry with backoff.
    A broker that answers but cannot do what the settings require (BrokerCannotDoThat) is not
    waited for: that error is raised at once."""

    async def connect() -> Transport | BrokerCannotDoThat:
        transport = make_transport(settings)
        try:
            await transport.start()
        except BrokerCannotDoThat as exc:
            await transport.close()
            return exc
        except BaseException:
            await transport.close()
            raise
        return transport

    connected = await retry_until_up(
        describe_broker(settings),
        connect,
        max_backoff_s=settings.startup_retry_max_s,
        give_up_after_s=give_up_after_s,
    )
    if isinstance(connected, BrokerCannotDoThat):
        raise connected
    return connected
