"""`sagaway console`: serve the operator console on its own (`sagaway dev` mounts it instead)."""

from __future__ import annotations

import click

from console.auth import ConsoleConfigError, hash_password
from orchestrator.registry import SagaModuleError, load_registry
from sagaway.http import SERVER_OPTIONS
from sagaway.observability.listeners import ListenerUnavailable, bind_listener, listener_port
from sagaway.settings.composed import Settings


@click.command("console")
@click.option("--host", default=None, help="Interface to listen on [default: console.host].")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on [default: console.port].",
)
@click.option(
    "--hash-password",
    "make_hash",
    is_flag=True,
    help="Ask for a password and print its argon2 hash for [[console.users]], then exit.",
)
@click.pass_obj
def console_command(
    settings: Settings, host: str | None, port: int | None, make_hash: bool
) -> None:
    """Serve the operator console (overview, sagas, dead letters, operator actions).

    Reads the orchestrator's database (migrate it first with `sagaway migrate`), the gateway's
    for in-flight requests, and each service's for outbox lag; users and roles come from
    [[console.users]] in the TOML file named by SAGAWAY_CONFIG.
    """
    if make_hash:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        click.echo(hash_password(password))
        return
    import uvicorn

    from console.app import create_console_app

    try:
        app = create_console_app(
            settings.console,
            messaging=settings.messaging,
            storage=settings.storage,
            registry=load_registry(settings.orchestrator.sagas or []),
        )
    except (ConsoleConfigError, SagaModuleError) as exc:
        raise click.ClickException(str(exc)) from None
    listen_host = host or settings.console.host
    listen_port = settings.console.port if port is None else port
    try:
        sock = bind_listener(
            listen_host, listen_port, "the console", "--port or SAGAWAY_CONSOLE__PORT"
        )
    except ListenerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sagaway console on http://{listen_host}:{listener_port(sock)}/")
    config = uvicorn.Config(
        app,
        host=listen_host,
        port=listener_port(sock),
        log_level=settings.observability.log_level.lower(),
        log_config=None,  # our handler formats uvicorn's lines too
        **SERVER_OPTIONS,  # X-Forwarded-For only through TrustedProxies
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise click.ClickException("the console did not start: see the lines above")
