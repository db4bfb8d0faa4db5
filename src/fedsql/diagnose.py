"""Why a coordinator cannot reach a connector, in words that say which side to fix.

gRPC reports every failed connection as UNAVAILABLE, whatever the cause (nothing
listening, a certificate from another CA, a certificate naming another agency,
an expired certificate, a client certificate refused, TLS on one side only),
and logs the handshake's details at its own level. When a call fails so, the
coordinator asks again here, with Python's TLS stack and the same files: one TCP
connection and one handshake, with the connector's name as the server name the
certificate must carry (as channels.open_channel does), then the HTTP/2 preface, to
which a connector that refused our certificate answers with a TLS alert.

Only the error path pays for this; the result names the files and the side
(coordinator: FEDERATION.toml's [connector.tls]; connector: AGENCY.toml's
[connector.tls]) where the fix belongs. ``fedsql shell --url`` has its own
diagnosis of a Flight SQL service (service/remote.py).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from fedsql.certinfo import common_name
from fedsql.config import ConnectorRef

# The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 3.4, 6.5): what a
# gRPC client sends first. A connector that refuses our certificate answers with an
# alert instead of its SETTINGS.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# OpenSSL verify codes (x509_vfy.h) a coordinator meets when checking a connector.
_EXPIRED, _NOT_YET_VALID, _HOSTNAME = 10, 9, 62
_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What is wrong with one connection: a few words (a table cell) and the whole story."""

    short: str  # e.g. "TLS: unknown CA"
    message: str  # what is wrong, where, and which side fixes it


def diagnose(ref: ConnectorRef, timeout: float = 3.0) -> Diagnosis | None:
    """Why ``ref`` cannot be reached, or None when a fresh connection works (the
    failure was passing, or is not about connecting)."""
    host, _, port = ref.address.rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except ConnectionRefusedError:
        return Diagnosis(
            "not listening",
            f"nothing listens at {ref.address}: is `fedsql connector serve` running "
            "there, and is the address in the federation config right?",
        )
    except TimeoutError:
        return Diagnosis(
            "no answer",
            f"{ref.address} does not answer within {timeout:g} s (a firewall dropping "
            "packets, or the wrong host?)",
        )
    except (OSError, ValueError) as e:
        return Diagnosis("cannot connect", f"cannot connect to {ref.address}: {e}")
    with sock:
        if ref.tls is None:
            return _plaintext_to_tls(sock, ref, timeout)
        return _tls(sock, ref, timeout)


def _plaintext_to_tls(sock: socket.socket, ref: ConnectorRef, timeout: float) -> Diagnosis | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with ctx.wrap_socket(sock, server_hostname=ref.name):
            pass
    except (ssl.SSLError, OSError):
        return None  # not TLS either: something else is wrong
    return Diagnosis(
        "TLS needed",
        f"the connector at {ref.address} requires TLS, but the federation config has "
        f"`insecure = true` for '{ref.name}': fix the coordinator's side, give "
        "[connector.tls] ca, cert and key there (`fedsql certs issue ... coordinator NAME`)",
    )


def _tls(sock: socket.socket, ref: ConnectorRef, timeout: float) -> Diagnosis | None:
    tls = ref.tls
    assert tls is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["h2"])
    try:
        ctx.load_verify_locations(cafile=str(tls.ca))
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as e:
        return Diagnosis(
            "TLS files", f"the coordinator's [connector.tls] files cannot be used: {e}"
        )
    own = _own_problem(tls.cert)
    try:
        with ctx.wrap_socket(sock, server_hostname=ref.name) as s:
            s.settimeout(timeout)
            s.sendall(_PREFACE)
            # A refused client certificate shows here (TLS 1.3 sends the server's
            # verdict after the handshake): an alert, or gRPC closing the connection.
            if not s.recv(9):
                return _client_cert_refused(ref, "", own)
    except ssl.SSLCertVerificationError as e:
        return _server_cert(ref, e.verify_code, timeout)
    except ssl.SSLError as e:
        reason = (e.reason or str(e)).upper()
        if "WRONG_VERSION" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
            return _plaintext(ref)
        if "ALERT" in reason or "CERTIFICATE" in reason:
            return _client_cert_refused(ref, reason, own)
        return Diagnosis("TLS failed", f"the TLS handshake with {ref.address} failed: {reason}")
    except (ConnectionResetError, BrokenPipeError, TimeoutError, OSError):
        if own:  # the connector hung up on the certificate we showed
            return _client_cert_refused(ref, "", own)
        return None
    return None


