"""The embedded broker: Kafka's model (topics, partitions, consumer groups, committed offsets) kept
durably in one SQLite file, in process. It is a product mode (`sagaway dev`), not a test fake.

Several processes may share one broker file, and a restart loses nothing: only uncommitted
records come again. The parts: `store.py` (the file), `partitioner.py` (key to partition),
`membership.py` (groups without a coordinator), `headers.py` (how headers are stored),
`bell.py` and `crossbell.py` (wake-ups in this process and across processes), and the
`Transport` itself in `transport.py` and `subscription.py`.
"""

from sagaway.messaging.embedded.transport import EmbeddedTransport

__all__ = ["EmbeddedTransport"]
