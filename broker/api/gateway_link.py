"""How the API hands submissions to its country's running gateway: the submission channel, as the
calling ministry's own RabbitMQ user.

One connection per ministry, opened on its first request with the password `broker topology apply`
keeps in the secrets file. The API therefore needs no RabbitMQ user of its own, and the gateway
checks the caller a second time: RabbitMQ vouches for `user_id`, and the gateway maps that user to
the one authority it acts for, so a fault in the API's own check still cannot sign as another
ministry. A connection that fails is dropped and made again on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import structlog

from broker.core.agreement_set import Agreements
from broker.core.errors import ExchangeError, LocalError, Reason
from broker.exchange.ministries import submitting_authorities
from broker.exchange.submission import DEFAULT_SUBMISSION_TTL_S, Accepted, ReceiptNews, Refused, Submission
from broker.exchange.submitter import SubmissionClient, submitter_login
from broker.state.settings import ExchangeSettings

_log = structlog.get_logger(__name__)

# Where `broker topology apply` keeps the passwords when the settings name no secrets_file.
DEFAULT_SECRETS = Path("var/rabbitmq-secrets.json")
# How long a submission waits for a gateway to start consuming before 503 `submission.no_gateway`.
GATEWAY_PATIENCE_S = 2.0
# A gateway seen consuming is believed for this long before the queue is asked again.
GATEWAY_SEEN_S = 2.0
# Beyond the submission's time to live: the gateway may take it at the last moment, then answer.
ANSWER_GRACE_S = 5.0


class GatewayLink:
    def __init__(
        self,
        settings: ExchangeSettings,
        *,
        agreement: Agreements,
        on_receipt: Callable[[ReceiptNews], None],
        ttl_s: float = DEFAULT_SUBMISSION_TTL_S,
    ) -> None:
        self._settings = settings
        self._ministries = submitting_authorities(agreement, settings.country)
        self._on_receipt = on_receipt
        self._ttl_s = ttl_s
        self._clients: dict[str, SubmissionClient] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        # One request id of one authority at a time: its answers arrive on one queue, by request id.
        self._requests: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._gateway_seen_at: dict[str, float] = {}

    async def submit(self, authority: str, submission: Submission) -> Accepted | Refused:
        """Hand `submission` to the gateway as `authority`'s user; the gateway's first answer."""
        if authority not in self._ministries:
            raise LocalError(
                Reason.POLICY_SUBMITTER_NOT_ALLOWED,
                f"{authority} submits nothing through {self._settings.country}'s gateway; its ministries "
                f"are {', '.join(self._ministries)}",
            )
        key = (authority, submission.request_id)
        lock, users = self._requests.get(key, (asyncio.Lock(), 0))
        self._requests[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._submit_once(authority, submission)
        finally:
            lock, users = self._requests[key]
            if users == 1:
                del self._requests[key]
            else:
                self._requests[key] = (lock, users - 1)

    async def _submit_once(self, authority: str, submission: Submission) -> Accepted | Refused:
        client = await self._client(authority)
        try:
            await self._gateway_running(authority, client)
            await client.submit(submission, ttl_s=self._ttl_s)
            while True:
                answer = await client.answer(submission.request_id, timeout_s=self._ttl_s + ANSWER_GRACE_S)
                if answer is None:
                    raise LocalError(
                        Reason.SUBMISSION_NO_GATEWAY,
                        f"the gateway did not answer within {self._ttl_s + ANSWER_GRACE_S:g} s; submit "
                        "again with the same Idempotency-Key to learn what became of it",
                    )
                if not isinstance(answer, ReceiptNews):
                    return answer
        except ExchangeError as error:
            if error.reason in (Reason.TRANSPORT_UNAVAILABLE, Reason.TRANSPORT_NOT_CONFIRMED):
                await self._drop(authority, client)
            raise
        finally:
            client.forget(submission.request_id)

    async def close(self) -> None:
        for authority, client in list(self._clients.items()):
            await self._drop(authority, client)

    async def _client(self, authority: str) -> SubmissionClient:
        lock = self._connecting.setdefault(authority, asyncio.Lock())
        async with lock:
            client = self._clients.get(authority)
            if client is None:
                user, url = submitter_login(
                    self._settings.amqp_url,
                    country=self._settings.country,
                    authority=authority,
                    secrets_file=self._settings.secrets_file or DEFAULT_SECRETS,
                )
                client = await SubmissionClient.connect(
                    url=url, user=user, country=self._settings.country, on_receipt=self._on_receipt
                )
                self._clients[authority] = client
                _log.info("api.submitter_connected", authority=authority, user=user)
            return client

    async def _gateway_running(self, authority: str, client: SubmissionClient) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._gateway_seen_at.get(authority, -GATEWAY_SEEN_S) < GATEWAY_SEEN_S:
            return
        await client.wait_for_gateway(patience_s=GATEWAY_PATIENCE_S)
        self._gateway_seen_at[authority] = asyncio.get_running_loop().time()

    async def _drop(self, authority: str, client: SubmissionClient) -> None:
        if self._clients.get(authority) is client:
            del self._clients[authority]
        self._gateway_seen_at.pop(authority, None)
        with contextlib.suppress(ExchangeError):
            await client.close()
