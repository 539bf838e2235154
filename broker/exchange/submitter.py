"""A ministry system's side of the submission channel: log in as its own RabbitMQ user, submit, hear back.

`broker send`, the development exchange's demo and the HTTP API (`broker.api`) use it. The gateway does the sealing, recording and sending; this side only
publishes a submission (wire format: `broker.exchange.submission`) and reads the answers, which
arrive on the connection's direct reply-to address. A client that goes away loses nothing: the
gateway keeps the message, and `broker status` follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from broker.core.agreement_set import Agreements
from broker.core.errors import ConfigError, ExchangeError, LocalError, PolicyError, Reason
from broker.exchange.ministries import submitter_user, submitting_authorities, vhost_of
from broker.exchange.provisioning import read_passwords
from broker.exchange.submission import (
    DEFAULT_SUBMISSION_TTL_S,
    Accepted,
    ReceiptNews,
    Refused,
    Submission,
    encode_submission,
    parse_answer,
)
from broker.exchange.topology import SUBMIT
from broker.exchange.transport import RabbitRequests, RabbitTransport
from broker.state.rabbitmq_passwords import environment_password, password_variable

_log = structlog.get_logger(__name__)

Answer = Accepted | Refused | ReceiptNews


def submitting_authority(agreement: Agreements, country: str, message_type: str, sender: str | None) -> str:
    """The authority a submission of `message_type` comes from: `sender`, or the one ministry of
    `country` the agreement lets send it."""
    ministries = submitting_authorities(agreement, country)
    if sender is not None:
        if sender not in ministries:
            raise LocalError(
                Reason.POLICY_SUBMITTER_NOT_ALLOWED,
                f"{sender} submits nothing through {country}'s gateway; its ministries are {', '.join(ministries)}",
            )
        return sender
    try:
        return agreement.only_sender(message_type, country, among=ministries)
    except PolicyError as refused:
        raise LocalError(refused.reason, refused.diagnostic) from None


def submitter_login(amqp_url: str, *, country: str, authority: str, secrets_file: Path) -> tuple[str, str]:
    """(user, URL) for `authority`'s ministry system: the gateway's broker and vhost, its own user,
    the password `broker topology apply` keeps in `secrets_file` (or its RABBITMQ_PASSWORD_<USER>)."""
    user = submitter_user(vhost_of(amqp_url), country, authority)
    password = environment_password(user)
    if password is None and not secrets_file.exists():
        raise ConfigError(
            Reason.INPUT_UNREADABLE,
            f"no secrets file {secrets_file} (`broker topology apply` writes one; or pass --secrets FILE) "
            f"and no {password_variable(user)} variable",
        )
    password = password or read_passwords(secrets_file).get(user)
    if not password:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"no password for RabbitMQ user {user} ({authority}) in {secrets_file}: apply the topology "
            "(`broker topology apply`), which creates the user and keeps its password there",
        )
    parts = urlsplit(amqp_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return user, urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class SubmissionClient:
    """One connection of one submitter. Answers are sorted by request id as they arrive."""

    def __init__(
        self,
        *,
        transport: RabbitTransport,
        requests: RabbitRequests,
        user: str,
        country: str,
        on_receipt: Callable[[ReceiptNews], None] | None = None,
    ) -> None:
        self.user = user
        self.country = country
        self._transport = transport
        self._requests = requests
        self._answers: dict[str, asyncio.Queue[Answer]] = {}
        # Told of every receipt that comes back, also for requests forgotten since (the HTTP API's waiters).
        self._on_receipt = on_receipt
        self._reader = asyncio.create_task(self._read_answers(), name=f"{user}-answers")

    @classmethod
    async def connect(
        cls,
        *,
        url: str,
        user: str,
        country: str,
        on_receipt: Callable[[ReceiptNews], None] | None = None,
    ) -> SubmissionClient:
        transport = await RabbitTransport.connect(url=url, name=f"{user}-submitter")
        try:
            requests = await transport.requests()
        except ExchangeError:
            await transport.close()
            raise
        return cls(transport=transport, requests=requests, user=user, country=country, on_receipt=on_receipt)

    async def gateway_consumers(self) -> int:
        """How many gateways consume this country's submissions now (0: none is running)."""
        try:
            _, consumers = await self._transport.queue_counts(SUBMIT)
        except ExchangeError as error:
            if error.reason is not Reason.CONFIG_INVALID:
                raise
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"{self.country}'s broker has no `{SUBMIT}` queue: apply the topology (`broker topology apply`)",
            ) from None
        return consumers

    async def wait_for_gateway(self, *, patience_s: float, poll_s: float = 0.25) -> None:
        """Return once a gateway consumes submissions; `submission.no_gateway` after `patience_s`."""
        deadline = asyncio.get_running_loop().time() + patience_s
        while not await self.gateway_consumers():
            if asyncio.get_running_loop().time() >= deadline:
                raise LocalError(
                    Reason.SUBMISSION_NO_GATEWAY,
                    f"no gateway is consuming submissions for {self.country} (start it: `broker gateway "
                    f"--country {self.country}`); nothing was sent",
                )
            await asyncio.sleep(poll_s)

    async def submit(self, submission: Submission, *, ttl_s: float = DEFAULT_SUBMISSION_TTL_S) -> None:
        """Publish the submission; unless a gateway takes it within `ttl_s` the broker drops it unsent."""
        self._answers.setdefault(submission.request_id, asyncio.Queue())
        await self._requests.publish(
            exchange=SUBMIT,
            routing_key=self.country.lower(),
            body=encode_submission(submission),
            message_id=submission.request_id,
            correlation_id=submission.request_id,
            user_id=self.user,
            expiration_s=ttl_s,
        )

    async def answer(self, request_id: str, *, timeout_s: float) -> Answer | None:
        """The next answer to `request_id`, or None when none came within `timeout_s`."""
        queue = self._answers.setdefault(request_id, asyncio.Queue())
        try:
            async with asyncio.timeout(timeout_s):
                return await queue.get()
        except TimeoutError:
            return None

    def forget(self, request_id: str) -> None:
        """Stop keeping answers to `request_id` (a long-running client would otherwise keep them all)."""
        self._answers.pop(request_id, None)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(ExchangeError):
            await self._requests.close()
        await self._transport.close()

    async def _read_answers(self) -> None:
        while True:
            incoming = await self._requests.answers.get()
            try:
                answer = parse_answer(incoming.body)
            except ExchangeError as error:
                _log.warning("submission.answer_unreadable", diagnostic=error.diagnostic)
                continue
            if isinstance(answer, ReceiptNews) and self._on_receipt is not None:
                self._on_receipt(answer)
            queue = self._answers.get(incoming.correlation_id or "")
            if queue is not None:
                queue.put_nowait(answer)
