"""Summarize py-spy raw (collapsed) stacks: the functions with the most inclusive and self time,
so a profile taken by `bench/e2e.py --profile DIR` can be read without a flame-graph viewer.

    .venv/bin/python bench/profile_top.py /tmp/prof/dev.txt [--top 40] [--match sagaway]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

LOST_FRAMES = "frames lost at a greenlet switch (sqlalchemy/util/concurrency.py)"


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """One collapsed stack per line: `frame;frame;...;frame COUNT`, outermost frame first.

    The `process PID:"command"` frame py-spy puts first with `--subprocesses` is dropped, so a
    parent's and a child's samples add up per function; a stack left empty (py-spy loses the
    frames above a greenlet switch, i.e. inside SQLAlchemy's async bridge) counts as
    `frames lost at a greenlet switch`."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            kept = tuple(f for f in frames.split(";") if not f.startswith("process "))
            stacks[kept or (LOST_FRAMES,)] += int(count)
    return stacks


def summarize(stacks: Counter[tuple[str, ...]]) -> tuple[int, Counter[str], Counter[str]]:
    total = sum(stacks.values())
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for frames, count in stacks.items():
        for frame in set(frames):
            inclusive[frame] += count
        self_time[frames[-1]] += count
    return total, inclusive, self_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only frames whose text contains this")
    args = parser.parse_args()
    total, inclusive, self_time = summarize(read_stacks(args.profile))
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", self_time)):
        print(f"--- {title}")
        shown = 0
        for frame, count in counter.most_common():
            if args.match in frame:
                print(f"{100 * count / total:5.1f}%  {frame}")
                shown += 1
                if shown == args.top:
                    break


if __name__ == "__main__":
    main()
