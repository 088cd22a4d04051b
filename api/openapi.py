"""The OpenAPI schema, describing the errors the app really answers.

Every route declares its error responses with api.schemas.errors (the FastAPI way: a declared
422 replaces FastAPI's HTTPValidationError). This is the net under it: a 422 still pointing at
FastAPI's default model is pointed at ErrorBody, so the schema never documents a body the app
cannot send (api.errors answers every validation error as ErrorBody).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.schemas import ERROR_RESPONSES, ErrorBody

REF = "#/components/schemas/"
FASTAPI_DEFAULTS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (served at /openapi.json) return the post-processed schema."""
    generate = app.openapi  # FastAPI's own; it caches its result in app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = use_error_body(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def use_error_body(schema: dict[str, Any]) -> dict[str, Any]:
    """Point every 422 at ErrorBody and drop FastAPI's validation error models (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    replaced = False
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            content = (response or {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == REF + "HTTPValidationError":
                content["schema"] = {"$ref": REF + "ErrorBody"}
                response["description"] = ERROR_RESPONSES[422]["description"]
                replaced = True
    if replaced and "ErrorBody" not in components:
        body = ErrorBody.model_json_schema(ref_template=REF + "{model}", mode="serialization")
        components.update(body.pop("$defs", {}))
        components["ErrorBody"] = body
    for name in FASTAPI_DEFAULTS:
        components.pop(name, None)
    return schema
