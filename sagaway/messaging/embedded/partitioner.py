"""Which partition a keyed record goes to: Kafka's default partitioner, so a key lands on the same
partition on the embedded broker as on Kafka."""

from __future__ import annotations

import functools

try:
    from aiokafka.partitioner import murmur2
except ImportError:  # pragma: no cover - aiokafka is a dependency; kept for a Kafka-less install
    from kafka.partitioner.default import murmur2  # type: ignore[import-not-found,no-redef]


def default_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records: murmur2(key), positive, modulo count."""
    return _murmur2_positive(key) % partitions


@functools.lru_cache(maxsize=65_536)
def _murmur2_positive(key: bytes) -> int:
    # Pure Python murmur2 is ~10 µs a key, and a saga's id keys each of its ~9 records.
    return int(murmur2(key)) & 0x7FFFFFFF
