"""Compose health check of a role that serves no /readyz (relays, orchestrators, participants):
healthy once the container holds an established TCP connection to each peer named. The roles
connect to the broker only after their database checks pass; a relay streams its slot over a
connection it keeps open to its database server, so it is asked for that one too.

    python /etc/sagaway/ready.py broker            # SAGAWAY_KAFKA_BOOTSTRAP
    python /etc/sagaway/ready.py broker database   # and SAGAWAY_DATABASE_URL's server
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

ESTABLISHED = "01"


def peers(name: str) -> set[tuple[str, int]]:
    """The (ip, port) pairs a role reaches `name` at, from its own settings."""
    if name == "broker":
        hosts = os.environ["SAGAWAY_KAFKA_BOOTSTRAP"].split(",")
        pairs = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in hosts]
    elif name == "database":
        url = urlsplit(os.environ["SAGAWAY_DATABASE_URL"])
        pairs = [(url.hostname or "localhost", url.port or 5432)]
    else:
        raise SystemExit(f"unknown peer {name!r}: broker or database")
    return {
        (str(info[4][0]), port)
        for host, port in pairs
        for info in socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    }


def established() -> set[tuple[str, int]]:
    """Remote ends of this network namespace's established IPv4 TCP connections."""
    found = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] != ESTABLISHED:
                continue
            address, port = fields[2].split(":")
            ip = socket.inet_ntoa(int(address, 16).to_bytes(4, "little"))
            found.add((ip, int(port, 16)))
    return found


def main(names: list[str]) -> int:
    open_now = established()
    missing = [name for name in names if not peers(name) & open_now]
    if missing:
        print("not connected to: " + ", ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["broker"]))
