"""`sagaway sagas`, `sagaway sagas show NAME [--mermaid]` and `sagaway asyncapi` as a user types
them (issue 16, items 5 and 6)."""

from __future__ import annotations

import orjson
from click.testing import CliRunner, Result

from sagaway.cli.main import main
from tests.orchestrator.test_asyncapi import schema_errors


def sagaway(*args: str, sagas: str | None = None, prefix: str = "") -> Result:
    env = {"SAGAWAY_SAGAS": sagas, "SAGAWAY_TOPIC_PREFIX": prefix, "SAGAWAY_CONFIG": None}
    return CliRunner().invoke(main, list(args), env=env)


def test_sagas_lists_the_registered_sagas() -> None:
    result = sagaway("sagas", sagas="examples.place_order.saga,tests.orchestrator.contract_sagas")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["saga", "version", "steps", "pivot", "description"]
    assert lines[1].split()[:4] == ["place-order", "1", "3", "schedule-shipping"]
    assert lines[2].split()[:4] == ["ship-parcel", "1", "5", "pay"]


def test_sagas_without_setting_lists_the_example() -> None:
    result = sagaway("sagas")
    assert result.exit_code == 0, result.output
    assert "place-order" in result.output


def test_show_prints_steps_commands_compensations_pivot_timeouts_and_retries() -> None:
    result = sagaway("sagas", "show", "ship-parcel", sagas="tests.orchestrator.contract_sagas")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()
            if line[:1].isdigit()}
    assert rows["1"][:7] == ["1", "hold", "warehouse.hold", "5s", "2", "warehouse.unhold", "5s"]
    assert rows["2a"][:6] == ["2a", "notify", "mail.notify", "2s", "2", "mail.retract"]
    assert rows["3"][:7] == ["3", "pay", "billing.pay", "2s", "2", "–", "(pivot)"]
    assert rows["4"][:5] == ["4", "label", "printer.label", "2s", "7"]
    assert "parallel group 2 'tell': notify, log run at once" in result.output
    assert "pivot: pay (once it succeeded" in result.output
    assert "defaults: timeout 2s, 2 retries" in result.output


def test_show_place_order_mermaid_prints_a_flowchart() -> None:
    result = sagaway("sagas", "show", "place-order", "--mermaid")
    assert result.exit_code == 0, result.output
    assert "flowchart LR" in result.output.splitlines()
    assert 'step2_0["schedule-shipping<br/>shipping.schedule' in result.output
    assert "comp1_0 ==> comp0_0" in result.output


def test_show_an_unknown_saga_names_the_known_ones() -> None:
    result = sagaway("sagas", "show", "nope")
    assert result.exit_code == 1
    assert "no saga type 'nope' is loaded (known: place-order)" in result.output


def test_asyncapi_prints_a_valid_document_with_the_prefix() -> None:
    result = sagaway("asyncapi", sagas="tests.orchestrator.contract_sagas", prefix="acme.")
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.output)
    assert schema_errors(document) == []
    assert document["channels"]["warehouse.requests"]["address"] == "acme.warehouse.requests"
