"""A bash that README blocks are pasted into, one after another, as a user does in a terminal:
variables and functions carry over from block to block. Each block runs under `set -eu`, so a
failing command or a misspelt variable ends the shell and fails the test with its output.

The shell leads a process group of its own: everything the blocks start in the background stays
in it, and `close()` ends the group, so nothing outlives the test even when it fails."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from tests.harness.waiting import eventually_sync

STOP_GRACE_S = 15.0


class PastedShell:
    def __init__(self, cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["bash"],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.process.pid
        self._pasted = 0
        self._send("set -eu\n")

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def run(self, block: str, *, timeout_s: float) -> str:
        """Paste `block`, wait until it has run; what it printed (stdout and stderr)."""
        self._pasted += 1
        done = f"__block {self._pasted} done__"
        start = len(self._log())
        self._send(block.rstrip("\n") + f"\necho '{done}'\n")

        def finished() -> tuple[str] | None:  # a tuple: an empty output is an output too
            log = self._log()
            if done in log[start:]:
                return (log[start : log.index(done, start)],)
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the shell exited ({self.process.returncode}) in block {self._pasted}:\n"
                    f"{block}\n--- output\n{log[start:][-6000:]}"
                )
            return None

        [output] = eventually_sync(
            finished,
            timeout_s=timeout_s,
            what=lambda: (
                f"block {self._pasted} to finish:\n{block}\n--- output\n"
                f"{self._log()[start:][-6000:]}"
            ),
            interval_s=0.2,
        )
        return output

    def group(self) -> list[int]:
        """The live processes of the shell's group (the shell included; zombies are not)."""
        return processes_in_group(self.pgid)

    def close(self) -> None:
        """End the shell and everything it started: SIGTERM to the group, SIGKILL to what is
        left after a grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            eventually_sync(
                lambda: not self._group_left(), timeout_s=STOP_GRACE_S, what="the shell's group"
            )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def _group_left(self) -> bool:
        self.process.poll()  # reap the shell
        return bool(self.group())


def processes_in_group(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group `pgid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(int(entry.name))
    return found
