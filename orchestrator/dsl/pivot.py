"""The pivot rule: a saga is compensatable steps, then its pivot, then retriable steps.

The pivot (Garcia-Molina & Salem's *pivot transaction*) is the point of no return. Before it,
every step has a compensation, so a failure can undo them; after it succeeded, the saga only
goes forward, and the steps after it have no compensation: they are retried to completion (or
left `failed` for an operator).

The pivot is declared, never guessed: a step without a compensation is either a forgotten
`compensate=` or the point of no return, and only the author knows which. So:

- a saga whose every step has a compensation has no pivot (it can always be undone);
- otherwise exactly one step is marked `pivot=True`: a single step (not a parallel branch),
  unconditional, without a compensation (it would never run), every step before it has a
  compensation and no step after it has one.

Anything else is a `SagaDefinitionError` naming the step and the fix. Marking the step that
was the pivot under the former rule ("the first step without a compensation") gives the same
definition, so sagas in flight keep their meaning (`pivot_passed`, positions and step names in
the stored state are unchanged).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from orchestrator.dsl.definition import Element, SagaDefinitionError, StepSpec


def find_pivot(saga_type: str, elements: Sequence[Element], marked: Collection[str]) -> int | None:
    """The index of the pivot element, or None; `marked` names the steps with `pivot=True`."""
    marks = [(element, spec) for element in elements for spec in element.steps
             if spec.name in marked]
    for element, spec in marks:
        if element.is_group:
            raise SagaDefinitionError(
                saga_type, spec.name,
                f"pivot=True is set on a branch of parallel group {element.name!r}, but the "
                "pivot must be a single step: a failure of one branch after another succeeded "
                "could be neither undone nor finished",
                "make the pivot a single step before or after the group",
            )
    if len(marks) > 1:
        first, second = marks[0][1].name, marks[1][1].name
        raise SagaDefinitionError(
            saga_type, second,
            f"pivot=True is set on {first!r} and on {second!r}, but a saga has one pivot",
            "keep pivot=True only on the step after which the saga cannot be undone; the "
            "steps after it have no compensation",
        )
    if not marks:
        _check_without_pivot(saga_type, elements)
        return None
    pivot_element, pivot = marks[0]
    _check_pivot(saga_type, elements, pivot_element, pivot)
    return pivot_element.index


def _check_without_pivot(saga_type: str, elements: Sequence[Element]) -> None:
    """No step is marked: every step must have a compensation."""
    lacking = [s for e in elements for s in e.steps if not s.compensatable]
    if not lacking:
        return
    first = lacking[0]
    later = [s.name for s in lacking[1:]]
    after = (
        f" (then {_names(later)} after it need no compensation: they are retried to completion)"
        if later else ""
    )
    raise SagaDefinitionError(
        saga_type, first.name,
        "it has no compensate= and no step of the saga is marked pivot=True, so nothing says "
        "whether it is the point of no return or its compensation was forgotten",
        f"if the saga cannot be undone once {first.name!r} succeeded, declare it with "
        f"pivot=True{after}; otherwise give {first.name!r} a compensate=",
    )


def _check_pivot(
    saga_type: str, elements: Sequence[Element], element: Element, pivot: StepSpec
) -> None:
    if pivot.compensatable:
        raise SagaDefinitionError(
            saga_type, pivot.name,
            f"the pivot {pivot.name!r} has a compensation, which would never run: once the "
            "pivot succeeded the saga only goes forward, and a pivot that failed did nothing",
            f"remove compensate= from {pivot.name!r}, or mark the step after which nothing can "
            "be undone as the pivot instead",
        )
    if pivot.when is not None:
        raise SagaDefinitionError(
            saga_type, pivot.name,
            "the pivot cannot be conditional: a skipped pivot would leave the saga without "
            "its point of no return",
            f"remove when=... from {pivot.name!r}, or mark another step as the pivot",
        )
    for before in elements[: element.index]:
        for spec in before.steps:
            if not spec.compensatable:
                raise SagaDefinitionError(
                    saga_type, spec.name,
                    f"step {spec.name!r} comes before the pivot {pivot.name!r} and has no "
                    f"compensate=, so it could not be undone if {pivot.name!r} fails",
                    f"give {spec.name!r} a compensate=, or mark {spec.name!r} as the pivot "
                    f"(pivot=True) instead of {pivot.name!r}",
                )
    for after in elements[element.index + 1:]:
        for spec in after.steps:
            if spec.compensatable:
                raise SagaDefinitionError(
                    saga_type, spec.name,
                    f"a step after the pivot {pivot.name!r} has a compensation, but after the "
                    "pivot a saga only goes forward",
                    "remove its compensation (it must be retriable), or move it before the pivot",
                )


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)
