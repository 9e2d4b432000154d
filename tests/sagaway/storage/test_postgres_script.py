"""`python -m tests.servers.postgres`, the throwaway server the README and the benchmarks start
by hand, listens where it is told."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.harness.processes import REPO
from tests.servers.postgres import execute
from tests.servers.tansu import free_port

pytestmark = pytest.mark.timeout(120)


def test_the_server_script_honours_port() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.postgres", "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", url
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        assert execute(dsn, "SHOW wal_level") == [("logical",)]
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 0
