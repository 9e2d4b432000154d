"""What `sagaway dev` prints once it answers: where everything is, the console login, and a
ready-to-paste curl that places the example order."""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

import orjson

from sagaway.dev.data_dir import DevCredentials
from sagaway.dev.listener import CONSOLE_PATH

# The order the printed curl places: the seeded customer c-1 buys 2 units of sku-1, shipped to FR.
EXAMPLE_ORDER: dict[str, Any] = {
    "customer_id": "c-1",
    "items": [{"sku": "sku-1", "quantity": 2}],
    "total_cents": 2500,
    "country": "FR",
}


def example_curl(url: str, *, auth_enabled: bool) -> str:
    """The ready-to-paste command that places EXAMPLE_ORDER and waits for its outcome."""
    body = orjson.dumps(EXAMPLE_ORDER).decode()
    lines = [
        f"curl -sS -X POST {url}/api/v1/orders",
        "-H 'Content-Type: application/json'",
    ]
    if auth_enabled:
        lines.append('-H "X-API-Key: $SAGAWAY_API_KEY"')
    lines.append(f"-d {shlex.quote(body)}")
    return " \\\n    ".join(lines)


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _metrics_lines(url: str, metrics_url: str | None, public_metrics: bool) -> list[str]:
    """Where /metrics is: the internal listener (not the public port), unless configured."""
    lines = []
    if metrics_url is not None:
        lines.append(f"  Metrics       {metrics_url}  (internal listener)")
    if public_metrics:
        lines.append(f"  Metrics       {url}/metrics  (public: gateway_public_metrics)")
    if not lines:
        lines.append("  Metrics       not served (gateway_internal_port = 0)")
    return lines


def dev_banner(
    url: str,
    *,
    data_dir: Path,
    credentials: DevCredentials | None,
    auth_enabled: bool,
    participants_process: bool = False,
    metrics_url: str | None = None,
    public_metrics: bool = False,
) -> str:
    """What `sagaway dev` prints once it answers: where everything is, and how to try it."""
    if credentials is not None:
        login = (
            f"user {credentials.user}, password {credentials.password}"
            f" (saved in {_shown(credentials.path)})"
        )
    else:
        login = "users of [[console.users]]"
    where = "the participants in a 2nd process" if participants_process else "all in this process"
    lines = [
        "Sagaway dev is ready: gateway, orchestrator, inventory, payments, shipping,",
        f"their outbox relays and the console, {where}; data in {_shown(data_dir)}/",
        "",
        f"  API      POST {url}/api/v1/orders",
        f"           POST {url}/api/v1/sagas/{{saga_type}}",
        f"  Status   GET  {url}/api/v1/requests/{{id}}",
        f"  Console       {url}{CONSOLE_PATH}/",
        f"                {login}",
        *_metrics_lines(url, metrics_url, public_metrics),
        f"  OpenAPI       {url}/openapi.json",
        "",
    ]
    if not auth_enabled:
        lines += [
            "  ! No API keys are configured: anyone who can reach the gateway may start sagas.",
            "    Configure api_keys (see the README) before listening beyond 127.0.0.1.",
            "",
        ]
    lines += [
        "Place an order; the answer comes when its saga ends. Add -H 'Prefer: respond-async'",
        'for a 202 and a status URL; with "country": "AQ" shipping refuses and the saga',
        "compensates (409):",
        "",
        "  " + example_curl(url, auth_enabled=auth_enabled),
        "",
    ]
    if auth_enabled:
        lines += ["  (set SAGAWAY_API_KEY to one of your configured keys first)", ""]
    lines.append("Ctrl-C stops. Run `sagaway dev` again to continue where it left off; --reset")
    lines.append("starts afresh.")
    return "\n".join(lines)
