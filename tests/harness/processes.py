"""Roles as real `sagaway <verb>` processes: started, kill -9'd, stopped and started again by
name, each writing to a log file of its own (appended across restarts), waited for over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sagaway.settings.composed import Settings
from tests.harness.waiting import eventually_sync

SAGAWAY = str(Path(sys.executable).with_name("sagaway"))
REPO = Path(__file__).resolve().parents[2]


def base_environment() -> dict[str, str]:
    """The caller's environment without any SAGAWAY_* setting, with unbuffered output: what a
    user's first run sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until_ready(
    url: str,
    *,
    process: subprocess.Popen[bytes] | None = None,
    log_tail: Callable[[], str] = str,
    timeout_s: float = 60.0,
    ready: Callable[[int], bool] = lambda status: status == 200,
) -> None:
    """Poll `url` until its status satisfies `ready`. AssertionError, carrying `log_tail()`,
    when `process` exits first or `timeout_s` runs out."""

    def answering() -> bool:
        try:
            if ready(httpx.get(url, timeout=2).status_code):
                return True
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server of {url} exited ({process.returncode}):\n{log_tail()}")
        return False

    eventually_sync(answering, timeout_s=timeout_s, what=lambda: f"{url} to answer:\n{log_tail()}")


def settings_environment(settings: Settings, **extra: object) -> dict[str, str]:
    """The environment of a `sagaway` process with these settings (as SAGAWAY_* variables, plus
    `extra` ones by field name) that can import the tests' own saga modules."""
    env = base_environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(settings.environment())
    env.update({f"SAGAWAY_{name.upper()}": str(value) for name, value in extra.items()})
    return env


def run_sagaway(
    env: dict[str, str], cwd: Path, *args: str, timeout_s: float = 120, check: bool = True
) -> str:
    """Run a one-shot verb (migrate, seed, audit); its stdout. With `check`, a non-zero exit is
    an AssertionError carrying both outputs."""
    done = subprocess.run(
        [SAGAWAY, *args], env=env, cwd=cwd, capture_output=True, timeout=timeout_s, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"sagaway {' '.join(args[:3])} exited {done.returncode}:\n"
            f"{done.stdout.decode(errors='replace')}\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")


@dataclass
class RoleProcess:
    """One `sagaway <args>` process. Output goes to `log_path` (stderr too, unless `err_path`
    is given); `output()` and `errors()` read what the current run wrote."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    url: str | None = None  # roles with an HTTP API: its base URL
    err_path: Path | None = None
    printed_when_ready: str | None = None  # what it prints once it serves, if anything
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    ready_after_s: list[float] = field(default_factory=list)  # each start, once ready
    _marks: dict[Path, int] = field(default_factory=dict)
    _started_at: float = 0.0

    @property
    def kind(self) -> str:
        """The verb it runs: orchestrator, participant, relay, gateway, console, dev..."""
        return self.args[0]

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RoleProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        header = f"\n===== start #{self.starts + 1} at {time.time():.3f}\n".encode()
        paths = [self.log_path] if self.err_path is None else [self.log_path, self.err_path]
        for path in paths:
            with open(path, "ab") as file:
                file.write(header)
                self._marks[path] = file.tell()
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(self.log_path, "ab"))
            err = files.enter_context(open(self.err_path, "ab")) if self.err_path else None
            self.process = subprocess.Popen(
                [SAGAWAY, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err or subprocess.STDOUT,
            )
        self.starts += 1
        self._started_at = time.monotonic()
        return self

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, sockets are cut, nothing is flushed."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `timeout_s`."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()

    def signal(self, sig: int, timeout_s: float) -> tuple[int, float]:
        """Send `sig` and wait for the exit: (exit code, seconds it took)."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout_s)
        return code, time.monotonic() - began

    def wait_ready(
        self,
        timeout_s: float,
        *,
        path: str = "/readyz",
        ready: Callable[[int], bool] = lambda status: status == 200,
    ) -> RoleProcess:
        """Until GET `path` answers a status `ready` accepts (and the current run has printed
        `printed_when_ready`, if set); AssertionError with the log if the process exits first."""
        assert self.url is not None
        printed = self.printed_when_ready
        wait_until_ready(
            f"{self.url}{path}",
            process=self.process,
            log_tail=self.log_tail,
            timeout_s=timeout_s,
            ready=lambda status: ready(status) and (printed is None or printed in self.output()),
        )
        self.ready_after_s.append(time.monotonic() - self._started_at)
        return self

    def _read(self, path: Path | None, current_run: bool) -> str:
        if path is None or not path.exists():
            return ""
        with open(path, "rb") as file:
            file.seek(self._marks.get(path, 0) if current_run else 0)
            return file.read().decode(errors="replace")

    def output(self, *, current_run: bool = True) -> str:
        """What it wrote to its log (stdout, and stderr unless that has a file of its own)."""
        return self._read(self.log_path, current_run)

    def errors(self, *, current_run: bool = True) -> str:
        """What it wrote to stderr, when stderr has a file of its own."""
        return self._read(self.err_path, current_run)

    def log_tail(self, chars: int = 3000) -> str:
        tail = self.output(current_run=False)[-chars:]
        if self.err_path is not None:
            tail += "\n--- stderr\n" + self.errors(current_run=False)[-chars:]
        return tail


class RoleProcesses:
    """The role processes of one system, by name; each logs to `<logs>/<name>.log`."""

    def __init__(self, logs: Path, cwd: Path) -> None:
        self.logs = logs
        self.cwd = cwd
        self.roles: dict[str, RoleProcess] = {}

    def __getitem__(self, name: str) -> RoleProcess:
        return self.roles[name]

    def add(
        self, name: str, args: list[str], env: dict[str, str], *, url: str | None = None
    ) -> RoleProcess:
        role = RoleProcess(name, args, env, self.logs / f"{name}.log", self.cwd, url=url)
        self.roles[name] = role
        return role

    def start(
        self, name: str, args: list[str], env: dict[str, str], *, url: str | None = None
    ) -> RoleProcess:
        return self.add(name, args, env, url=url).start()

    def stop_all(self) -> None:
        for role in self.roles.values():
            role.stop()

    def kill_all(self) -> None:
        for role in self.roles.values():
            role.kill9()

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {role.name}\n{role.log_tail(chars)}" for role in self.roles.values())
