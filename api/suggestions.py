"""What a validation error can add for a person: "did you mean" for a misspelt field or name,
and the line and column of a JSON syntax error.

A misspelt field (`activaton`) is an `extra_forbidden` error whose loc ends in the bad key; the
keys allowed there are read from the route's request-body schema (the OpenAPI document FastAPI
builds from the pydantic models), walked along the same path through the body that was sent.
A misspelt name (a layer type, a loss, an activation) is a `literal_error`, `enum` or
`union_tag_invalid` error whose context lists the expected values.
"""

from __future__ import annotations

import re
from typing import Any

from dlmodels.registry import did_you_mean

QUOTED = re.compile(r"'([^']*)'")
LINE_COLUMN = re.compile(r"line (\d+),? column (\d+)")


def hint(error: dict[str, Any], loc: list[str | int], body: Any,
         body_schema: dict[str, Any] | None, components: dict[str, Any]) -> str:
    """" (did you mean 'x'?)" for a misspelt key or value; "" when nothing is close."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("literal_error", "enum") and isinstance(error.get("input"), str):
        return did_you_mean(error["input"], QUOTED.findall(str(ctx.get("expected", ""))))
    if kind == "union_tag_invalid":
        return did_you_mean(str(ctx.get("tag", "")),
                            QUOTED.findall(str(ctx.get("expected_tags", ""))))
    if kind == "extra_forbidden" and loc and isinstance(loc[-1], str) and body_schema:
        known = _keys_at(body_schema, components, body, loc[:-1])
        return did_you_mean(loc[-1], sorted(known)) if known else ""
    return ""


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _keys_at(schema: dict[str, Any], components: dict[str, Any], body: Any,
             path: list[str | int]) -> set[str]:
    """The property names the schema allows in the object at `path` of `body`."""
    schema = _choose(_resolve(schema, components), components, body)
    if not path:
        return set(schema.get("properties", {}))
    part, rest = path[0], path[1:]
    child = body.get(part) if isinstance(body, dict) else \
        body[part] if isinstance(body, list) and isinstance(part, int) \
        and 0 <= part < len(body) else None
    if isinstance(part, int) and "items" in schema:
        return _keys_at(schema["items"], components, child, rest)
    if isinstance(part, str) and part in schema.get("properties", {}):
        return _keys_at(schema["properties"][part], components, child, rest)
    return set()


def _choose(schema: dict[str, Any], components: dict[str, Any], body: Any) -> dict[str, Any]:
    """The branch of a union the body took: by its discriminator tag, else the first object
    branch (`X | None` unions have one)."""
    options = schema.get("oneOf") or schema.get("anyOf")
    if not options:
        return schema
    discriminator = schema.get("discriminator", {})
    if discriminator and isinstance(body, dict):
        target = discriminator.get("mapping", {}).get(body.get(discriminator["propertyName"]))
        if target is not None:
            return _resolve({"$ref": target}, components)
    for option in options:
        resolved = _choose(_resolve(option, components), components, body)
        if resolved.get("type") != "null" and ("properties" in resolved or "items" in resolved):
            return resolved
    return schema


def json_position(error: dict[str, Any], document: Any) -> tuple[int, int] | None:
    """(line, column) of a JSON syntax error: from FastAPI's character offset into the text,
    or from pydantic's own message."""
    loc = error.get("loc", ())
    if len(loc) == 2 and isinstance(loc[1], int) and isinstance(document, str | bytes):
        text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
        offset = loc[1]
        return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1
    reason = f"{(error.get('ctx') or {}).get('error', '')} {error.get('msg', '')}"
    found = LINE_COLUMN.search(reason)
    return (int(found[1]), int(found[2])) if found else None
