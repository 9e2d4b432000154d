"""docs/sagas.md §9 shows a complete test of the place-order saga with the test kit: that block,
exactly as written there, is run here (each of its `test_*` functions is one test); so are the
first saga of §1 (under 60 lines), its participant and its test."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sagas.md"
MARKER = "<!-- test-kit-example: run by tests/orchestrator/test_sagas_doc.py -->"


def doc_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"docs/sagas.md must have the marker {MARKER!r} once"
    block = re.match(r"\n```python\n(.*?)```", text[text.index(MARKER) + len(MARKER):], re.S)
    assert block is not None, "the marker must be followed by a ```python block"
    return block.group(1)


def doc_tests() -> dict[str, Callable[[], Any]]:
    namespace: dict[str, Any] = {"__name__": "docs_sagas_example"}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)  # noqa: S102
    return {name: f for name, f in namespace.items() if name.startswith("test_") and callable(f)}


TESTS = doc_tests()


def test_the_example_tests_every_behaviour_the_kit_scripts() -> None:
    code = doc_example()
    assert len(TESTS) >= 5
    for behaviour in ("reply(", "refuse(", "time_out(", "reply_twice(", "reply_late("):
        assert behaviour in code


@pytest.mark.parametrize("name", sorted(TESTS))
def test_the_docs_example(name: str) -> None:
    TESTS[name]()


# -- §1, a first saga from zero ----------------------------------------------------------------

FIRST = "<!-- first-saga: run by tests/orchestrator/test_sagas_doc.py -->"
PARTICIPANT = "<!-- first-saga-participant: run by tests/orchestrator/test_sagas_doc.py -->"
FIRST_TEST = "<!-- first-saga-test: run by tests/orchestrator/test_sagas_doc.py -->"


def block_after(marker: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"docs/sagas.md must have the marker {marker!r} once"
    block = re.match(r"\n```python\n(.*?)```", text[text.index(marker) + len(marker):], re.S)
    assert block is not None, "the marker must be followed by a ```python block"
    return block.group(1)


def first_saga() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_sagas_first"}
    for marker in (FIRST, PARTICIPANT, FIRST_TEST):
        exec(compile(block_after(marker), str(DOC), "exec"), namespace)  # noqa: S102
    return namespace


def test_the_first_saga_is_under_60_lines_with_contracts_and_typed_state() -> None:
    code = block_after(FIRST)
    assert len(code.splitlines()) < 60
    ns = first_saga()
    checkout = ns["checkout"]
    assert checkout.state_model is ns["CheckoutState"]
    assert sorted(checkout.contracts) == ["billing.charge", "stock.release", "stock.reserve"]
    assert ns["stock"].commands == ["stock.release", "stock.reserve"]


def test_the_first_saga_runs_and_compensates() -> None:
    from orchestrator.testing import refuse, reply, run_saga

    checkout = first_saga()["checkout"]
    order = {"customer_id": "c-1", "sku": "s-1", "quantity": 2, "amount_cents": 900}
    services = {
        "stock.reserve": reply({"reservation_id": "r-1"}),
        "billing.charge": reply({"payment_id": "p-1"}),
    }
    done = run_saga(checkout, order, services)
    assert done.status == "completed"
    assert done.result == {**order, "reservation_id": "r-1", "payment_id": "p-1"}
    refused = run_saga(checkout, order, {**services, "billing.charge": refuse("no credit")})
    assert refused.status == "compensated"
    assert refused.payloads("stock.release") == [{"reservation_id": "r-1"}]


def test_the_first_sagas_own_test() -> None:
    first_saga()["test_a_refused_charge_releases_the_stock"]()
