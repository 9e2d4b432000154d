"""HTTP hardening shared by the gateway and the console: ASGI middleware for security headers,
request header limits (431) and X-Forwarded-For from trusted proxies only, and the uvicorn
options that leave those decisions to it (docs/security.md)."""

from sagaway.http.forwarded import TrustedProxies
from sagaway.http.header_limits import HeaderLimits
from sagaway.http.security_headers import API_CSP, SecurityHeaders
from sagaway.http.server import SERVER_OPTIONS

__all__ = ["API_CSP", "SERVER_OPTIONS", "HeaderLimits", "SecurityHeaders", "TrustedProxies"]
