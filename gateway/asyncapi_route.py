"""`GET /asyncapi.json`: the AsyncAPI 3.0 document of the sagas this gateway loads, with the
topic names under its configured prefix (orchestrator/asyncapi.py builds it; docs/messages.md).
Unlike /openapi.json it names the internal topics and every participant's messages, so it
takes the same credentials as the API (anyone, when authentication is off)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.origins import json_response
from orchestrator.asyncapi import asyncapi_document
from sagaway import __version__

if TYPE_CHECKING:
    from gateway.app import Gateway


def asyncapi_route(gateway: Gateway) -> Route:
    """The route; the document is built on the first request and kept (the registry is fixed
    for the gateway's life)."""
    cached: dict[str, Any] = {}

    async def asyncapi(request: Request) -> Response:
        await gateway.routes.identify(request)
        if "document" not in cached:
            cached["document"] = asyncapi_document(
                gateway.registry,
                topic_prefix=gateway.transport.settings.topic_prefix,
                title="Sagaway sagas",
                version=__version__,
            )
        return json_response(cached["document"])

    return Route("/asyncapi.json", asyncapi, methods=["GET"], name="asyncapi")
