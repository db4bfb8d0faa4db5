"""A byte meter: a loopback TCP relay that counts what a server sends its clients.

The peers of the benchmark (DuckDB attaching PostgreSQL, postgres_fdw) speak
PostgreSQL's wire protocol, so their "bytes moved" are measured by putting this
relay between them and the agencies' server for one untimed run of each query
(the timed runs connect directly, so the relay never slows them).

Standard library only: the DuckDB-attach peer runs in its own virtualenv and
imports this file directly.

>>> import socket, threading
>>> srv = socket.create_server(("127.0.0.1", 0))
>>> def answer() -> None:
...     c, _ = srv.accept(); c.recv(5); c.sendall(b"x" * 1000); c.close()
>>> threading.Thread(target=answer, daemon=True).start()
>>> with ByteMeter(srv.getsockname()[1]) as meter:
...     with socket.create_connection(("127.0.0.1", meter.port)) as s:
...         s.sendall(b"hello")
...         got = b"".join(iter(lambda: s.recv(4096), b""))
>>> meter.bytes_down, len(got)
(1000, 1000)
"""

from __future__ import annotations

import socket
import threading

_BUF = 1 << 20


class ByteMeter:
    """Relay 127.0.0.1:``port`` (a free port) → 127.0.0.1:``target_port``; counts the
    bytes flowing back from the target (``bytes_down``) and to it (``bytes_up``)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._srv.getsockname()[1])
        self._lock = threading.Lock()
        self.bytes_down = 0
        self.bytes_up = 0
        self._closed = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="byte-meter").start()

    def reset(self) -> int:
        """Zero the counters; returns the bytes sent down since the last reset."""
        with self._lock:
            down, self.bytes_down, self.bytes_up = self.bytes_down, 0, 0
        return down

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        buf = bytearray(_BUF)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    break
                dst.sendall(view[:n])
                with self._lock:
                    if down:
                        self.bytes_down += n
                    else:
                        self.bytes_up += n
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self._srv.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self) -> ByteMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
