"""Sign-in on every Flight call: the credentials and the purpose header, read by a
server middleware before the call's handler runs."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.flight as flight

from fedsql.service import purpose, status
from fedsql.service.auth import Session, SignIn, SignInRefused
from fedsql.service.status import INTERNAL, INVALID_ARGUMENT, UNAUTHENTICATED

log = logging.getLogger(__name__)


class CallAuth(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, session: Session, token: str, new: bool, purpose: str = "") -> None:
        self.session = session
        self.token = token
        self.new = new  # a sign-in: the token goes back to the client
        self.purpose = purpose  # this call's x-fedsql-purpose (purpose.py)

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.new else {}


class AuthMiddleware(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Every call: ``Authorization: Basic`` (sign in, answered with a bearer token)
    or ``Authorization: Bearer`` (a token from an earlier sign-in). The password
    itself is checked by the call's handler (:meth:`SignIn.check`), which knows the
    client's address."""

    def __init__(self, signin: SignIn) -> None:
        self.signin = signin

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> CallAuth:
        try:
            return self._start(headers)
        except SignInRefused as e:
            raise status.to_flight(e.code, str(e)) from None
        except flight.FlightError:
            raise
        except Exception:  # noqa: BLE001 - a server edge: nothing else may leave
            log.exception("sign-in failed")
            raise status.to_flight(
                INTERNAL, "internal error at sign-in; see the service log"
            ) from None

    def _start(self, headers: dict[str, list[str]]) -> CallAuth:
        auth = self._signed_in(headers)
        values = next((v for k, v in headers.items() if k.lower() == purpose.PURPOSE_HEADER), [])
        try:
            auth.purpose = purpose.read(values)
        except ValueError as e:
            raise status.to_flight(INVALID_ARGUMENT, str(e)) from None
        return auth

    def _signed_in(self, headers: dict[str, list[str]]) -> CallAuth:
        values = next((v for k, v in headers.items() if k.lower() == "authorization"), [])
        if not values or not isinstance(values[0], str):
            raise status.to_flight(
                UNAUTHENTICATED,
                "sign in with a user name and password (the users are [user.NAME] entries "
                "with a password_hash in the service's federation config)",
            )
        scheme, _, cred = values[0].partition(" ")
        if scheme.lower() == "basic":
            session, token = self.signin.basic(cred.strip())
            return CallAuth(session, token, new=True)
        if scheme.lower() == "bearer":
            token = cred.strip()
            found = self.signin.bearer(token)
            if found is None:
                raise status.to_flight(
                    UNAUTHENTICATED, "the session token is unknown or expired; sign in again"
                )
            return CallAuth(found, token, new=False)
        raise status.to_flight(UNAUTHENTICATED, "unsupported authorization scheme")


class Handshake(flight.ServerAuthHandler):  # type: ignore[misc]
    """Handshake succeeds; the middleware above has taken the credentials."""

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        pass

    def is_valid(self, token: bytes) -> str:
        return ""
