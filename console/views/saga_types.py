"""The saga types the console knows (its registry) and a page per type: the saga's flowchart as
inline SVG drawn on the server (orchestrator/diagram_svg.py), its steps and their retry
policies; opened from a saga's page, it highlights that saga's current step."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from console.auth import require_user
from console.queries.saga import get_saga
from console.state import console_of
from orchestrator.diagram import build_diagram, policy_text
from orchestrator.diagram_svg import to_svg
from orchestrator.dsl import SagaDefinition
from orchestrator.registry import UnknownSagaType, UnknownSagaVersion


async def saga_types(request: Request) -> Response:
    """`/saga-types`: the list; `?type=` one type's page (`&version=`, default the latest);
    `?saga=` the page of a saga's type and version, with its current step highlighted. Query
    parameters rather than a path: a stored saga type may hold any text."""
    require_user(request)
    if request.query_params.get("type") or request.query_params.get("saga"):
        return await _saga_type(request)
    console = console_of(request)
    return console.render(request, "saga_types.html", definitions=list(console.registry))


def _version(request: Request) -> int | None:
    text = request.query_params.get("version", "")
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise HTTPException(400, "version must be a number")
    return int(text)


def _steps(definition: SagaDefinition) -> list[dict[str, Any]]:
    rows = []
    for element in definition.elements:
        for spec in element.steps:
            rows.append({
                "name": spec.name,
                "group": element.name if element.is_group else None,
                "command": spec.command,
                "policy": policy_text(spec.policy),
                "compensation": spec.compensation_command,
                "compensation_policy": (
                    policy_text(spec.compensation_policy) if spec.compensation_policy else None
                ),
                "pivot": definition.pivot == element.index,
                "conditional": spec.when is not None,
                "contract": spec.contract is not None,
            })
    return rows


async def _saga_type(request: Request) -> Response:
    console = console_of(request)
    saga_type = request.query_params.get("type", "")
    version = _version(request)
    saga: dict[str, Any] | None = None
    saga_id = request.query_params.get("saga", "")
    if saga_id:
        async with console.db.connect() as conn:
            saga = await get_saga(conn, saga_id)
        if saga is None or (saga_type and saga["saga_type"] != saga_type):
            raise HTTPException(404, f"no saga {saga_id!r} of type {saga_type!r}")
        saga_type = str(saga["saga_type"])
        version = int(saga["definition_version"])
    try:
        definition = (
            console.registry.latest(saga_type)
            if version is None
            else console.registry.get(saga_type, version)
        )
    except (UnknownSagaType, UnknownSagaVersion) as exc:
        raise HTTPException(404, str(exc)) from exc
    current = saga.get("current_step") if saga is not None else None
    diagram = build_diagram(definition)
    return console.render(
        request,
        "saga_type.html",
        definition=definition,
        versions=console.registry.versions(saga_type),
        diagram_svg=Markup(to_svg(diagram, current_step=current)),
        steps=_steps(definition),
        saga=saga,
        current=current,
    )
