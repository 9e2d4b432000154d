"""The README is the user's manual: its set-up commands, configuration table and the outputs
its examples show stay true."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest

from tests.deployment.pasted_shell import PastedShell
from tests.deployment.readme import Shape, blocks, examples, section
from tests.harness.dev import dev_process, start_dev
from tests.harness.processes import RoleProcess, base_environment
from tests.harness.waiting import eventually_sync

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
    for check in ("lint-imports", 'ruff" check', "mypy"):
        assert check in lint


def test_bin_sagaway_runs_in_a_venv_that_run_tests_made(tmp_path: Path) -> None:
    """`.ci/run` makes a fresh venv with the test extras; the README's `bin/sagaway` (whose
    deployment section its test runs) uses it as it is, installing nothing at run time."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".sagaway-installed-test").touch()  # what `EXTRAS=test ensure_venv` leaves
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "sagaway").write_text('#!/bin/sh\necho "sagaway $*"\n')
    (venv / "bin" / "sagaway").chmod(0o755)
    done = subprocess.run(
        [str(ROOT / "bin" / "sagaway"), "--version"],
        env={**os.environ, "SAGAWAY_VENV": str(venv)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "sagaway --version\n", "")


def test_configuration_table_lists_every_setting_as_generated() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    start = README.index("<!-- settings-table:start")
    start = README.index("\n", start) + 1
    end = README.index("<!-- settings-table:end -->")
    assert README[start:end].strip() == generated, (
        "the README's configuration table is stale: paste `python scripts/settings_table.py`"
    )


# -- the examples of "Try it", run against `sagaway dev` ---------------------------------------


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleProcess]:
    """`sagaway dev` with its data in `.sagaway/` of its working directory, as in the README."""
    root = tmp_path_factory.mktemp("readme-dev")
    system = dev_process(root / ".sagaway", root)
    try:
        yield start_dev(system)
    finally:
        system.stop()


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


@contextlib.contextmanager
def participants_paused(dev: RoleProcess) -> Iterator[None]:
    """The dev's second process (the participants) stopped: a saga started meanwhile cannot end
    (what a status URL asked at once sees, unless the saga wins the race)."""
    [participants] = [
        pid
        for pid in children(dev.pid)
        if b"sagaway.dev.participants" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    os.kill(participants, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(participants, signal.SIGCONT)


def wait_completed(status_url: str) -> None:
    eventually_sync(
        lambda: httpx.get(status_url).json()["status"] == "completed",
        timeout_s=60,
        what=f"{status_url} to complete",
    )


def test_readme_dev_banner_is_what_dev_prints(dev: RoleProcess) -> None:
    [banner] = [b.body for b in blocks(section("Try it")) if b.body.startswith("Sagaway dev is")]
    printed = dev.output().replace(dev.url or "", "http://127.0.0.1:8000")
    printed = re.sub(r"password \S+", "password xhQGwhO_VaTaaxAI", printed)
    # The public port is the one given; another listener's (metrics) may differ from run to run.
    shown, printed = (
        re.sub(r"127\.0\.0\.1:(?!8000\b)\d+", "127.0.0.1:<port>", text).splitlines()
        for text in (banner[: banner.index("\n...")], printed)
    )
    assert printed[: len(shown)] == shown


def test_readme_try_it_examples_answer_as_shown(dev: RoleProcess, tmp_path: Path) -> None:
    """Each curl example of "Try it" pasted into one shell (its variables carry over) with the
    dev's address for 127.0.0.1:8000; its output has the shape shown — status, headers shown,
    fields and messages; only ids and times differ."""
    assert dev.url is not None
    runs = [e for e in examples(section("Try it")) if "curl" in e.command]
    assert len(runs) == 5, [e.command for e in runs]
    shell = PastedShell(tmp_path, base_environment(), tmp_path / "shell.log")
    try:
        for example in runs:
            command = example.command.replace("http://127.0.0.1:8000", dev.url)
            if "respond-async" in example.command:
                with participants_paused(dev):
                    output = shell.run(command, timeout_s=60)
                wait_completed(dev.url + output.splitlines()[0])
            else:
                output = shell.run(command, timeout_s=60)
            problems = Shape.of(example.output).mismatches(Shape.of(output))
            assert not problems, f"{example.command}\n" + "\n".join(problems)
    finally:
        shell.close()


# -- the verbs, options and variables the READMEs name -----------------------------------------

DOCS = {"README.md": README, "docker/README.md": (ROOT / "docker" / "README.md").read_text()}
# Variables that are not settings: the config file, the launcher's, the tests'.
NOT_SETTINGS = {"SAGAWAY_CONFIG", "SAGAWAY_VENV", "SAGAWAY_EXTRAS", "SAGAWAY_TEST_DATABASE_URL"}
# Compose's own variables (image, ports, wheels): those docker/compose.yaml substitutes.
COMPOSE_VARIABLES = set(
    re.findall(r"\$\{(SAGAWAY_[A-Z0-9_]+)", (ROOT / "docker" / "compose.yaml").read_text())
)


def command_lines(text: str) -> list[list[str]]:
    """The argument lists of every `sagaway …` (or `docker compose run … SERVICE …`, the image's
    entry point being sagaway) in the code blocks and inline code of `text`."""
    code = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
    found = []
    for snippet in code:
        for line in snippet.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            for args in re.findall(r"(?<![\w/.-])(?<!-U )(?:bin/)?sagaway ([^|;&`]*)", line):
                found.append(args.split())
            for args in re.findall(r"docker compose run --rm (?:--no-deps )?[\w-]+ (.*)", line):
                found.append(args.split())
    return found


def unknown_options(args: list[str]) -> list[str]:
    """The verbs and options in `args` that the `sagaway` command does not have."""
    from sagaway.cli.main import main

    command: click.Command = main
    unknown = []
    for arg in args:
        if isinstance(command, click.Group) and arg in command.commands:
            command = command.commands[arg]
        elif command is main and re.fullmatch(r"[a-z][\w-]*", arg):
            unknown.append(f"verb {arg}")
        elif arg.startswith("--"):
            names = {"--help"} | {
                name
                for param in command.params
                if isinstance(param, click.Option)
                for name in (*param.opts, *param.secondary_opts)
            }
            if arg.split("=")[0] not in names:
                unknown.append(f"{command.name} {arg}")
    return unknown


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_readmes_name_real_verbs_and_options(doc: str) -> None:
    lines = command_lines(DOCS[doc])
    assert len(lines) > 5
    unknown = {" ".join(args): unknown_options(args) for args in lines}
    assert not {line: bad for line, bad in unknown.items() if bad}


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_readmes_name_real_settings(doc: str) -> None:
    start = README.index("<!-- settings-table:start")
    table = README[start : README.index("<!-- settings-table:end -->")]
    settings = set(re.findall(r"`(SAGAWAY_[A-Z0-9_]+)`", table)) | NOT_SETTINGS | COMPOSE_VARIABLES
    named = set(re.findall(r"\b(SAGAWAY_[A-Z0-9_]+)\b", DOCS[doc].replace(table, "")))
    nested = {name for name in named if name.startswith("SAGAWAY_CONSOLE")}  # JSON or __FIELD
    assert named - settings - nested == set()
    assert {n for n in nested if "__" in n} <= settings
