"""Print the README's configuration table from the settings models: every variable once, its
default and meaning, in the order of the components that read it, the example's last."""

from __future__ import annotations

from pydantic import BaseModel

from examples.place_order.settings import ShippingSettings
from sagaway.settings import ConsoleSettings
from sagaway.settings.composed import COMPONENTS


def rows(model: type[BaseModel], prefix: str = "SAGAWAY_") -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default in (None, "", [], {}) else f"`{default}`"
        out.append((f"`{prefix}{name.upper()}`", shown, field.description or ""))
    return out


def markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    seen: set[str] = set()
    every = [row for model in COMPONENTS.values() for row in rows(model)]
    every += rows(ConsoleSettings, "SAGAWAY_CONSOLE__")
    every += rows(ShippingSettings)
    for var, default, text in every:
        if var not in seen:
            seen.add(var)
            lines.append(f"| {var} | {default} | {text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
