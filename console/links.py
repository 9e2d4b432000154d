"""Links between console pages: route paths with the mount prefix, query strings, and the
post-login redirect target kept on this site."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request


def path_of(request: Request, name: str, **path: Any) -> str:
    """The path of a route, mount prefix included; paths, not absolute URLs, so the console works
    behind a proxy that rewrites the host or scheme."""
    return request.url_for(name, **path).path


def link(request: Request, name: str, params: dict[str, str] | None = None, **path: Any) -> str:
    url = path_of(request, name, **path)
    return f"{url}?{urlencode(params)}" if params else url


def safe_next(request: Request, target: str | None) -> str:
    # Only a path on this site: no scheme, no host, no protocol-relative "//evil".
    home = path_of(request, "overview")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    return target
