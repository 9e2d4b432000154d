"""The import rules of docs/architecture.md are code: `lint-imports` keeps them on the tree, and
breaks when a scratch copy of the tree gets an import that points the wrong way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sagaway", "orchestrator", "participants", "gateway", "console", "examples")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages of `tree` (found there first, ahead of the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scratch_tree(tmp_path: Path) -> Path:
    """A copy of the product packages and pyproject.toml, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(module_file: Path, line: str) -> None:
    """Put `line` right after the module's `from __future__` line (or at its top)."""
    text = module_file.read_text(encoding="utf-8")
    anchor = "from __future__ import annotations\n"
    if anchor in text:
        text = text.replace(anchor, anchor + line + "\n", 1)
    else:
        text = line + "\n" + text
    module_file.write_text(text, encoding="utf-8")


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


PURE = "The engine, the DSL and the test kit are pure"


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("participants/sdk.py", "import orchestrator.dsl", "Participants know commands"),
        ("gateway/problems.py", "import console.csrf", "Imports point down the layers"),
        ("sagaway/storage/models.py", "import sagaway.outbox.writer", "Imports point down"),
        ("sagaway/messaging/topics.py", "import sagaway.storage.models", "Imports point down"),
        ("orchestrator/dsl/__init__.py", "import asyncio", PURE),
        ("orchestrator/dsl/__init__.py", "import sagaway.settings", PURE),
        ("orchestrator/testing/__init__.py", "import sqlalchemy", PURE),
        ("gateway/auth.py", "import sagaway.settings.composed", "Each component gets its own"),
    ],
)
def test_an_import_against_the_rules_breaks_a_contract(
    scratch_tree: Path, module: str, line: str, contract: str
) -> None:
    add_import(scratch_tree / module, line)

    result = lint_imports(scratch_tree)

    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    importer = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    imported = line.removeprefix("import ")
    assert contract in broken, result.stdout
    assert f"{importer} -> {imported}" in broken, result.stdout
