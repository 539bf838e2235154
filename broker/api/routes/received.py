"""GET /v1/authorities/{authority}/received: messages received for an authority, paged, opened.

Only the authority itself may list them. The list holds messages addressed to it and those the
agreement lets it receive as a local subscriber (a consulate's death notices); a sealed personal
payload is opened with the recipient's key, from the key vault's wrap, and shows as `erased` once
its data key was destroyed. Paged by audit index: `next_cursor` continues where a page ended.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from broker.api.auth import CurrentCaller, act_as
from broker.api.context import ApiContext, api_context
from broker.api.models import ReceivedPage
from broker.api.problems import problem_responses
from broker.core.envelope import AUTHORITY_PATTERN

router = APIRouter(tags=["received"])

MAX_PAGE = 100


@router.get(
    "/authorities/{authority}/received",
    operation_id="list_received",
    response_model=ReceivedPage,
    responses=problem_responses(401, 403, 422, 429, 503, 504),
)
async def list_received(
    authority: Annotated[
        str,
        Path(
            pattern=AUTHORITY_PATTERN, max_length=64, description="The calling authority", examples=["RU-MVD"]
        ),
    ],
    caller: CurrentCaller,
    context: Annotated[ApiContext, Depends(api_context)],
    cursor: Annotated[int, Query(ge=0, le=2**62, description="next_cursor of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> ReceivedPage:
    """Received messages for the calling authority, oldest first, with their payloads."""
    act_as(caller, authority, what="read the messages of")
    return await context.records.received(authority, cursor=cursor, limit=limit)
