"""The one test harness: it starts a system under test, on either stack, and waits on it.

- `waiting`: `eventually` / `eventually_sync`, the one poll loop of the suite.
- `stack`: the stack (embedded broker + SQLite, or tansu + PostgreSQL): settings, a migrated
  database per service, the reads tests assert on; it carries the parts below.
- `client`: starts sagas and sends commands, collecting what comes back on its own topic.
- `roles`: roles in the test's process — participants, the orchestrator, the participant double.
- `participant_double`: the scripted participant of the orchestrator's tests.
- `processes`: roles as `sagaway <verb>` processes with the settings' environment.
- `dev`: `sagaway dev` as a process.
"""
