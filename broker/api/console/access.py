"""Who is looking at the console, in which role, and whether a form really came from our page.

The console is behind the API's own bearer tokens. A browser cannot send a bearer header, so the
login form takes the token once and keeps it in an HttpOnly, SameSite=Strict cookie; a script may
send `Authorization: Bearer` instead. The role follows from the token's authority in the agreement:
the country's gateway is run by its operators, its auditor authority is the auditor, a consulate
is a consulate; ministries have the API and no console pages.

Every action (POST) carries a CSRF token: a hash of the session's own token, which a page of
another site can neither read (HttpOnly) nor compute.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request

from broker.api.context import ApiContext, api_context
from broker.core.agreement import Agreement
from broker.core.agreement_set import AgreementSet
from broker.core.errors import PolicyError, Reason

COOKIE = "console_token"


class Role(StrEnum):
    OPERATOR = "operator"
    AUDITOR = "auditor"
    CONSULATE = "consulate"


# The agreement's role of an authority that gives a console role (first match wins).
_ROLE_OF = (("gateway", Role.OPERATOR), ("auditor", Role.AUDITOR), ("consulate", Role.CONSULATE))


class ConsoleRefusal(Exception):
    """A refused page or action, answered as an HTML page with the status and the reason code."""

    def __init__(self, status: int, reason: Reason, detail: str) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        super().__init__(f"[{reason}] {detail}")


@dataclass(frozen=True)
class Viewer:
    authority: str
    token_id: str
    role: Role | None
    country: str  # the country of the authority: a consulate's nationals
    csrf: str

    def may(self, role: Role) -> bool:
        return self.role is role


def role_of(agreement: Agreement | AgreementSet, authority: str) -> tuple[Role | None, str]:
    try:
        found = agreement.authority(authority)
    except PolicyError:
        return None, ""
    for agreement_role, role in _ROLE_OF:
        if agreement_role in found.roles:
            return role, found.country
    return None, found.country


def csrf_of(token: str) -> str:
    return hashlib.sha256(b"console-csrf\x00" + token.encode("utf-8")).hexdigest()


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(COOKIE) or None


async def current_viewer(request: Request, context: Annotated[ApiContext, Depends(api_context)]) -> Viewer:
    """The signed-in viewer; a request without a valid token is sent to the login page (401)."""
    token = presented_token(request)
    record = context.tokens.lookup(token) if token else None
    if token is None or record is None:
        context.failures.check(
            f"address:{request.client.host if request.client else 'unknown'}", who="console"
        )
        raise ConsoleRefusal(401, Reason.AUTH_UNAUTHENTICATED, "sign in with a token the API issued")
    role, country = role_of(context.agreement, record.authority)
    viewer = Viewer(
        authority=record.authority, token_id=record.token_id, role=role, country=country, csrf=csrf_of(token)
    )
    request.state.viewer = viewer
    context.rate.check(f"authority:{record.authority}", who=record.authority)
    return viewer


def requires(role: Role) -> object:
    """A dependency: the viewer, if its role is `role`; 403 `auth.forbidden` otherwise."""

    async def check(viewer: Annotated[Viewer, Depends(current_viewer)], request: Request) -> Viewer:
        if not viewer.may(role):
            raise ConsoleRefusal(
                403,
                Reason.AUTH_FORBIDDEN,
                f"{viewer.authority} ({viewer.role or 'no console role'}) may not open {request.url.path}: "
                f"it is a page of the {role} role",
            )
        return viewer

    return Depends(check)


async def form_of(request: Request, viewer: Viewer) -> dict[str, str]:
    """The fields of a posted form, after its CSRF token was checked (403 otherwise)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}
    if not hmac.compare_digest(fields.get("csrf", ""), viewer.csrf):
        raise ConsoleRefusal(
            403,
            Reason.CONSOLE_CSRF_INVALID,
            "the form has no valid CSRF token: reload the page and try again",
        )
    return fields
