"""The CI dependency audit (.ci/audit_deps.py): a known vulnerability fails it; a vulnerability
service that cannot be reached, or that audited nothing, is reported as such and does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "audit_deps.py"


def run_with(tmp_path: Path, output: str, exit_code: int = 0) -> tuple[int, str]:
    """Run the audit step with a stand-in pip-audit printing `output`."""
    fake = tmp_path / "pip-audit"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({output!r})\nsys.exit({exit_code})\n"
    )
    fake.chmod(0o755)
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={**os.environ, "PIP_AUDIT": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def report(*dependencies: dict[str, Any]) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_a_known_vulnerability_fails_the_step(tmp_path: Path) -> None:
    vulnerable = {
        "name": "starlette",
        "version": "0.1.0",
        "vulns": [{"id": "GHSA-xxxx-yyyy-zzzz", "fix_versions": ["0.40.0"], "aliases": []}],
    }
    code, text = run_with(
        tmp_path, report(vulnerable, {"name": "x", "version": "1", "vulns": []}), 1
    )
    assert code == 1
    assert "VULNERABLE starlette 0.1.0: GHSA-xxxx-yyyy-zzzz (fixed in 0.40.0)" in text


def test_a_clean_audit_passes(tmp_path: Path) -> None:
    code, text = run_with(tmp_path, report({"name": "x", "version": "1", "vulns": []}))
    assert code == 0 and "1 packages audited, 0 with known vulnerabilities" in text
    assert "NOT AUDITED" not in text


def test_packages_the_service_could_not_audit_are_reported_not_failed(tmp_path: Path) -> None:
    skipped = {"name": "x", "skip_reason": "Dependency not found on PyPI and could not be audited"}
    code, text = run_with(tmp_path, report(skipped))
    assert code == 0 and "NOT AUDITED 1 of 1 packages" in text


def test_an_unreachable_service_is_reported_not_failed(tmp_path: Path) -> None:
    code, text = run_with(tmp_path, "ConnectionError: pypi.org unreachable", 1)
    assert code == 0 and "NOT AUDITED" in text and "unreachable" in text
