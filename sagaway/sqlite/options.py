"""Execution options of Sagaway's own on SQLite connections."""

# The execution option of a connection whose transactions only read: they begin DEFERRED (a
# snapshot, no write lock); every other transaction begins IMMEDIATE (storage.database.read_only).
READ_ONLY = "sagaway_read_only"
