"""Logging in and out: the login form; checking a password (refused before any hashing while the
name or address is locked out, hashed off the event loop in a bounded number of slots); and
ending the session on the server, so its cookie is worthless afterwards."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import SessionUser, current_user, log_in, log_out, session_id_of
from console.csrf import check_csrf
from console.inputs import InputRefused, check_text
from console.links import path_of, safe_next
from console.login_throttle import VerifierBusy
from console.state import Console, console_of

log = logging.getLogger(__name__)

MAX_NAME = 200
# argon2 takes any length; a longer "password" is only a way to make us hash megabytes.
MAX_PASSWORD = 1024


async def login_form(request: Request) -> Response:
    console = console_of(request)
    if current_user(request) is not None:
        return RedirectResponse(safe_next(request, request.query_params.get("next")), 303)
    return console.render(request, "login.html", next=request.query_params.get("next", ""))


def _refuse(
    console: Console,
    request: Request,
    form: FormData,
    status: int,
    message: str,
    retry_after: int | None = None,
) -> Response:
    response = console.render(
        request,
        "login.html",
        status_code=status,
        error=message,
        next=str(form.get("next", ""))[:2000],
        username=str(form.get("username", ""))[:MAX_NAME],
    )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def client_address(request: Request) -> str:
    """The peer the console sees (a trusted proxy's forwarded address, once the shared proxy
    middleware has put it there)."""
    return request.client.host if request.client else "unknown"


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    try:
        check_text(name, field="the user name", max_chars=MAX_NAME, multiline=False)
        if len(password) > MAX_PASSWORD:
            raise InputRefused(f"the password is longer than {MAX_PASSWORD} characters")
    except InputRefused as exc:
        return _refuse(console, request, form, 400, f"Refused: {exc}.")
    address = client_address(request)
    throttle, store = console.throttle, console.session_store
    assert throttle is not None and store is not None, "the console app is not started"
    now = datetime.now(UTC)
    locked = await throttle.lockout(name, address)
    if locked is not None:
        return _refuse(console, request, form, 429, locked.message(now), locked.seconds_left(now))
    user: SessionUser | None = None
    try:
        async with console.password_checks.slot():
            # A lock may have been set while this attempt waited for its slot.
            locked = await throttle.lockout(name, address)
            if locked is None:
                user = await console.password_checks.verify(
                    lambda: console.users.authenticate(name, password)
                )
    except VerifierBusy:
        return _refuse(
            console, request, form, 503, "Too many logins at once: try again in a moment.", 2
        )
    if locked is not None:
        now = datetime.now(UTC)
        return _refuse(console, request, form, 429, locked.message(now), locked.seconds_left(now))
    if user is None:
        await throttle.failed(name, address)
        log.info("console: failed login for %r from %s", name[:60], address)
        locked = await throttle.lockout(name, address)
        if locked is not None:
            now = datetime.now(UTC)
            return _refuse(
                console,
                request,
                form,
                429,
                "Wrong user name or password. " + locked.message(now),
                locked.seconds_left(now),
            )
        return _refuse(console, request, form, 401, "Wrong user name or password.")
    await throttle.succeeded(user.name)
    credential = console.users.credential(user.name)
    assert credential is not None
    session_id = await store.create(
        user.name, credential, address, request.headers.get("user-agent")
    )
    log_in(request, session_id)
    log.info("console: %s (%s) logged in from %s", user.name, user.role, address)
    return RedirectResponse(safe_next(request, str(form.get("next", ""))), 303)


async def logout(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    session_id = session_id_of(request)
    user = current_user(request)
    if session_id is not None and console.session_store is not None:
        await console.session_store.revoke_id(session_id, user.name if user else "logout")
    log_out(request)
    return RedirectResponse(path_of(request, "login_form"), 303)
