"""The CA's certificate revocation list, as a connector keeps it in force."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

from fedsql.certs import RevocationList, load_crl
from fedsql.errors import ConfigError
from fedsql.tomlconf import ServerTLS

log = logging.getLogger(__name__)

CRL_CHECK_SECONDS = 2.0  # how often the file is looked at


class Revocations:
    """The CA's revocation list for a connector, checked against its signature
    and reloaded when the file changes (looked at at most every CRL_CHECK_SECONDS).
    A CRL that does not load keeps the last good one in force."""

    def __init__(self, tls: ServerTLS, where: str) -> None:
        assert tls.crl is not None
        self.path: Path = tls.crl
        self.client_ca = tls.client_ca
        self.where = where
        self._lock = threading.Lock()
        try:
            self._stamp = self._stat()
        except FileNotFoundError:
            raise ConfigError(
                f"{where}: {self.path} not found; write it with `fedsql certs crl --ca CA_DIR`"
            ) from None
        self._list = self._load()
        self._next = time.monotonic() + CRL_CHECK_SECONDS
        log.info("%s: %d certificate(s) revoked", where, len(self._list.serials))

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self) -> RevocationList:
        try:
            data, ca = self.path.read_bytes(), self.client_ca.read_bytes()
        except OSError as e:
            raise ConfigError(f"{self.where}: cannot read {self.path} ({e.strerror})") from None
        return load_crl(data, ca, self.where)

    def revoked(self, serial: int) -> bool:
        now = time.monotonic()
        if now >= self._next and self._lock.acquire(blocking=False):
            try:
                self._next = now + CRL_CHECK_SECONDS
                self._reload()
            finally:
                self._lock.release()
        return serial in self._list.serials

    def _reload(self) -> None:
        try:
            stamp = self._stat()
        except OSError as e:
            if self._stamp != (0, 0, 0):
                log.error(
                    "%s: %s (%s); the revocations loaded before stay in force",
                    self.where,
                    self.path,
                    e.strerror,
                )
                self._stamp = (0, 0, 0)
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            new = self._load()
        except ConfigError as e:
            log.error("%s; not reloaded: the revocations loaded before stay in force", e)
            return
        if new.number < self._list.number:
            log.error(
                "%s: CRL number %d is older than the one in force (%d); not reloaded",
                self.where,
                new.number,
                self._list.number,
            )
            return
        self._list = new
        log.info("%s: reloaded, %d certificate(s) revoked", self.where, len(new.serials))
        if new.next_update is not None and new.next_update < dt.datetime.now(dt.UTC):
            log.warning(
                "%s: past its next update (%s); write a new one",
                self.where,
                new.next_update.isoformat(),
            )
