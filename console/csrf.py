"""CSRF protection for every console form: a random token kept in the session, echoed in a
hidden field, compared in constant time before any POST is acted on."""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import FormData
from starlette.requests import Request

SESSION_KEY = "csrf"
FIELD = "csrf_token"


class CsrfRefused(Exception):
    """A POST without the session's CSRF token: refused with 403, nothing done."""


def csrf_token(request: Request) -> str:
    """The session's token, created on first use (the login form gets one too)."""
    token = request.session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return token


def check_csrf(request: Request, form: FormData) -> None:
    expected = request.session.get(SESSION_KEY)
    given = form.get(FIELD)
    if not isinstance(expected, str) or not isinstance(given, str):
        raise CsrfRefused("missing CSRF token")
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise CsrfRefused("wrong CSRF token")
