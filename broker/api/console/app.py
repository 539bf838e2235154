"""The console's routes under /console: sign in and out, each role's pages, refusals as pages."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.api.console import auditor, consulate, operator
from broker.api.console.access import COOKIE, ConsoleRefusal, Role, Viewer, current_viewer
from broker.api.console.pages import refusal_page, render
from broker.api.context import ApiContext, api_context
from broker.core.errors import Reason

router = APIRouter(prefix="/console", include_in_schema=False)
HOME = {
    Role.OPERATOR: "/console/operator",
    Role.AUDITOR: "/console/auditor",
    Role.CONSULATE: "/console/consulate",
}


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return render(request, None, "login.html", failed=False, next=_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request, context: Annotated[ApiContext, Depends(api_context)]) -> Response:
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = parse_qs(body)
    token = (fields.get("token") or [""])[-1].strip()
    after = _next((fields.get("next") or [""])[-1])
    if not token or context.tokens.lookup(token) is None:
        context.failures.check(
            f"address:{request.client.host if request.client else 'unknown'}", who="console"
        )
        return render(request, None, "login.html", status=401, failed=True, next=after)
    response = RedirectResponse(after, status_code=303)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/console")
    return response


def _next(path: str | None) -> str:
    """Where to go after signing in: a console page of this site, never another site."""
    if path and path.startswith("/console/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console"


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("")
async def home(viewer: Annotated[Viewer, Depends(current_viewer)]) -> Response:
    if viewer.role is None:
        raise ConsoleRefusal(
            403, Reason.AUTH_FORBIDDEN, f"{viewer.authority} has no console role: ministries use the HTTP API"
        )
    return RedirectResponse(HOME[viewer.role], status_code=303)


for module in (operator, auditor, consulate):
    router.include_router(module.router)


async def _on_refusal(request: Request, refusal: ConsoleRefusal) -> Response:
    return refusal_page(request, refusal)


def add_console(app: FastAPI) -> None:
    app.include_router(router)
    app.add_exception_handler(ConsoleRefusal, _on_refusal)  # type: ignore[arg-type]
