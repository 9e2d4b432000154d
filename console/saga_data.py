"""The saga page's key/value view of a saga's data (and result): every field on its own row,
nested objects and lists as indented rows under their key, so an operator reads `items[0].sku`
without parsing JSON. Pure; the template escapes every key and value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Beyond these, the rest is left to the raw JSON view under the table.
MAX_DEPTH = 6
MAX_ROWS = 400


@dataclass(slots=True)
class Field:
    key: str  # the name within its parent: "sku", or "[0]" for a list item
    path: str  # from the top: "items[0].sku"
    depth: int
    value: str | None  # the scalar as text; None for an object or a list (see `summary`)
    kind: str  # string | number | boolean | null | object | list | more
    summary: str = ""  # "3 fields", "2 items", "empty" for an object or a list


@dataclass(slots=True)
class DataView:
    fields: list[Field] = field(default_factory=list)
    truncated: bool = False
    scalar: Field | None = None  # the data itself is not an object or a list


def _scalar(value: Any) -> tuple[str, str]:
    if value is None:
        return "null", "null"
    if isinstance(value, bool):
        return ("true" if value else "false"), "boolean"
    if isinstance(value, int | float):
        return str(value), "number"
    if isinstance(value, str):
        return value, "string"
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode(), "string"
    except TypeError:
        return repr(value), "string"


def _count(n: int, one: str, many: str) -> str:
    return "empty" if n == 0 else f"{n} {one if n == 1 else many}"


def _walk(view: DataView, key: str, path: str, value: Any, depth: int) -> None:
    if len(view.fields) >= MAX_ROWS:
        view.truncated = True
        return
    if isinstance(value, dict):
        kind, summary = "object", _count(len(value), "field", "fields")
        children: list[tuple[str, str, Any]] = [
            (str(k), f"{path}.{k}" if path else str(k), v) for k, v in value.items()
        ]
    elif isinstance(value, list | tuple):
        kind, summary = "list", _count(len(value), "item", "items")
        children = [(f"[{i}]", f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        text, kind = _scalar(value)
        view.fields.append(Field(key, path, depth, text, kind))
        return
    if depth >= MAX_DEPTH and children:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        view.fields.append(Field(key, path, depth, text, "more", summary))
        return
    view.fields.append(Field(key, path, depth, None, kind, summary))
    for child_key, child_path, child in children:
        _walk(view, child_key, child_path, child, depth + 1)


def data_view(data: Any) -> DataView:
    """The rows of `data`: top-level fields at depth 0, their nested fields below them."""
    view = DataView()
    if isinstance(data, dict):
        for key, value in data.items():
            _walk(view, str(key), str(key), value, 0)
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            _walk(view, f"[{i}]", f"[{i}]", value, 0)
    elif data is not None:
        text, kind = _scalar(data)
        view.scalar = Field("", "", 0, text, kind)
    return view
