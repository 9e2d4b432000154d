"""Logging in and out: the login form, checking a password, and ending the session."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import current_user, log_in, log_out
from console.csrf import check_csrf
from console.links import path_of, safe_next
from console.state import console_of

log = logging.getLogger(__name__)


async def login_form(request: Request) -> Response:
    console = console_of(request)
    if current_user(request) is not None:
        return RedirectResponse(safe_next(request, request.query_params.get("next")), 303)
    return console.render(request, "login.html", next=request.query_params.get("next", ""))


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    user = await asyncio.to_thread(console.users.authenticate, name, password)
    if user is None:
        return console.render(
            request,
            "login.html",
            status_code=401,
            error="Wrong user name or password.",
            next=str(form.get("next", "")),
            username=name,
        )
    log_in(request, user)
    log.info("console: %s (%s) logged in", user.name, user.role)
    return RedirectResponse(safe_next(request, str(form.get("next", ""))), 303)


async def logout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    log_out(request)
    return RedirectResponse(path_of(request, "login_form"), 303)
