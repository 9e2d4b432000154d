"""`/openapi.json`: an OpenAPI 3.1 document generated from the routes and the sagas' input
models, so clients can generate code against the exact inputs each saga takes."""

from __future__ import annotations

from typing import Any

from orchestrator.dsl import SagaDefinition
from orchestrator.registry import SagaRegistry
from sagaway import __version__
from sagaway.settings import GatewaySettings

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM}},
    }


def _input_schema(definition: SagaDefinition, components: dict[str, Any]) -> dict[str, Any]:
    model = definition.input_model
    if model is None:
        return {"type": "object"}
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    name = model.__name__
    components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _start_operation(
    definition: SagaDefinition, schema: dict[str, Any], op_id: str
) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": f"Start a {definition.saga_type} saga",
        "description": definition.description
        or f"Starts saga {definition.saga_type} (version {definition.version}).",
        "parameters": [
            {
                "name": "Prefer",
                "in": "header",
                "schema": {"type": "string"},
                "description": "`respond-async` for 202 at once; `wait=N` caps the sync wait.",
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "maxLength": 255},
            },
            {
                "name": "Callback-Url",
                "in": "header",
                "schema": {"type": "string", "format": "uri"},
                "description": "POST the signed final result there (implies async).",
            },
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {
            "200": {
                "description": "The saga completed.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Completed"}}
                },
            },
            "202": {
                "description": "Accepted; poll the Location.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            "400": _problem("Malformed JSON."),
            "401": _problem("No or invalid credentials."),
            "403": _problem("Not allowed to start this saga."),
            "404": _problem("Unknown saga type."),
            "409": _problem("The saga ended compensated or failed (step and reason)."),
            "413": _problem("Body too large."),
            "415": _problem("Body is not JSON."),
            "422": _problem("Input fails the saga's input model, or Idempotency-Key reused."),
            "429": _problem("Rate limited, or too many failed authentications (Retry-After)."),
            "431": _problem("Header fields too large or too many."),
            "503": _problem("Broker or database unavailable, or authentication busy."),
        },
    }


def openapi_document(settings: GatewaySettings, registry: SagaRegistry) -> dict[str, Any]:
    components: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
            },
        },
        "Accepted": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "saga_type": {"type": "string"},
                "status": {"type": "string"},
            },
        },
        "Completed": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "saga_type": {"type": "string"},
                "status": {"const": "completed"},
                "result": {"type": "object"},
            },
        },
        "RequestStatus": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "saga_type": {"type": "string"},
                "status": {"enum": ["accepted", "completed", "compensated", "failed"]},
                "result": {},
                "failure": {},
                "received_at": {"type": "string"},
                "completed_at": {"type": ["string", "null"]},
            },
        },
    }
    paths: dict[str, Any] = {}
    schemas: dict[str, dict[str, Any]] = {}
    for saga_type in registry.types():
        definition = registry.latest(saga_type)
        schema = _input_schema(definition, components)
        schemas[saga_type] = schema
        paths[f"/api/v1/sagas/{saga_type}"] = {
            "post": _start_operation(definition, schema, f"start_{saga_type}")
        }
    for route in settings.routes:
        if route.saga in registry:
            definition = registry.latest(route.saga)
            paths.setdefault(route.path, {})[route.method.lower()] = _start_operation(
                definition, schemas[route.saga], f"{route.method.lower()}_{route.path}"
            )
    paths["/api/v1/requests/{id}"] = {
        "get": {
            "operationId": "get_request",
            "summary": "A request's status and result",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "Status (terminal results carry an ETag).",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/RequestStatus"}
                        }
                    },
                },
                "304": {"description": "Not modified (If-None-Match)."},
                "401": _problem("No or invalid credentials."),
                "403": _problem("The request belongs to another principal."),
                "404": _problem("Unknown request."),
                "429": _problem("Too many failed authentications from this address."),
                "431": _problem("Header fields too large or too many."),
                "503": _problem("Too many new API keys being checked at once."),
            },
        }
    }
    paths["/healthz"] = {
        "get": {"operationId": "healthz", "responses": {"200": {"description": "Alive."}}}
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "responses": {
                "200": {"description": "Broker and database reachable."},
                "503": {"description": "Not ready."},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sagaway gateway", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }
