"""`sagaway dev`: the whole system on one machine, on SQLite files and the embedded broker."""
