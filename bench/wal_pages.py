"""WAL pages: how many pages each SQLite file of `sagaway dev` writes per saga, b-tree by b-tree.

SQLite writes every page a transaction changed to the WAL at its commit, once per commit; each
table and each index is a b-tree of its own, so one more index on a row written at every step
is one more page in every commit that writes it. This bench starts `sagaway dev` with its
checkpoints turned off (`bench/wal_pages_hook/`), sends sync place-order requests at a fixed
rate, kills every process with SIGKILL (so nothing checkpoints at exit), then reads each `-wal`
file's frames written in the window and names the b-tree of each page (SQLite's `dbstat` table,
on a copy of the file). It prints, per database, pages and commits per saga and the b-trees
that took them.

    .venv/bin/python bench/wal_pages.py                  # 200 sagas/s for 8 s
    .venv/bin/python bench/wal_pages.py --rate 10        # the one-client load
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import EmbeddedStack  # noqa: E402
from processes import (  # noqa: E402
    ORDER_PATH,
    closed_loop,
    emit,
    load_average,
    log,
    machine,
    open_loop,
)

HOOK = Path(__file__).resolve().parent / "wal_pages_hook"
WAL_HEADER = 32
FRAME_HEADER = 24


@dataclass(frozen=True, slots=True)
class Frames:
    """The pages a WAL file received after `start` bytes, in order, and how many commits."""

    pages: list[int]
    commits: int


def wal_frames(wal: Path, start: int) -> Frames:
    """Each frame's page number from the frame that holds byte `start` on (`start`: the file's
    size taken before, maybe in the middle of a frame being written)."""
    data = wal.read_bytes()
    if len(data) < WAL_HEADER:
        return Frames([], 0)
    page_size = struct.unpack(">I", data[8:12])[0]
    step = FRAME_HEADER + page_size
    offset = WAL_HEADER + max(start - WAL_HEADER, 0) // step * step
    pages, commits = [], 0
    while offset + step <= len(data):
        page, database_size = struct.unpack(">II", data[offset : offset + 8])
        pages.append(page)
        commits += database_size != 0  # set on the last frame of each commit
        offset += step
    return Frames(pages, commits)


def page_owners(database: Path, wal: Path) -> dict[int, str]:
    """Page number → the table or index it belongs to, read from a copy of the file and its WAL
    (opening the original would checkpoint it)."""
    with tempfile.TemporaryDirectory(prefix="sagaway-bench-wal-") as copy_dir:
        copy = Path(copy_dir) / "copy.db"
        shutil.copyfile(database, copy)
        shutil.copyfile(wal, copy.with_name("copy.db-wal"))
        conn = sqlite3.connect(copy)
        try:
            rows = conn.execute("SELECT name, pageno FROM dbstat").fetchall()
        except sqlite3.OperationalError as exc:
            raise SystemExit(f"this SQLite has no dbstat table: {exc}") from exc
        finally:
            conn.close()
    owners = {page: name for name, page in rows}
    owners[1] = "(file header: page 1)"
    return owners


def wal_sizes(data_dir: Path) -> dict[Path, int]:
    return {wal: wal.stat().st_size for wal in sorted(data_dir.rglob("*-wal"))}


def kill_all(root_pid: int) -> None:
    """SIGKILL the stack's every process: a clean exit would checkpoint the files."""
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([root], timeout=10)


def attribute(data_dir: Path, before: dict[Path, int], sagas: int) -> list[dict[str, Any]]:
    out = []
    for wal in sorted(data_dir.rglob("*-wal")):
        database = wal.with_name(wal.name.removesuffix("-wal"))
        frames = wal_frames(wal, before.get(wal, 0))
        owners = page_owners(database, wal)
        by_btree = collections.Counter(owners.get(page, "(free or other)") for page in frames.pages)
        out.append(
            {
                "database": str(database.relative_to(data_dir)),
                "pages_per_saga": round(len(frames.pages) / sagas, 1),
                "commits_per_saga": round(frames.commits / sagas, 2),
                "pages_per_commit": round(len(frames.pages) / max(frames.commits, 1), 1),
                "btrees": [
                    {"btree": name, "pages_per_saga": round(count / sagas, 2)}
                    for name, count in by_btree.most_common()
                ],
            }
        )
    return sorted(out, key=lambda entry: -entry["pages_per_saga"])


async def measure(rate: float, duration_s: float) -> dict[str, Any]:
    stack = EmbeddedStack()
    path = os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))
    os.environ["PYTHONPATH"] = path
    os.environ["SAGAWAY_BENCH_WAL_PAGES"] = "1"
    try:
        await stack.start()
        url = stack.url + ORDER_PATH
        await closed_loop(url, 8, 2)  # past the first calls
        before = wal_sizes(stack.data_dir)
        log(f"{rate:g} sagas/s for {duration_s:g} s, checkpoints off")
        result = await open_loop(url, rate, duration_s)
        await asyncio.sleep(0.5)  # the relays' last marks
        kill_all(stack.roles.roles[0].pid)
        sagas = max(result.ok, 1)
        databases = attribute(stack.data_dir, before, sagas)
    finally:
        os.environ.pop("SAGAWAY_BENCH_WAL_PAGES", None)
        stack.stop()
    log(f"{result.ok} sagas answered; WAL pages per saga, by database and b-tree:")
    for entry in databases:
        log(
            f"  {entry['database']:<18} {entry['pages_per_saga']:>6.1f} pages/saga,"
            f" {entry['commits_per_saga']:.2f} commits/saga, {entry['pages_per_commit']:.1f}/commit"
        )
        for btree in entry["btrees"][:12]:
            log(f"      {btree['btree']:<48} {btree['pages_per_saga']:>6.2f}")
    total = sum(entry["pages_per_saga"] for entry in databases)
    log(f"  all files: {total:.1f} pages per saga")
    return {
        "rate_per_s": rate,
        "duration_s": duration_s,
        "sagas": result.ok,
        "pages_per_saga": round(total, 1),
        "databases": databases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    # The embedded stack only: the broker fetch wait `machine()` names is the pg stack's.
    run = {k: v for k, v in machine().items() if k != "fetch_max_wait_ms"}
    figures = asyncio.run(measure(args.rate, args.duration))
    emit(
        "wal_pages",
        {**run, **figures, "load_average_at_end": load_average()},
        save=not args.no_save,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
