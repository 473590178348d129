"""A total deadline for a network exchange: connect, headers and body together.

A socket timeout bounds each single receive, so a server that sends one byte every few
seconds never trips it. :class:`Watchdog` acts on every socket registered with it when its
time is up: it shuts the socket down (a silent server's blocked read returns at once) and
cuts its per-read timeout to a hundredth of a second (on Linux a shut-down socket still
delivers bytes a dripping server goes on sending; the next wait for one now times out).
The caller, seeing ``watchdog.expired``, reports a timeout. Standard library only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any


class Watchdog:
    """``with Watchdog(seconds) as dog: ... dog.add(sock)``; ``dog.expired`` after."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._end = time.monotonic() + self.seconds

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
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()


def _shut(target: Any) -> None:
    sock = target if isinstance(target, socket.socket) else getattr(target, "sock", None)
    if sock is None:
        return
    try:
        sock.settimeout(0.01)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
