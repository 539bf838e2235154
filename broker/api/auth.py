"""Who is calling: a bearer token names one authority of this country, which may act only as itself.

First version: bearer tokens, kept as SHA-256 hashes (`broker.state.api_tokens`, issued with
`broker api token issue`). Mutual TLS with client certificates from the country's CA is the better
product and the next step (docs/http-api.md says why it is not this one). Whatever authenticates,
routes only ever see a `Caller` through `current_caller`, so that step changes this module alone.

Every refusal (no token, an unknown one, acting as another authority, over the rate limit) is logged
by the problem handler as `api.refused` with the caller, or the client's address when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from broker.api.context import ApiContext, api_context
from broker.api.problems import ApiProblem
from broker.core.errors import Reason

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="A token `broker api token issue --authority <id>` printed; it acts as that authority.",
)


@dataclass(frozen=True)
class Caller:
    authority: str
    token_id: str


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    context: Annotated[ApiContext, Depends(api_context)],
) -> Caller:
    """The authenticated caller, rate-limited; 401 without a valid token, 429 over the limit."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        _failed(context, request, "no bearer token: send `Authorization: Bearer <token>`")
    record = context.tokens.lookup(credentials.credentials)
    if record is None:
        _failed(context, request, "the bearer token is not one this API issued, or it was revoked")
    caller = Caller(authority=record.authority, token_id=record.token_id)
    request.state.caller = caller
    context.rate.check(f"authority:{caller.authority}", who=caller.authority)
    return caller


def _failed(context: ApiContext, request: Request, detail: str) -> NoReturn:
    # Failed logins are limited by address, like a caller: guessing a 256-bit token is hopeless anyway.
    address = client_address(request)
    context.failures.check(f"address:{address}", who=f"client {address}")
    raise ApiProblem(401, Reason.AUTH_UNAUTHENTICATED, detail, headers={"WWW-Authenticate": "Bearer"})


def act_as(caller: Caller, authority: str, *, what: str) -> None:
    """Refuse (403 `auth.forbidden`) unless `authority` is the caller itself."""
    if authority != caller.authority:
        raise ApiProblem(
            403,
            Reason.AUTH_FORBIDDEN,
            f"authenticated as {caller.authority}, which may act only as itself: it cannot {what} {authority}",
        )


CurrentCaller = Annotated[Caller, Depends(current_caller)]
