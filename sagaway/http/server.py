"""The uvicorn options every Sagaway listener runs with: uvicorn's own X-Forwarded-For handling
is off (it trusts any loopback peer by default; `TrustedProxies` decides instead) and no
`server` header names the software."""

from __future__ import annotations

from typing import Any

SERVER_OPTIONS: dict[str, Any] = {
    "proxy_headers": False,
    "forwarded_allow_ips": [],
    "server_header": False,
}
