"""The embedded broker's wake-up between processes: after a produce, one datagram naming the topics
goes to every other process's socket in `<broker file>.bells/`, and that process rings its local
bell at once instead of finding the records at its next poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("sagaway.embedded")

# sun_path holds 108 bytes on Linux (104 on macOS and the BSDs), its terminating NUL included.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
# Topic names longer than this together go as an empty datagram, which means "every topic".
MAX_TOPICS_BYTES = 2048
RECEIVE_BYTES = 4096
# Datagrams read per reader callback at most; the rest call it again, so peers cannot hog the loop.
MAX_DRAIN = 1000
# A listing taken less than this after the directory's last change may miss a socket bound within
# the same mtime tick (1 s on some file systems): the directory is listed again at the next produce.
RACY_MTIME_NS = 1_000_000_000
SUFFIX = ".sock"


class LocalBell(Protocol):
    """What a datagram rings: the broker's in-process bell."""

    def ring(self, topics: Iterable[str]) -> None: ...

    def ring_all(self) -> None: ...


def bells_dir(broker_path: Path) -> Path:
    """Where the processes on this broker file keep their sockets: `broker.db.bells/`."""
    return broker_path.parent / (broker_path.name + ".bells")


def _queue_limit() -> int:
    """How many datagrams Linux queues for a socket beyond `net.unix.max_dgram_qlen` (default 10)
    before a non-blocking send to it fails with EAGAIN: it accepts one more than that."""
    try:
        return int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text()) + 1
    except (OSError, ValueError):
        return 11


class CrossProcessBell:
    """This process's socket on one broker file, read by one event loop; shared by the transports
    of that file on that loop. Get it with `acquire`, give it back with `release`.

    One socket per loop, not per process, because the reader belongs to the loop that registered
    it (pytest, for one, may run a loop per test); datagrams go to other processes only, since
    `bell.Bell` already wakes every loop of this one.

    A sender's datagram refused because the peer's queue is full (EAGAIN) is dropped; its topics
    are lost, but the peer then reads a full queue, and a full queue rings every topic."""

    def __init__(self, broker_path: Path, bell: LocalBell, loop: asyncio.AbstractEventLoop) -> None:
        self.directory = bells_dir(broker_path)
        self._own_prefix = f"{os.getpid()}-"
        self.path = self.directory / f"{self._own_prefix}{os.urandom(4).hex()}{SUFFIX}"
        self._bell = bell
        self._loop = loop
        self._key = (str(broker_path), loop)
        self._users = 0
        self._sock: socket.socket | None = None
        self._peers: set[str] = set()
        self._listed_mtime_ns: int | None = None
        self._ring_all_at = _queue_limit()

    @property
    def bound(self) -> bool:
        return self._sock is not None

    def _bind(self) -> None:
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            _tell_once(
                logging.INFO,
                self.directory,
                "no cross-process wake-up on %s: a socket path there would be longer than %d"
                " bytes; records from other processes are found by polling",
                self.directory,
                MAX_SOCKET_PATH,
            )
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except (AttributeError, OSError) as exc:  # no Unix datagram sockets on this platform
            _tell_once(logging.WARNING, self.directory, _NO_BELL, self.directory, exc)
            return
        try:
            sock.setblocking(False)
            self.directory.mkdir(exist_ok=True)
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            _tell_once(logging.WARNING, self.directory, _NO_BELL, self.directory, exc)
            return
        try:
            self._loop.add_reader(sock.fileno(), self._drain)
        except (NotImplementedError, OSError) as exc:  # a loop without add_reader
            sock.close()
            self.path.unlink(missing_ok=True)
            _tell_once(logging.WARNING, self.directory, _NO_BELL, self.directory, exc)
            return
        self._sock = sock

    def notify(self, topics: Iterable[str]) -> None:
        """Tell every other process on this broker file that `topics` have new records. It never
        blocks and never raises: a wake-up that does not arrive is made up for by polling."""
        sock = self._sock
        if sock is None:
            return
        payload = "\n".join(sorted(set(topics))).encode()
        if len(payload) > MAX_TOPICS_BYTES:
            payload = b""
        for peer in self._current_peers():
            try:
                sock.sendto(payload, peer)
            except BlockingIOError:
                pass  # its queue is full: it will ring every topic when it reads it
            except ConnectionRefusedError:  # a socket file nobody reads: its process died
                with contextlib.suppress(OSError):
                    os.unlink(peer)
                self._peers.discard(peer)
            except FileNotFoundError:  # that process closed its socket
                self._peers.discard(peer)
            except OSError as exc:
                log.debug("cross-process wake-up to %s failed: %s", peer, exc)

    def _current_peers(self) -> list[str]:
        """The other sockets in the directory; listed again only when its mtime changed."""
        try:
            mtime_ns = os.stat(self.directory).st_mtime_ns
        except OSError:
            return []  # removed (a reset): nobody left to tell
        if mtime_ns != self._listed_mtime_ns:
            try:
                names = os.listdir(self.directory)
            except OSError:
                return []
            self._peers = {
                str(self.directory / name)
                for name in names
                if name.endswith(SUFFIX) and not name.startswith(self._own_prefix)
            }
            racy = time.time_ns() - mtime_ns < RACY_MTIME_NS
            self._listed_mtime_ns = None if racy else mtime_ns
        return list(self._peers)

    def _drain(self) -> None:
        """The reader: read every pending datagram, then ring the topics they named."""
        sock = self._sock
        if sock is None:
            return
        topics: set[str] = set()
        everything = False
        received = 0
        while received < MAX_DRAIN:
            try:
                data = sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("reading cross-process wake-ups on %s failed: %s", self.path, exc)
                break
            received += 1
            if data:
                topics.update(data.decode(errors="replace").split("\n"))
            else:
                everything = True
        if everything or received >= self._ring_all_at:
            self._bell.ring_all()
        elif topics:
            self._bell.ring(topics)

    def release(self) -> None:
        """One transport fewer; the last one closes the socket and removes its file."""
        with _OPEN_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            if _OPEN.get(self._key) is self:
                del _OPEN[self._key]
        sock, self._sock = self._sock, None
        if sock is None:
            return
        loop = self._loop
        if loop.is_running() and _running_loop() is not loop:
            # That loop runs in another thread: its selector may only be touched from there.
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._close, sock)
                return
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        if not self._loop.is_closed():  # a closed loop dropped its readers with its selector
            self._loop.remove_reader(sock.fileno())
        sock.close()
        self.path.unlink(missing_ok=True)


_NO_BELL = "no cross-process wake-up on %s (%s): records from other processes are found by polling"
_OPEN: dict[tuple[str, asyncio.AbstractEventLoop], CrossProcessBell] = {}
_OPEN_LOCK = threading.Lock()
_TOLD: set[Path] = set()


def acquire(broker_path: Path, bell: LocalBell) -> CrossProcessBell:
    """The cross-process bell of this broker file on the running loop, bound on first use. Never
    raises: if no socket can be bound it says so once and does nothing (polling remains)."""
    loop = asyncio.get_running_loop()
    resolved = broker_path.resolve()
    with _OPEN_LOCK:
        cross = _OPEN.get((str(resolved), loop))
        if cross is None:
            cross = CrossProcessBell(resolved, bell, loop)
            cross._bind()
            _OPEN[cross._key] = cross
        cross._users += 1
        return cross


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _tell_once(level: int, directory: Path, message: str, *args: object) -> None:
    if directory not in _TOLD:
        _TOLD.add(directory)
        log.log(level, message, *args)
