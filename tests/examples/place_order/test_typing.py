"""mypy (strict) checks the example saga against its contracts: a copy of the example with a
misspelt reply field, or a payload of the wrong command, does not type-check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[3]
MYPY = Path(sys.executable).with_name("mypy")
SAGA = "examples/place_order/saga.py"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a copy of examples/ beside the real packages and the project's mypy
    settings (examples.* strict)."""
    root = tmp_path_factory.mktemp("typing")
    shutil.copytree(ROOT / "examples", root / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for package in ("sagaway", "orchestrator", "participants"):
        (root / package).symlink_to(ROOT / package, target_is_directory=True)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def mypy(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MYPY), "--follow-imports=silent", "--cache-dir", str(root.parent / "mypy-cache"),
         "-p", "examples.place_order"],
        cwd=root, capture_output=True, text=True, timeout=280, check=False,
    )


def edit(root: Path, old: str, new: str) -> None:
    path = root / SAGA
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_example_type_checks_strictly(scratch: Path) -> None:
    done = mypy(scratch)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_misspelt_reply_field_fails_type_checking(scratch: Path) -> None:
    edit(scratch, "reply.reservation_id", "reply.reservaton_id")
    try:
        done = mypy(scratch)
    finally:
        edit(scratch, "reply.reservaton_id", "reply.reservation_id")
    assert done.returncode == 1, done.stdout
    assert 'saga.py' in done.stdout
    assert '"Reserved" has no attribute "reservaton_id"' in done.stdout


def test_a_payload_or_reply_handler_of_another_command_fails_type_checking(
    scratch: Path,
) -> None:
    edit(scratch, "payload=_reserve_payload,", "payload=_release_payload,")
    try:
        wrong_payload = mypy(scratch)
    finally:
        edit(scratch, "payload=_release_payload,", "payload=_reserve_payload,")
    edit(scratch, "on_reply=_reserved,", "on_reply=_charged,")
    try:
        wrong_reply = mypy(scratch)
    finally:
        edit(scratch, "on_reply=_charged,", "on_reply=_reserved,")
    assert wrong_payload.returncode == 1, wrong_payload.stdout
    assert 'Argument "payload" to "step" has incompatible type' in wrong_payload.stdout
    assert "ReleaseReservation" in wrong_payload.stdout
    assert wrong_reply.returncode == 1, wrong_reply.stdout
    assert 'Argument "on_reply" to "step" has incompatible type' in wrong_reply.stdout
