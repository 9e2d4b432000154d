"""Print the README's configuration table from the Settings model: every field, variable, default."""

from __future__ import annotations

from pydantic import BaseModel

from sagaway.settings import Settings


def rows(model: type[BaseModel], prefix: str = "SAGAWAY_") -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(rows(annotation, f"{prefix}{name.upper()}__"))
            continue
        default = field.get_default(call_default_factory=True)
        shown = "—" if default in (None, "", [], {}) else f"`{default}`"
        out.append((f"`{prefix}{name.upper()}`", shown, field.description or ""))
    return out


def markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| {var} | {default} | {text} |" for var, default, text in rows(Settings)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