def _plaintext(ref: ConnectorRef) -> Diagnosis:
    return Diagnosis(
        "plaintext server",
        f"the connector at {ref.address} serves plaintext (`insecure = true` in its "
        f"AGENCY.toml) but the federation config gives '{ref.name}' [connector.tls]: "
        "give the connector [connector.tls] cert, key and client_ca (the connector's "
        "side), or, for local development only, set `insecure = true` for it in the "
        "federation config",
    )


def _server_cert(ref: ConnectorRef, code: int, timeout: float) -> Diagnosis:
    cert = _peer_certificate(ref, timeout)
    who = f"CN={common_name(cert)}, issued by {cert.issuer.rfc4514_string()}" if cert else "?"
    assert ref.tls is not None
    if code == _EXPIRED:
        when = f" at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" if cert else ""
        return Diagnosis(
            "TLS: connector cert expired",
            f"the connector's certificate ({who}) expired{when}: renew it on the "
            f"connector's side (`fedsql certs issue --ca CA connector {ref.name}`, then "
            "restart it or let it reload)",
        )
    if code == _NOT_YET_VALID:
        return Diagnosis(
            "TLS: connector cert not yet valid",
            f"the connector's certificate ({who}) is not valid yet: check the clocks of "
            "both machines",
        )
    if code == _HOSTNAME:
        return Diagnosis(
            "TLS: wrong server name",
            f"the certificate at {ref.address} ({who}) does not name '{ref.name}': the "
            "address in the federation config points at another agency's connector (fix "
            f"it, the coordinator's side), or that connector was given a certificate for "
            f"another name (issue it one for '{ref.name}', the connector's side)",
        )
    if code in _UNKNOWN_ISSUER:
        return Diagnosis(
            "TLS: unknown CA",
            f"the connector's certificate ({who}) is not signed by the CA the federation "
            f"config trusts for '{ref.name}' ([connector.tls] ca = {ref.tls.ca}): give "
            "the coordinator the CA that signed it, or issue the connector a certificate "
            "from the federation CA",
        )
    return Diagnosis(
        "TLS: connector cert refused",
        f"the connector's certificate ({who}) does not verify (OpenSSL code {code})",
    )


def _client_cert_refused(ref: ConnectorRef, reason: str, own: str) -> Diagnosis:
    assert ref.tls is not None
    if own:
        return Diagnosis(
            "TLS: our cert refused",
            f"connector '{ref.name}' refused the coordinator's certificate "
            f"({ref.tls.cert}): {own}: fix it on the coordinator's side (`fedsql certs "
            "issue ... coordinator NAME`)",
        )
    if not reason or any(
        r in reason for r in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED")
    ):
        return Diagnosis(
            "TLS: our cert refused",
            f"connector '{ref.name}' refused the coordinator's certificate "
            f"({ref.tls.cert}): its issuer is not in the connector's client_ca. Fix either "
            "side: the connector's [connector.tls] client_ca must hold the CA that signed "
            "the coordinator's certificate, or the coordinator needs a certificate from "
            "the federation CA",
        )
    return Diagnosis(
        "TLS: our cert refused",
        f"connector '{ref.name}' refused the coordinator's certificate ({ref.tls.cert}): "
        f"{reason.lower()}",
    )


def _own_problem(path: Path) -> str:
    """What is wrong with the coordinator's own certificate by itself ("" if nothing)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return ""
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        return f"it expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > now:
        return "it is not valid yet (check the clocks)"
    return ""


def _peer_certificate(ref: ConnectorRef, timeout: float) -> x509.Certificate | None:
    """The connector's certificate, read without verifying it (to name it in a message)."""
    host, _, port = ref.address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        with sock, ctx.wrap_socket(sock, server_hostname=ref.name) as s:
            der = s.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError):
        return None
    return x509.load_der_x509_certificate(der) if der else None
