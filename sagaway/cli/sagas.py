"""`sagaway sagas`: the registered sagas; `sagaway sagas show NAME` one saga's steps, commands,
compensations, pivot, timeouts and retries, or (`--mermaid`) its flowchart in Mermaid."""

from __future__ import annotations

import string

import click

from orchestrator.diagram import build_diagram, to_mermaid
from orchestrator.dsl import RetryPolicy, SagaDefinition, StepSpec
from orchestrator.registry import UnknownSagaType, UnknownSagaVersion
from sagaway.cli.asyncapi import configured_registry
from sagaway.settings.composed import Settings


def _policy(policy: RetryPolicy) -> str:
    b = policy.backoff
    return (
        f"timeout {policy.timeout:g}s, {policy.retries} retries, backoff {b.initial:g}s "
        f"x{b.multiplier:g} up to {b.max:g}s (jitter {b.jitter:.0%})"
    )


def _pivot_name(definition: SagaDefinition) -> str | None:
    if definition.pivot is None:
        return None
    return definition.elements[definition.pivot].steps[0].name


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _step_row(position: str, spec: StepSpec, pivot: bool) -> list[str]:
    undo = spec.compensation_command or ("– (pivot)" if pivot else "–")
    undo_policy = spec.compensation_policy
    undo_limits = (
        f"{undo_policy.timeout:g}s / {undo_policy.retries}" if undo_policy is not None else ""
    )
    flags = [f for f, on in (("pivot", pivot), ("conditional", spec.when is not None),
                             ("contract", spec.contract is not None)) if on]
    return [position, spec.name, spec.command, f"{spec.policy.timeout:g}s",
            str(spec.policy.retries), undo, undo_limits, ", ".join(flags)]


def describe(definition: SagaDefinition) -> list[str]:
    """The lines `sagaway sagas show` prints."""
    lines = [f"{definition.saga_type} v{definition.version}"]
    if definition.description:
        lines.append(f"  {definition.description}")
    model = definition.input_model
    lines.append(f"input: {model.__name__ if model is not None else 'any JSON object'}")
    lines.append(f"defaults: {_policy(definition.defaults)}")
    rows = [["#", "step", "command", "timeout", "retries", "compensation",
             "comp. timeout/retries", "notes"]]
    for element in definition.elements:
        for branch, spec in enumerate(element.steps):
            position = str(element.index + 1)
            if element.is_group:
                position += string.ascii_lowercase[branch % 26]
            rows.append(_step_row(position, spec, definition.pivot == element.index))
    lines.append("")
    lines.extend(_table(rows))
    groups = [e for e in definition.elements if e.is_group]
    for group in groups:
        lines.append(f"parallel group {group.index + 1} {group.name!r}: "
                     f"{', '.join(s.name for s in group.steps)} run at once")
    pivot = _pivot_name(definition)
    lines.append("")
    if pivot is None:
        lines.append("pivot: none (every step has a compensation: the saga can always be undone)")
    else:
        lines.append(f"pivot: {pivot} (once it succeeded the saga only goes forward; the steps "
                     "after it are retried to completion)")
    return lines


@click.group("sagas", invoke_without_command=True)
@click.pass_context
def sagas_command(ctx: click.Context) -> None:
    """List the registered sagas (SAGAWAY_SAGAS; the example's when unset)."""
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    registry = configured_registry(settings)
    rows = [["saga", "version", "steps", "pivot", "description"]]
    for definition in registry:
        rows.append([
            definition.saga_type, str(definition.version), str(len(definition.steps)),
            _pivot_name(definition) or "–", definition.description,
        ])
    if len(rows) == 1:
        click.echo("no saga is registered (set SAGAWAY_SAGAS)")
        return
    click.echo("\n".join(_table(rows)))


@sagas_command.command("show")
@click.argument("name")
@click.option("--version", "version", type=int, default=None,
              help="Which version (default: the latest, the one new sagas start on).")
@click.option("--mermaid", is_flag=True, help="Print a Mermaid flowchart instead.")
@click.pass_obj
def show_command(settings: Settings, name: str, version: int | None, mermaid: bool) -> None:
    """Show one saga: its steps, commands, compensations, pivot, timeouts and retries."""
    registry = configured_registry(settings)
    try:
        definition = registry.latest(name) if version is None else registry.get(name, version)
    except (UnknownSagaType, UnknownSagaVersion) as exc:
        raise click.ClickException(str(exc)) from None
    if mermaid:
        click.echo(to_mermaid(build_diagram(definition)), nl=False)
        return
    click.echo("\n".join(describe(definition)))
