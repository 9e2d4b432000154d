"""What an operator may type: free text of bounded length without control characters, and a
skipped step's JSON result PostgreSQL can store — checked the same whichever database is behind,
so SQLite and PostgreSQL accept and refuse the same input (docs/architecture.md)."""

from __future__ import annotations

import re
from typing import Any

import orjson

# C0 controls and DEL, except tab and newline (and CR, which browsers send in textareas); C1
# controls; and U+2028/2029, which some viewers treat as line breaks.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_FORBIDDEN_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class InputRefused(ValueError):
    """Operator input the console will not store or act on; the message says which field and
    why, to show next to the form."""


def check_text(value: str, *, field: str, max_chars: int, multiline: bool = True) -> str:
    """`value` if it fits: at most `max_chars` characters, no NUL or other control character
    (tab and newline allowed where `multiline`)."""
    if len(value) > max_chars:
        raise InputRefused(f"{field} is longer than {max_chars} characters")
    pattern = _FORBIDDEN if multiline else _FORBIDDEN_ONE_LINE
    found = pattern.search(value)
    if found:
        raise InputRefused(
            f"{field} holds a control character (U+{ord(found.group()):04X}), which is not allowed"
        )
    return value


def has_control_character(value: str) -> bool:
    """True when `value` holds a character no console identifier, filter or path may hold."""
    return _FORBIDDEN_ONE_LINE.search(value) is not None


def _check_json_strings(value: Any) -> None:
    # Iterative: orjson accepts nesting deeper than Python's recursion limit.
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InputRefused(f"the result holds \\u0000 at {path}, which cannot be stored")
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise InputRefused(f"the result holds \\u0000 in a key at {path}")
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))


def parse_result(text: str, *, max_bytes: int) -> dict[str, Any]:
    """A skipped step's result: a JSON object of at most `max_bytes` (UTF-8) with no \\u0000 in
    any key or string (PostgreSQL's jsonb cannot hold it)."""
    raw = (text or "{}").encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise InputRefused(f"the result is larger than {max_bytes} bytes")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputRefused(f"the result is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InputRefused('the result must be a JSON object, e.g. {"reserved": true}')
    _check_json_strings(value)
    return value
