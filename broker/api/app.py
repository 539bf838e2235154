"""The FastAPI application: routers under /v1, problem details for every refusal, limits around all.

`create_app(context)` serves; `create_app(None)` only describes itself, for `openapi_document()`,
which is committed as schemas/openapi.json (a test fails when the two drift apart).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Scope

from broker.api.auth import Caller, client_address
from broker.api.console.app import add_console
from broker.api.context import ApiContext
from broker.api.limits import RequestLimits
from broker.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ApiProblem,
    FieldProblem,
    Problem,
    problem_from_error,
)
from broker.api.routes import catalogue, messages, received, submitting
from broker.core.errors import ExchangeError, Reason
from broker.state.settings import DEFAULT_MAX_MESSAGE_BYTES

_log = structlog.get_logger("broker.api")

API_VERSION = "1"
TITLE = "Labour-migration exchange: HTTP API for ministry systems"
DESCRIPTION = (
    "Submit messages of the agreement's catalogue to the peer country's authorities, follow them to "
    "their signed receipt, prove them from the signed audit log, and read what was received. Each "
    "calling system is one authority of this country and acts only as itself (bearer token). "
    "Errors are RFC 9457 problem details carrying the exchange's reason code. See docs/http-api.md."
)
DEFAULT_TIMEOUT_S = 60.0


def create_app(context: ApiContext | None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if context is not None:
            await context.start()
        try:
            yield
        finally:
            if context is not None:
                await context.close()

    app = FastAPI(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    app.state.context = context
    for router in (submitting.router, messages.router, received.router, catalogue.router):
        app.include_router(router, prefix="/v1")
    add_console(app)  # server-rendered pages under /console, outside the contract
    app.add_exception_handler(ApiProblem, _on_problem)  # type: ignore[arg-type]
    app.add_exception_handler(ExchangeError, _on_exchange_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _on_http_exception)  # type: ignore[arg-type]
    settings = context.settings if context is not None else None
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_message_bytes if settings else DEFAULT_MAX_MESSAGE_BYTES,
        timeout_s=settings.api_request_timeout_s if settings else DEFAULT_TIMEOUT_S,
        respond=_respond_outside,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def openapi_document() -> str:
    """The OpenAPI document as committed (schemas/openapi.json): sorted keys, two-space indent."""
    return json.dumps(create_app(None).openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- problems --------------------------------------------------------------------------------------
def problem_response(request: Request, problem: ApiProblem) -> JSONResponse:
    """The problem document, logged as a refusal with the caller (or the client's address)."""
    caller = getattr(request.state, "caller", None)
    log = _log.warning if problem.status < 500 else _log.error
    log(
        "api.refused",
        caller=caller.authority if isinstance(caller, Caller) else None,
        token_id=caller.token_id if isinstance(caller, Caller) else None,
        client=client_address(request),
        method=request.method,
        path=request.url.path,
        status=problem.status,
        reason=problem.reason,
        diagnostic=problem.detail,
    )
    return JSONResponse(
        problem.document(request.url.path).model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


async def _on_problem(request: Request, problem: ApiProblem) -> JSONResponse:
    return problem_response(request, problem)


async def _on_exchange_error(request: Request, error: ExchangeError) -> JSONResponse:
    return problem_response(request, problem_from_error(error))


async def _on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return problem_response(request, ApiProblem(400, Reason.API_REQUEST_INVALID, "the body is not JSON"))
    problems = [
        FieldProblem(path=".".join(str(part) for part in error.get("loc", ())), message=str(error.get("msg")))
        for error in errors[:20]
    ]
    detail = "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
    return problem_response(request, ApiProblem(422, Reason.API_REQUEST_INVALID, detail, errors=problems))


async def _on_http_exception(request: Request, exc: HTTPException) -> JSONResponse:
    if isinstance(exc, ApiProblem):
        return problem_response(request, exc)
    reason = Reason.API_NOT_FOUND if exc.status_code == 404 else Reason.API_REQUEST_INVALID
    return problem_response(
        request, ApiProblem(exc.status_code, reason, str(exc.detail), headers=exc.headers or None)
    )


def _respond_outside(scope: Scope, problem: ApiProblem) -> ASGIApp:
    """A problem from the limits, outside the routes (too large before it was read, too slow)."""
    return problem_response(Request(scope), problem)


# -- the contract ----------------------------------------------------------------------------------
def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document
