"""Several listener processes, one port: the main process hands each connection to the least busy.

One Python process is capped near one core (the GIL), so ``node.listener_processes`` runs
more. Letting the kernel spread connections (SO_REUSEPORT) hashes them at random: four
senders landed 3-1 or 4-0 on two processes half of the time, and the busy process then set
the pace while a core idled. Instead the main process accepts every connection and gives it
to the process with the fewest open connections (itself included), passing the socket over a
Unix socket pair (SCM_RIGHTS). Each process keeps its count in a shared array.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

log = logging.getLogger(__name__)

_MESSAGE = b"c"


class LoadBoard:
    """Open connections per listener process, in shared memory (index 0 is the main process)."""

    def __init__(self, counts: SynchronizedArray[Any]) -> None:
        self.counts = counts

    def least_busy(self, alive: Sequence[bool]) -> int:
        with self.counts.get_lock():
            candidates = [i for i in range(len(self.counts)) if alive[i]]
            return min(candidates, key=lambda i: (self.counts[i], i))

    def total(self) -> int:
        """Open connections in all listener processes."""
        with self.counts.get_lock():
            return sum(int(self.counts[i]) for i in range(len(self.counts)))

    def add(self, index: int, delta: int) -> None:
        with self.counts.get_lock():
            self.counts[index] += delta


class ConnectionDispatcher:
    """Main process: choose the process for each accepted connection and send it there."""

    def __init__(self, board: LoadBoard, channels: Sequence[socket.socket | None]) -> None:
        self.board = board
        self.channels = list(channels)  # channels[0] is None: the main process itself
        self.alive = [True] * len(self.channels)
        self._lock = threading.Lock()

    def dispatch(self, connection: socket.socket, serve_here: Callable[[], None]) -> None:
        """Count the connection for its process and hand it over (or ``serve_here()``)."""
        with self._lock:
            index = self.board.least_busy(self.alive)
            self.board.add(index, +1)
            channel = self.channels[index]
            if channel is not None:
                try:
                    socket.send_fds(channel, [_MESSAGE], [connection.fileno()])
                except OSError as exc:
                    log.error("listener process %d is gone (%s): serving here", index, exc)
                    self.alive[index] = False
                    self.board.add(index, -1)
                    self.board.add(0, +1)
                    channel = None
        if channel is None:
            serve_here()
        else:
            connection.close()  # the other process holds its own descriptor for it


class ConnectionReceiver:
    """Extra listener process: take connections from the main process and serve them."""

    def __init__(self, channel: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        self.channel = channel
        self.serve = serve
        self.thread = threading.Thread(target=self._run, name="connection-receiver", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.channel.shutdown(socket.SHUT_RDWR)
        self.channel.close()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self.channel, 16, 4)
            except OSError:
                return  # stopped
            if not message:
                return  # the main process closed its end
            for fd in fds:
                self.serve(socket.socket(fileno=fd))
