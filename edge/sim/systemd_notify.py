"""systemd's end of sd_notify, for tests and benches: binds the datagram socket $NOTIFY_SOCKET names
and records every message with its arrival time (time.monotonic), as the service manager sees them."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


class NotifySocket:
    """Every datagram, split into KEY=value fields, with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address  # a path, or an abstract name starting with '@'
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def times(self, key: str, value: str | None = None) -> list[float]:
        return [t for t, f in list(self.messages) if key in f and (value is None or f[key] == value)]

    @property
    def ready_at(self) -> float | None:
        """When READY=1 first arrived (None: not yet)."""
        ready = self.times("READY", "1")
        return ready[0] if ready else None

    def statuses(self) -> list[str]:
        return [f["STATUS"] for _, f in list(self.messages) if "STATUS" in f]

    def close(self) -> None:
        self._halt.set()
        self._t.join(2)
        self.sock.close()


@contextlib.contextmanager
def notify_socket(address: str) -> Iterator[NotifySocket]:
    ns = NotifySocket(address)
    try:
        yield ns
    finally:
        ns.close()
