"""Why a server cannot listen where it is told to, in words (issue 15: `fedsql
serve` on a busy port printed a traceback).

Neither gRPC nor Arrow Flight says why a bind failed (``Failed to bind to
address``; ``Server did not start properly``), so the address is tried first
with a plain socket, as gRPC binds it (``SO_REUSEADDR``, no ``SO_REUSEPORT``),
and the operating system's reason is reported as the error to fix.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from fedsql.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Reason:
    text: str  # what the operating system said, in words
    busy: bool = False  # something else holds the address


def check_free(where: str, listen: str, setting: str) -> None:
    """Raise :class:`ConfigError` if ``listen`` (HOST:PORT) cannot be bound now.

    ``where`` names the config file, ``setting`` the key or flag that chose the
    address (for the "what to do"). Port 0 (any free port) is always fine.
    """
    why = reason(listen)
    if why is not None:
        raise _error(where, listen, setting, why)


def failed(where: str, listen: str, setting: str) -> ConfigError:
    """The error for a server that failed to bind ``listen`` (the reason if it shows)."""
    return _error(where, listen, setting, reason(listen) or _UNKNOWN)


_UNKNOWN = Reason("the server could not bind it", busy=True)


def _error(where: str, listen: str, setting: str, why: Reason) -> ConfigError:
    fix = (
        "stop what listens there, or choose another address"
        if why.busy
        else "choose another address"
    )
    return ConfigError(f"{where}: cannot listen on {listen}: {why.text}; {fix} ({setting})")


def reason(listen: str) -> Reason | None:
    """Why HOST:PORT cannot be bound now, or None if it can."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        return Reason(f"'{port_text}' is not a port number")
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return Reason(f"the host '{host}' does not resolve")
    first: OSError | None = None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
                return None  # gRPC needs one resolved address to bind
            except OSError as e:
                first = first or e
    if first is None:
        return Reason(f"the host '{host}' has no address to listen on")
    if first.errno == errno.EADDRINUSE:
        return Reason(f"port {port} is already in use (another fedsql, or another program)", True)
    if first.errno == errno.EACCES:
        return Reason(f"permission denied (port {port} needs privileges: ports below 1024 do)")
    if first.errno == errno.EADDRNOTAVAIL:
        return Reason(f"'{host}' is not an address of this machine")
    return Reason(first.strerror or str(first))
