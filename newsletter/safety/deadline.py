"""A total deadline for a network exchange: connect, headers and body together.

A socket timeout bounds each single receive, so a server that sends one byte every few
seconds never trips it. :class:`Watchdog` acts on every socket registered with it when its
time is up: it shuts the socket down (a silent server's blocked read returns at once) and
cuts its per-read timeout to a hundredth of a second (on Linux a shut-down socket still
delivers bytes a dripping server goes on sending; the next wait for one now times out).
The caller, seeing ``watchdog.expired``, reports a timeout. Standard library only.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any


class Watchdog:
    """``with Watchdog(seconds) as dog: ... dog.add(sock)``; ``dog.expired`` after."""

    __slots__ = ("seconds", "expired", "_sockets", "_lock", "_end", "done", "_clock")

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._end = time.monotonic() + self.seconds
        self.done = False  # left the ``with`` block: nothing to fire
        self._clock: _Clock | None = None

    def remaining(self) -> float:
        """Seconds left (at least a small positive number, for socket timeouts)."""
        return max(0.01, self._end - time.monotonic())

    def add(self, sock: Any) -> Any:
        """Watch ``sock``: a socket, or a connection object whose ``sock`` attribute holds
        one when the time is up (http.client and smtplib replace it when they start TLS);
        returns it."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def connector(self, create: Callable[..., socket.socket] = socket.create_connection
                  ) -> Callable[..., socket.socket]:
        """A ``socket.create_connection`` whose sockets this watchdog watches."""
        def connect(address: Any, timeout: Any = None, *args: Any, **kwargs: Any
                    ) -> socket.socket:
            if self.expired:
                raise TimeoutError("deadline passed")
            limit = self.remaining()
            if isinstance(timeout, int | float) and timeout > 0:
                limit = min(limit, float(timeout))
            return self.add(create(address, limit, *args, **kwargs))
        return connect

    def _fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Watchdog:
        self._clock = _clock()
        self._clock.watch(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self.done = True
        if self._clock is not None:
            self._clock.ended()


class _Clock:
    """One daemon thread that fires every watchdog whose time is up, in deadline order (a
    timer thread for each exchange would start and stop a thread for every message a run
    sends). Watchdogs that ended are dropped when they reach the front, or all at once when
    they are most of the heap: a run sending hundreds of messages a second, each with a
    deadline a minute away, would otherwise keep a minute's worth of ended watchdogs."""

    COMPACT_AT = 64  # ended watchdogs in the heap before it is worth rebuilding

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._ended = 0  # watchdogs in the heap that have ended (an upper bound)
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name="watchdog-clock", daemon=True)
        self._thread.start()

    def watch(self, dog: Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (dog._end, next(self._order), dog))
            if self._heap[0][2] is dog:  # a new earliest deadline: wake the clock
                self._cond.notify()

    def ended(self) -> None:
        """A watchdog left its ``with`` block: rebuild the heap without the ended ones when
        they are more than half of it (amortised: each rebuild at least halves it)."""
        with self._cond:
            self._ended += 1
            if self._ended > self.COMPACT_AT and 2 * self._ended > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._ended = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, dog = heapq.heappop(self._heap)
                    dog._fire()  # does nothing for one that ended
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_CLOCK: _Clock | None = None
_CLOCK_LOCK = threading.Lock()


def _clock() -> _Clock:
    global _CLOCK
    with _CLOCK_LOCK:
        if _CLOCK is None:
            _CLOCK = _Clock()
        return _CLOCK


def _forget_clock() -> None:  # a forked child has no clock thread: it starts its own
    global _CLOCK, _CLOCK_LOCK
    _CLOCK, _CLOCK_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_clock)


def _shut(target: Any) -> None:
    sock = target if isinstance(target, socket.socket) else getattr(target, "sock", None)
    if sock is None:
        return
    try:
        sock.settimeout(0.01)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
