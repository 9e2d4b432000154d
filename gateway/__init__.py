"""The HTTP API gateway: sync and async origins, the replier, auth and limits."""
