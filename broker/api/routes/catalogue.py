"""GET /v1/catalogue[/{type}/{version}]: the message types, versions and JSON Schemas."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from broker.api.auth import CurrentCaller
from broker.api.context import ApiContext, api_context
from broker.api.models import Catalogue, CatalogueEntry
from broker.api.problems import ApiProblem, problem_responses
from broker.core.catalogue import CATALOGUE
from broker.core.catalogue.jsonschema import schema_for
from broker.core.envelope import MESSAGE_TYPE_PATTERN
from broker.core.errors import PolicyError, Reason

router = APIRouter(tags=["catalogue"])


@router.get(
    "/catalogue",
    operation_id="get_catalogue",
    response_model=Catalogue,
    responses=problem_responses(401, 429, 503, 504),
)
async def get_catalogue(
    caller: CurrentCaller, context: Annotated[ApiContext, Depends(api_context)]
) -> Catalogue:
    """Every message type and version, whether it carries personal data, who here may send it."""
    agreement, country = context.agreement, context.settings.country
    entries = []
    for (message_type, version), model in sorted(CATALOGUE.items()):
        try:
            article: str | None = agreement.rule(message_type).article
            senders = list(agreement.senders_of(message_type, country))
        except PolicyError:
            article, senders = None, []
        entries.append(
            CatalogueEntry(
                type=message_type,
                version=version,
                personal=model.PERSONAL,
                article=article,
                senders=senders,
                schema_url=f"/v1/catalogue/{message_type}/{version}",
            )
        )
    return Catalogue(types=entries)


@router.get(
    "/catalogue/{message_type}/{version}",
    operation_id="get_schema",
    response_model=dict[str, Any],
    responses=problem_responses(401, 404, 422, 429, 503, 504),
)
async def get_schema(
    message_type: Annotated[str, Path(pattern=MESSAGE_TYPE_PATTERN, max_length=64)],
    version: Annotated[int, Path(ge=1, le=1000)],
    caller: CurrentCaller,
) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one type and version; the agreement's rules are checked beyond it."""
    model = CATALOGUE.get((message_type, version))
    if model is None:
        raise ApiProblem(404, Reason.API_NOT_FOUND, f"no message type {message_type!r} at version {version}")
    return schema_for(model)
