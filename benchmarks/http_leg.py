"""The HTTP leg: submissions per second through the HTTP API, against `Gateway.send`, in one run.

Both legs hand the same message (`pipeline.MESSAGE_TYPE` from TJ-MVD to RU-MVD) to the same running
sending gateway, with the same number of submissions in flight. `Gateway.send` is the Python API of
a system that embeds the gateway; the HTTP leg goes through `broker api serve` in a process of its
own (as deployed), which hands each request to the gateway over the submission channel as TJ-MVD's
RabbitMQ user and answers 202 once the gateway accepted it. A submission counts when it returns
(send returned; 202 received); each leg then waits until every receipt is in, so the next one
starts on an idle exchange.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.common import publish_all, throughput
from benchmarks.pipeline import MESSAGE_TYPE, RECIPIENT, SENDER, Link
from broker.core.catalogue import payload_to_json, sample_payloads
from broker.exchange.devkit import DevExchange, write_settings_file
from broker.state.api_tokens import TokenFile
from broker.state.settings import ExchangeSettings

API_START_LIMIT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class HttpComparison:
    http_submissions_per_s: float
    gateway_send_per_s: float

    @property
    def ratio(self) -> float:
        return self.http_submissions_per_s / self.gateway_send_per_s


async def http_vs_send(
    link: Link, dev: DevExchange, workdir: Path, *, messages: int, in_flight: int, timeout_s: float
) -> HttpComparison:
    send_rate = await _send_leg(link, messages=messages, in_flight=in_flight, timeout_s=timeout_s)
    api = await ApiProcess.start(dev, workdir)
    try:
        http_rate = await _http_leg(link, api, messages=messages, in_flight=in_flight, timeout_s=timeout_s)
    finally:
        await api.close()
    return HttpComparison(http_submissions_per_s=http_rate, gateway_send_per_s=send_rate)


async def _send_leg(link: Link, *, messages: int, in_flight: int, timeout_s: float) -> float:
    payload = sample_payloads()[MESSAGE_TYPE]

    async def send_one(index: int) -> None:
        await link.sender.send(payload, to=RECIPIENT, sender=SENDER)

    started = time.monotonic()
    await asyncio.wait_for(publish_all(messages, in_flight=in_flight, publish_one=send_one), timeout_s)
    rate = throughput(messages, started, time.monotonic())
    await _receipts_in(link, timeout_s)
    return rate


async def _http_leg(link: Link, api: ApiProcess, *, messages: int, in_flight: int, timeout_s: float) -> float:
    body = json.dumps(
        {"type": MESSAGE_TYPE, "to": RECIPIENT, "payload": payload_to_json(sample_payloads()[MESSAGE_TYPE])}
    ).encode()
    connections = [await KeepAlive.open(api.port) for _ in range(min(in_flight, messages))]
    next_index = 0

    async def worker(connection: KeepAlive) -> None:
        nonlocal next_index
        while next_index < messages:
            next_index += 1
            status, answer = await connection.post("/v1/messages", body, token=api.token)
            if status != 202:
                raise RuntimeError(f"the API refused a submission: {status} {answer[:500]!r}")

    try:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in connections)), timeout_s)
        rate = throughput(messages, started, time.monotonic())
    finally:
        for connection in connections:
            connection.close()
    await _receipts_in(link, timeout_s)
    return rate


class KeepAlive:
    """One kept-alive HTTP/1.1 connection, a request at a time. The load generator must cost less than
    what it measures: httpx's pool spends milliseconds per request finding a free connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes, *, token: str) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    def close(self) -> None:
        self._writer.close()


async def _receipts_in(link: Link, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await link.sender.outbox.outstanding_count():
        if time.monotonic() > deadline:
            raise RuntimeError("the HTTP leg's messages were not all receipted in time")
        await asyncio.sleep(0.05)


class ApiProcess:
    """`broker api serve` for TJ, on a free port, with a token for TJ-MVD and no rate limit."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, token: str) -> None:
        self._process = process
        self.port = port
        self.token = token
        self.url = f"http://127.0.0.1:{port}"
        self.auth = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def start(cls, dev: DevExchange, workdir: Path) -> ApiProcess:
        port = _free_port()
        base = dev.settings["TJ"].model_dump()
        settings = ExchangeSettings.load(
            None,
            **{
                **base,
                "secrets_file": workdir / "rabbitmq-secrets.json",
                "api_port": port,
                "api_requests_per_s": 1e9,
                "api_burst": 1_000_000_000,
            },
        )
        config = workdir / "tj-api.toml"
        write_settings_file(config, settings)
        token, _ = TokenFile(settings.api_tokens_path).issue(SENDER, now=datetime.now(UTC))
        broker = Path(sys.executable).parent / "broker"
        process = await asyncio.create_subprocess_exec(
            str(broker), "api", "serve", "--country", "TJ", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        api = cls(process, port, token)
        await api._ready()
        return api

    async def _ready(self) -> None:
        deadline = time.monotonic() + API_START_LIMIT_S
        async with httpx.AsyncClient(base_url=self.url, headers=self.auth, timeout=5) as client:
            while True:
                try:
                    if (await client.get("/v1/catalogue")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self._process.returncode is not None or time.monotonic() > deadline:
                    await self.close()
                    raise RuntimeError("the HTTP API did not start")
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()
        try:
            await asyncio.wait_for(self._process.wait(), 30)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
