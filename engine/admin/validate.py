"""Request bodies checked against the JSON schema their operation declares.

Every admin operation that takes a JSON body declares its schema on its route (it is also
what the OpenAPI document shows); ``engine.admin.http.read_json`` checks the body against
it before a handler sees it, so a value of the wrong type is a 400 naming the key, never a
500 from deep inside a handler. The subset of JSON Schema the routes use is supported:
``type`` (object, array, string, integer, number, boolean, null, or a list of them),
``properties``, ``required``, ``additionalProperties: false``, ``items``, ``enum``,
``minimum``, ``maximum``, ``maxLength`` and ``maxItems``. A boolean is not an integer
here (Python would say it is).
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}
_NAMES = {
    "object": "a JSON object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


class BodyError(ValueError):
    """The body does not match the schema; the message names the key and what it needs."""


def check(value: Any, schema: dict[str, Any], where: str = "the body") -> None:
    """Raise ``BodyError`` when *value* does not match *schema*."""
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind or ())
    if kinds and not any(_is(value, k) for k in kinds):
        raise BodyError(f"{where} must be {' or '.join(_NAMES.get(k, k) for k in kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        raise BodyError(f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    _bounds(value, schema, where)
    if isinstance(value, dict):
        _object(value, schema, where)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(item, schema["items"], f"{where}[{i}]")


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def _bounds(value: Any, schema: dict[str, Any], where: str) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise BodyError(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise BodyError(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        raise BodyError(f"{where} must be at most {schema['maxLength']} characters")
    if isinstance(value, list) and len(value) > schema.get("maxItems", len(value)):
        raise BodyError(f"{where} must have at most {schema['maxItems']} items")


def _object(value: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    props: dict[str, Any] = schema.get("properties", {})
    prefix = "" if where == "the body" else f"{where}."
    for name in schema.get("required", ()):
        if name not in value:
            raise BodyError(f"{prefix}{name} is required")
    for name, item in value.items():
        if name in props:
            check(item, props[name], f"{prefix}{name}")
        elif schema.get("additionalProperties") is False:
            raise BodyError(f"{where} has no key {name[:40]!r} (known: {', '.join(props)})")
