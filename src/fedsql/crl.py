"""A federation CA's certificate revocation list, as connectors read it.

``fedsql.certs`` writes the CRL (``revoke``, ``write_crl``); a connector names it in
``[connector.tls] crl`` and loads it with :func:`load_crl`, which refuses a CRL the
federation CA did not sign (connectors/revocation.py reloads it when it changes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from fedsql.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A CRL whose signature verified: the serials it revokes."""

    serials: frozenset[int]
    number: int  # CRLNumber (0 when absent)
    last_update: dt.datetime
    next_update: dt.datetime | None


def load_crl(data: bytes, ca_pem: bytes, where: str) -> RevocationList:
    """Parse a PEM or DER CRL and check it is signed by a CA in ``ca_pem`` (the
    connector's ``client_ca``); a CRL anyone could write would revoke nothing safely."""
    try:
        crl = (
            x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        )
    except ValueError:
        raise ConfigError(f"{where}: not a PEM or DER X.509 CRL") from None
    try:
        issuers = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise ConfigError(f"{where}: the client_ca is not a PEM certificate") from None
    ok = False
    for ca in issuers:
        if ca.subject != crl.issuer:
            continue
        try:
            ok = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if ok:
            break
    if not ok:
        raise ConfigError(f"{where}: the CRL is not signed by the federation CA (client_ca)")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return RevocationList(
        frozenset(r.serial_number for r in crl),
        number,
        crl.last_update_utc,
        crl.next_update_utc,
    )
