"""The README is the user's manual: its set-up commands and configuration table stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_first_two_commands_run_the_system_and_the_tests() -> None:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands[:2] == ["bin/sagaway dev", "./run-tests"]
    for script in ("bin/sagaway", "run-tests", "scripts/lint"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"


def test_ci_runs_the_readme_test_command_and_the_static_checks() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run-tests" in ci
    assert "scripts/lint" in ci
    lint = (ROOT / "scripts" / "lint").read_text()
    for check in ("lint-imports", "ruff\" check", "mypy"):
        assert check in lint


def test_configuration_table_lists_every_setting_as_generated() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    start = README.index("<!-- settings-table:start")
    start = README.index("\n", start) + 1
    end = README.index("<!-- settings-table:end -->")
    assert README[start:end].strip() == generated, (
        "the README's configuration table is stale: paste `python scripts/settings_table.py`"
    )
