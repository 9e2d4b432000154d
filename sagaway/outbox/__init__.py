"""The transactional outbox: the writer, the WAL and polling relays, and their lag figures."""

from sagaway.outbox.writer import OutboxError, add_to_outbox

__all__ = ["OutboxError", "add_to_outbox"]
