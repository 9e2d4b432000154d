"""The saga engine: a pure function from (saga state, event) to what happens next.

`decide` does no I/O, reads no clock and draws no random numbers: events carry `now`, message ids
are uuid5 of (saga id, kind, step) and jitter is a hash of (saga id, step, attempt). The shell
(the orchestrator service) stores the new state, writes the commands to the outbox, the timers
to the timers table and the step records to `saga_steps`, in one transaction.

`events` holds what `decide` accepts, `state` where a saga stands, `effects` what a decision
asks the shell to do, `rules` how a saga moves, and `decide` the entry point.
"""
