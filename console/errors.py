"""The console's error pages: a styled page per refusal (401, 403, 400, any HTTPException), and
the login redirect for a visitor who is not logged in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import Forbidden, NotAuthenticated
from console.csrf import CsrfRefused
from console.links import link
from console.queries.saga_list import BadFilter
from console.state import console_of


def error_page(request: Request, status: int, message: str) -> Response:
    """The error page, in the console's layout, with this status and message."""
    console = console_of(request)
    return console.render(request, "error.html", status_code=status, status=status, message=message)


async def _not_authenticated(request: Request, exc: Exception) -> Response:
    target = link(request, "login_form", {"next": request.url.path})
    if request.headers.get("HX-Request"):
        # htmx would swap the login form into a panel: send the whole page there instead.
        return Response(status_code=401, headers={"HX-Redirect": target})
    if request.method != "GET":
        return error_page(request, 401, "Your session has ended: log in again.")
    return RedirectResponse(target, 303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    return error_page(request, 403, str(exc))


async def _csrf(request: Request, exc: Exception) -> Response:
    return error_page(request, 403, f"Refused: {exc}. Reload the page and submit the form again.")


async def _bad_filter(request: Request, exc: Exception) -> Response:
    return error_page(request, 400, str(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_page(request, exc.status_code, str(exc.detail))


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    NotAuthenticated: _not_authenticated,
    Forbidden: _forbidden,
    CsrfRefused: _csrf,
    BadFilter: _bad_filter,
    HTTPException: _http,
}
