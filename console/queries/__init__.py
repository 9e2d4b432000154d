"""Every read the console makes, as SQLAlchemy Core queries that an index answers: one module per
page family (saga listing, one saga, overview, dead letters)."""

# The saga listing uses keyset pagination — never OFFSET, and a count that stops at 10,000 — so
# page 1 and page 10,000 cost the same with a million rows (see bench/console_listing.py).
# Indexes: saga_instances (created_at, id), (status, created_at, id), (saga_type, created_at, id),
# (saga_type, status, created_at), (status, updated_at), (principal), unique correlation_id,
# (id varchar_pattern_ops) on PostgreSQL for id prefixes; saga_search_keys (value, name);
# saga_steps (saga_id, id); timers (saga_id); outbox (published_at, id); requests
# (status, received_at); dead_letters (status, id).
