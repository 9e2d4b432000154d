-- Run once by the postgres image, on an empty data volume, as POSTGRES_USER (the owner of
-- every database below). Each Sagaway service owns its database, as it would own its own
-- server in production: orchestrator (sagas, timers), gateway (requests, callbacks) and the
-- example participants. All of them share this one PostgreSQL server here, and each has its
-- own outbox, replication slot (sagaway_<service>) and relay.
CREATE DATABASE orchestrator;
CREATE DATABASE gateway;
CREATE DATABASE inventory;
CREATE DATABASE payments;
CREATE DATABASE shipping;
