"""How a record's headers are stored in the broker file: one JSON array of [name, hex value]."""

from __future__ import annotations

import orjson

from sagaway.messaging.records import Headers


def pack_headers(headers: Headers) -> bytes | None:
    """The stored form of `headers` (None when there are none)."""
    if not headers:
        return None
    return orjson.dumps(
        [[name, None if value is None else bytes(value).hex()] for name, value in headers]
    )


def unpack_headers(raw: bytes | None) -> Headers:
    """The headers `pack_headers` stored."""
    if not raw:
        return ()
    return tuple(
        (name, bytes.fromhex(value) if value is not None else None)  # type: ignore[misc]
        for name, value in orjson.loads(raw)
    )
