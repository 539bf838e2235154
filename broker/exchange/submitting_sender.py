"""A national adapter's way to send: through the running gateway, as the sending ministry's own user.

`broker adapt <cc> import` and `watch` used to embed a second gateway, which consumed the country's
`inbound` and `submit` queues beside the running one (the bug `broker send` had). They now hand each
message over the submission channel, like `broker send`, and keep the adapters' `Sender` shape.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, cast
from uuid import UUID

from pydantic import JsonValue

from broker.core.agreement_set import Agreements
from broker.core.catalogue import Payload, payload_to_json
from broker.core.errors import LocalError, Reason
from broker.core.ids import uuid7
from broker.exchange.submission import DEFAULT_SUBMISSION_TTL_S, Accepted, ReceiptNews, Refused, Submission
from broker.exchange.submitter import SubmissionClient, submitter_login, submitting_authority

# Beyond the submission's time to live: a gateway may take it at the last moment, then answer.
ANSWER_GRACE_S = 5.0
# The longest an import waits for the peer's receipt of one message (a death notice's deadline).
RECEIPT_WAIT_S = 300.0


@dataclass(frozen=True)
class Submitted:
    message_id: UUID
    verdict: str | None  # the peer's, when the receipt was waited for


class SubmittingSender:
    """Sends payloads of `country`'s ministries through the running gateway; one connection each."""

    def __init__(self, *, agreement: Agreements, country: str, amqp_url: str, secrets_file: Path) -> None:
        self._agreement = agreement
        self._country = country
        self._amqp_url = amqp_url
        self._secrets_file = secrets_file
        self._clients: dict[str, SubmissionClient] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()

    async def send(
        self, payload: Payload, *, to: str, sender: str | None = None, wait_receipt: bool = False
    ) -> Submitted:
        """Submit `payload`; the gateway's refusal is raised with its reason code, nothing sent."""
        authority = submitting_authority(self._agreement, self._country, payload.MESSAGE_TYPE, sender)
        client = await self._client(authority)
        submission = Submission(
            request_id=str(uuid7()),
            type=payload.MESSAGE_TYPE,
            version=payload.VERSION,
            to=to,
            sender=authority,
            payload=cast(dict[str, JsonValue], payload_to_json(payload)),
        )
        await client.wait_for_gateway(patience_s=ANSWER_GRACE_S)
        await client.submit(submission)
        answer = await client.answer(
            submission.request_id, timeout_s=DEFAULT_SUBMISSION_TTL_S + ANSWER_GRACE_S
        )
        if isinstance(answer, Refused):
            raise LocalError(_reason(answer.reason), f"the gateway refused it: {answer.diagnostic}")
        if not isinstance(answer, Accepted):
            raise LocalError(
                Reason.SUBMISSION_NO_GATEWAY,
                f"no answer from {self._country}'s gateway to request {submission.request_id}",
            )
        verdict = None
        while wait_receipt and verdict is None:
            news = await client.answer(submission.request_id, timeout_s=RECEIPT_WAIT_S)
            if news is None:
                raise LocalError(
                    Reason.RECEIPT_PENDING,
                    f"no receipt for {answer.message_id} within {RECEIPT_WAIT_S:.0f} s; it is on its way "
                    f"(`broker status {answer.message_id} --country {self._country}`)",
                )
            if isinstance(news, ReceiptNews) and news.final:
                verdict = news.verdict
        return Submitted(message_id=answer.message_id, verdict=verdict)

    async def _client(self, authority: str) -> SubmissionClient:
        if authority not in self._clients:
            user, url = submitter_login(
                self._amqp_url, country=self._country, authority=authority, secrets_file=self._secrets_file
            )
            self._clients[authority] = await SubmissionClient.connect(
                url=url, user=user, country=self._country
            )
        return self._clients[authority]


def _reason(code: str) -> Reason:
    """Our reason for a code the gateway sent (a newer gateway may send one we do not know)."""
    try:
        return Reason(code)
    except ValueError:
        return Reason.INTERNAL_ERROR
