"""`sagaway dev` as a user runs it: one process on a free port with a data dir of its own, ready
once it answers /readyz and has printed its banner."""

from __future__ import annotations

from pathlib import Path

from tests.harness.processes import RoleProcess, base_environment
from tests.servers.postgres import free_port

READY_TIMEOUT_S = 60.0  # generous: the machine runs other suites at the same time
BANNER_END = "starts afresh."  # the banner's last words, printed once the listener answers


def dev_process(
    data_dir: Path,
    logs: Path,
    *,
    port: int | None = None,
    split_stderr: bool = True,
    **settings: object,
) -> RoleProcess:
    """`sagaway dev --port P --data-dir DATA_DIR`, not started yet, with a user's environment
    plus `settings` (SAGAWAY_* variables by field name). Its stdout goes to `logs`/dev.out and
    its stderr to dev.err, or both to dev.log unless `split_stderr`."""
    port = port or free_port()
    env = base_environment()
    env.update({f"SAGAWAY_{name.upper()}": str(value) for name, value in settings.items()})
    logs.mkdir(parents=True, exist_ok=True)
    return RoleProcess(
        "dev",
        ["dev", "--port", str(port), "--data-dir", str(data_dir)],
        env,
        logs / ("dev.out" if split_stderr else "dev.log"),
        data_dir.parent,
        url=f"http://127.0.0.1:{port}",
        err_path=logs / "dev.err" if split_stderr else None,
        printed_when_ready=BANNER_END,
    )


def start_dev(dev: RoleProcess, timeout_s: float = READY_TIMEOUT_S) -> RoleProcess:
    """Start it and wait until it serves and has printed its banner."""
    return dev.start().wait_ready(timeout_s)


def dev_data_dir(dev: RoleProcess) -> Path:
    return Path(dev.args[dev.args.index("--data-dir") + 1])
