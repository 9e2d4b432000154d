"""Storage: engines for SQLite and PostgreSQL (`database`), the declarative Base and column types
(`models`), and migrations (`migrate`). Each part declares its own tables on the Base."""
