"""SQLite files as Sagaway runs them: statements on the event loop's thread (`inline`) and WAL
checkpoints on a thread of their own (`checkpointer`); used by storage and the embedded broker."""
