"""What a certificate may name, and the CA directory's ledgers of what it issued
(``issued.jsonl``) and revoked (``revoked.jsonl``): a certificate names one thing
(issue 17), so a host that is another node's name or host is refused."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509

from fedsql.errors import ConfigError

INDEX = "issued.jsonl"  # one line per certificate issued: serial, kind, name, names
REVOKED = "revoked.jsonl"  # one line per revoked serial

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
LOCAL_HOSTS = ("localhost", "127.0.0.1")  # what local=True adds to a connector certificate


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``*.localhost``, 127/8, ::1).

    >>> [is_loopback(h) for h in ("localhost", "a.localhost", "127.0.0.2", "::1", "health")]
    [True, True, True, True, False]
    """
    h = host.strip().rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return h in _LOOPBACK_NAMES or h.endswith(".localhost")
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def host_name(h: str, local: bool) -> x509.GeneralName:
    """The subject alternative name for one ``--host``, or a ConfigError saying why not."""
    if "*" in h:
        raise ConfigError(
            f"--host {h!r}: wildcard names are refused; a connector certificate names "
            "exactly the hosts that connector is reached at"
        )
    if is_loopback(h) and not local:
        raise ConfigError(
            f"--host {h!r} is a loopback name: every node on every machine is {h!r}, so a "
            "coordinator expecting it would accept any agency; pass --local (local "
            "development only) to issue it anyway"
        )
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        name = h.rstrip(".").lower()
        if len(name) > 253 or not all(_DNS_LABEL.match(x) for x in name.split(".")):
            raise ConfigError(f"--host {h!r} is neither a DNS name nor an IP address") from None
        return x509.DNSName(name)
    if ip.is_unspecified or ip.is_multicast:
        raise ConfigError(f"--host {h!r} is not the address of one host")
    return x509.IPAddress(ip)


def san_text(gn: x509.GeneralName) -> str:
    return str(gn.value).lower()


@contextmanager
def index_locked(ca_dir: Path) -> Iterator[list[dict[str, Any]]]:
    """The CA's index of issued certificates, locked against a concurrent ``issue``."""
    path = ca_dir / INDEX
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock (one operator issues at a time)
            pass
        yield read_jsonl(path)
    finally:
        os.close(fd)  # also releases the lock


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}: line {n} is not JSON (edited by hand?)") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out


def append_jsonl(path: Path, rec: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def check_unique(
    index: list[dict[str, Any]], kind: str, name: str, hosts: list[x509.GeneralName]
) -> None:
    """Refuse names that another node of this CA already has (its CN or one of its hosts).

    The same kind and name again is a renewal and may keep its hosts."""
    me = name.lower()
    for rec in index:
        other, other_kind = str(rec.get("name", "")).lower(), rec.get("kind")
        if other == me and other_kind == kind:
            continue  # a renewal of this node
        theirs = {other, *(h for h in map(str.lower, rec.get("hosts", ())) if not is_loopback(h))}
        if other == me:
            raise ConfigError(
                f"{name!r} is already the name of a {other_kind} certificate of this CA "
                f"(serial {rec.get('serial')}); one name, one node"
            )
        if me in theirs:
            raise ConfigError(
                f"{name!r} is a host of {other_kind} {rec.get('name')!r}'s certificate "
                f"(serial {rec.get('serial')}); one name, one node"
            )
        for gn in hosts:
            h = san_text(gn)
            if h in theirs:
                what = "the name" if h == other else "a host"
                raise ConfigError(
                    f"--host {h!r} is {what} of {other_kind} {rec.get('name')!r} (serial "
                    f"{rec.get('serial')}, issued by this CA): a certificate naming it would let "
                    f"{name!r} answer for {rec.get('name')!r}"
                )
