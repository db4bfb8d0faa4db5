"""``fedsql connector check``: the certificates, as the connector and its coordinators see them.

The files exist and parse; the key is one gRPC serves with and the audit log
signs with (``trust.server_credentials``, ``signing.NodeKey``) and matches the
certificate; the certificate's and the CA's dates; the names coordinators
check; that ``client_ca`` issued it; the CRL.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Generator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedsql.audit.signing import NodeKey, common_name, names
from fedsql.certs import load_crl
from fedsql.connectors.config import AgencyConfig
from fedsql.connectors.finding import FAIL, ISSUE, OK, WARN, Checks, Finding
from fedsql.errors import ConfigError
from fedsql.tomlconf import ServerTLS
from fedsql.trust import server_credentials

EXPIRY_WARNING_DAYS = 30  # a certificate this close to its end is a warning


def check_tls(cfg: AgencyConfig) -> Checks:
    tls = cfg.tls
    if tls is None:
        yield Finding(
            WARN,
            "tls",
            (
                "insecure = true: plaintext gRPC; anyone who reaches the port can query, and "
                "users and roles are not authenticated. Local development only: issue a "
                f"certificate (`{ISSUE.format(name=cfg.name)}`) and set [connector.tls]"
            ),
        )
        return
    cert = yield from _certificate(tls.cert, "tls cert", cfg.name)
    if cert is not None:
        yield _key(cfg, tls)
        todo = f"issue a new one (`{ISSUE.format(name=cfg.name)}`) and restart the connector"
        yield from _dates("tls cert", cert, todo)
        yield from _names(cert, cfg.name)
    cas = yield from _authorities(tls)
    if cert is not None and cas:
        yield from _chain(cert, cas, tls.client_ca)
        yield from _revocation(tls, cert)
    yield Finding(OK, "coordinators", "allowed: " + ", ".join(cfg.allowed_coordinators))


def _key(cfg: AgencyConfig, tls: ServerTLS) -> Finding:
    """The key as the connector reads it at start: for gRPC, and to sign the audit log."""
    try:
        server_credentials(tls, str(cfg.source))
        signing = NodeKey.load(tls.key, tls.cert, f"{cfg.source}: [connector.tls]")
    except ConfigError as e:
        return Finding(FAIL, "tls key", f"{e}")
    loose = os.name == "posix" and tls.key.stat().st_mode & 0o077
    return Finding(
        WARN if loose else OK,
        "tls key",
        f"{tls.key}: matches the certificate, signs the audit log ({signing.alg})"
        + (f"; readable by other users: chmod 600 {tls.key}" if loose else ""),
    )


def _certificate(
    path: Path, what: str, name: str
) -> Generator[Finding, None, x509.Certificate | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        yield Finding(
            FAIL,
            what,
            (
                f"{path}: not found; issue one (`{ISSUE.format(name=name)}`) or fix the path "
                "(relative paths resolve against AGENCY.toml's directory)"
            ),
        )
        return None
    except OSError as e:
        yield Finding(
            FAIL, what, f"{path}: cannot read it ({e.strerror}); the connector's user must"
        )
        return None
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        yield Finding(FAIL, what, f"{path}: not a PEM certificate (a key? a DER file?)")
        return None


def _authorities(tls: ServerTLS) -> Generator[Finding, None, list[x509.Certificate]]:
    try:
        cas = x509.load_pem_x509_certificates(tls.client_ca.read_bytes())
    except FileNotFoundError:
        yield Finding(
            FAIL,
            "tls client_ca",
            (
                f"{tls.client_ca}: not found; copy the federation CA's ca.crt there (from "
                "`fedsql certs init`)"
            ),
        )
        return []
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else "not a PEM certificate"
        yield Finding(FAIL, "tls client_ca", f"{tls.client_ca}: {why}")
        return []
    for ca in cas:
        yield from _dates(
            "tls CA",
            ca,
            "the federation must move to a new CA (every node's certificate is reissued from it)",
        )
    return cas


def _dates(what: str, cert: x509.Certificate, todo: str) -> Checks:
    now = dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    span = f"'{common_name(cert)}' valid {start:%Y-%m-%d} to {end:%Y-%m-%d}"
    left = (end - now).days
    if now < start:
        yield Finding(
            FAIL,
            what,
            f"not valid before {start:%Y-%m-%d %H:%M} UTC ({span}): "
            "check this host's clock, or wait",
        )
    elif now > end:
        yield Finding(FAIL, what, f"expired {(now - end).days} day(s) ago ({span}): {todo}")
    elif left < EXPIRY_WARNING_DAYS:
        yield Finding(WARN, what, f"expires in {left} day(s) ({span}): {todo} soon")
    else:
        yield Finding(OK, what, f"{span}, {left} days left")


def _names(cert: x509.Certificate, name: str) -> Checks:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server = ExtendedKeyUsageOID.SERVER_AUTH in usage
    except x509.ExtensionNotFound:
        server = True  # no EKU: any use
    held = sorted(names(cert))
    if not server:
        yield Finding(
            FAIL,
            "tls names",
            (
                f"certificate '{common_name(cert)}' is not for a server (no serverAuth usage; a "
                f"coordinator's?): issue a connector certificate (`{ISSUE.format(name=name)}`)"
            ),
        )
    elif name.lower() not in (n.lower() for n in held):
        yield Finding(
            FAIL,
            "tls names",
            (
                f"the certificate names {', '.join(held) or 'nothing'}, not '{name}': coordinators "
                f"check that it names the agency; issue one for it (`{ISSUE.format(name=name)}`)"
            ),
        )
    else:
        yield Finding(OK, "tls names", f"names {', '.join(held)} (coordinators expect '{name}')")


def _chain(cert: x509.Certificate, cas: list[x509.Certificate], ca_path: Path) -> Checks:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        yield Finding(OK, "tls chain", f"issued by '{common_name(ca)}' ({ca_path})")
        return
    yield Finding(
        FAIL,
        "tls chain",
        (
            f"not issued by the CA in {ca_path} (it names issuer {cert.issuer.rfc4514_string()}): "
            "coordinators trusting the federation CA refuse it; issue it from that CA"
        ),
    )


def _revocation(tls: ServerTLS, cert: x509.Certificate) -> Checks:
    if tls.crl is None:
        yield Finding(
            OK,
            "tls crl",
            "none configured ([connector.tls] crl): revoked "
            "coordinator certificates are not refused before they expire",
        )
        return
    where = f"[connector.tls].crl {tls.crl}"
    try:
        crl = load_crl(tls.crl.read_bytes(), tls.client_ca.read_bytes(), where)
    except OSError as e:
        yield Finding(FAIL, "tls crl", f"{where}: cannot read it ({e.strerror})")
        return
    except ConfigError as e:
        yield Finding(FAIL, "tls crl", f"{e}")
        return
    if cert.serial_number in crl.serials:
        yield Finding(
            FAIL,
            "tls crl",
            f"this connector's own certificate is revoked by {tls.crl}: issue it a new one",
        )
    elif crl.next_update is not None and crl.next_update < dt.datetime.now(dt.UTC):
        yield Finding(
            WARN,
            "tls crl",
            f"{tls.crl}: out of date since {crl.next_update:%Y-%m-%d}; "
            "publish a fresh one (`fedsql certs crl --ca CA_DIR`)",
        )
    else:
        yield Finding(OK, "tls crl", f"{tls.crl}: signed by the CA, {len(crl.serials)} revoked")
