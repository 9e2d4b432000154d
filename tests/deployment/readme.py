"""The README's code as tests run it: the shell blocks of a section, each shown output next to
the command that prints it, and the shape an output must have to match the one shown (ids and
times vary from run to run; statuses, fields, messages and headers may not)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```\n", re.S | re.M)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)")


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    start: int  # offsets in the text: the opening fence, and just after the closing one
    end: int


@dataclass(frozen=True)
class Example:
    """A ```bash block and the output block right after it."""

    command: str
    output: str


def section(title: str, text: str | None = None) -> str:
    """The text under `## title`, up to the next heading of that level."""
    text = README.read_text() if text is None else text
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def blocks(text: str) -> list[Block]:
    return [
        Block(m.group("lang"), m.group("body"), m.start(), m.end()) for m in _FENCE.finditer(text)
    ]


def bash_blocks(text: str) -> list[str]:
    return [block.body for block in blocks(text) if block.lang == "bash"]


def examples(text: str) -> list[Example]:
    """Every ```bash block followed at once (blank lines aside) by a block of its output."""
    found = blocks(text)
    pairs = []
    for block, following in zip(found, found[1:], strict=False):
        between = text[block.end : following.start]
        if block.lang == "bash" and following.lang in ("", "json") and not between.strip():
            pairs.append(Example(block.body, following.body))
    return pairs


# -- shapes ------------------------------------------------------------------------------------


def value_shape(value: Any) -> Any:
    """`value` with every uuid and timestamp replaced by a placeholder."""
    if isinstance(value, dict):
        return {key: value_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [value_shape(item) for item in value]
    if isinstance(value, str):
        return _TIME.sub("<time>", _UUID.sub("<uuid>", value))
    return value


@dataclass
class Shape:
    """An output read line by line: HTTP status lines, headers (name → value), JSON documents
    (as shapes) and other lines (uuids and times as placeholders)."""

    items: list[Any]
    headers: list[dict[str, str]]  # one per HTTP response, in order

    @classmethod
    def of(cls, output: str) -> Shape:
        items: list[Any] = []
        headers: list[dict[str, str]] = []
        in_headers = False
        for raw in output.replace("\r\n", "\n").splitlines():
            line = raw.strip()
            if line.startswith("HTTP/"):
                items.append(("status", line.split(" ", 2)[1]))
                headers.append({})
                in_headers = True
            elif in_headers and line:
                name, _, value = line.partition(":")
                headers[-1][name.strip().lower()] = value.strip()
            elif in_headers:
                in_headers = False
            elif line.startswith(("{", "[")):
                items.append(("json", value_shape(json.loads(line))))
            elif line:
                items.append(("text", value_shape(line)))
        return cls(items, headers)

    def mismatches(self, actual: Shape) -> list[str]:
        """How `actual` differs from this shape (the one shown): the same items in order, and
        every header shown present with the value shown."""
        problems = []
        if self.items != actual.items:
            problems.append(f"shown {self.items!r}\n  got {actual.items!r}")
        if len(self.headers) != len(actual.headers):
            problems.append(f"{len(self.headers)} responses shown, {len(actual.headers)} got")
        for shown, got in zip(self.headers, actual.headers, strict=False):
            for name, value in shown.items():
                if got.get(name) != value:
                    problems.append(f"header {name}: shown {value!r}, got {got.get(name)!r}")
        return problems
