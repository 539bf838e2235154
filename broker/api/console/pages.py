"""Rendering: the Jinja2 environment, the viewer's language, and refusals as pages.

Templates autoescape everything: message bytes and payload fields are someone else's input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from broker.api.console.access import ConsoleRefusal, Viewer
from broker.api.console.strings import LANGUAGES, text
from broker.core.catalogue.wording import in_words

_log = structlog.get_logger("broker.console")
LANGUAGE_COOKIE = "console_lang"
TEMPLATES = Path(__file__).with_name("templates")

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt variable is a failing test, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)


def language_of(request: Request) -> str:
    """`?lang=`, then the cookie the switcher set, then the browser's first language we have."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
        if candidate in LANGUAGES:
            return str(candidate)
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def render(
    request: Request, viewer: Viewer | None, template: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    language = language_of(request)
    page = environment.get_template(template).render(
        viewer=viewer,
        lang=language,
        languages=LANGUAGES,
        path=request.url.path,
        t=lambda label: text(label, language),
        words=lambda field, code: in_words(field, code, language=language),
        **values,
    )
    response = HTMLResponse(page, status_code=status)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, language, httponly=True, samesite="strict", path="/console")
    return response


def refusal_page(request: Request, refusal: ConsoleRefusal) -> Response:
    viewer = getattr(request.state, "viewer", None)
    _log.warning(
        "console.refused",
        authority=viewer.authority if isinstance(viewer, Viewer) else None,
        token_id=viewer.token_id if isinstance(viewer, Viewer) else None,
        client=request.client.host if request.client else None,
        method=request.method,
        path=request.url.path,
        status=refusal.status,
        reason=str(refusal.reason),
        diagnostic=refusal.detail,
    )
    if refusal.status == 401 and request.method == "GET" and "authorization" not in request.headers:
        return RedirectResponse(f"/console/login?next={request.url.path}", status_code=303)
    return render(
        request,
        viewer if isinstance(viewer, Viewer) else None,
        "refused.html",
        status=refusal.status,
        reason=str(refusal.reason),
        detail=refusal.detail,
    )
