"""`broker demo`: Tajikistan's exchange with Russia and with Uzbekistan on the local RabbitMQ.

Creates a dev PKI for the three countries, applies the topology (vhosts `demo-<random>-tj`, `-ru`
and `-uz` with their own users, shovels between TJ and each peer), starts the three gateways in this
process, lets the Tajik consulate in Moscow subscribe, sends one message of each type each way
between TJ and RU (Tajik ministries through the Python API, Russian ones through the running
gateway's submission channel), then a legislation change to Uzbekistan too (TJ-UZ joint plan,
item 7) and a death notice to Uzbekistan, which the plan does not cover: TJ's gateway refuses it.
It waits for every receipt and prints what happened. At the end it deletes the vhosts and users it
made, unless `--keep`; nothing else on the RabbitMQ node is touched.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import shutil
import socket
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.cli.common import run
from broker.cli.logs import configure_logging
from broker.cli.output import console
from broker.core.catalogue import sample_payloads
from broker.core.catalogue.death import WorkerDeath
from broker.core.errors import ExchangeError, LocalError, Reason, TransportError
from broker.core.ids import uuid7
from broker.exchange.devkit import DevExchange
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.submission import Accepted, ReceiptNews, Refused, Submission
from broker.exchange.submitter import SubmissionClient
from broker.exchange.subscriber import Alert, Subscription
from broker.exchange.transport import RabbitTransport
from broker.state.key_files import KeyLayout
from broker.state.key_vault import VAULT_FILE

# (message type, sender, recipient) for each direction. Russia has two competent bodies (Art. 3.1):
# labour law and the labour market are the labour ministry's, permits and licences the interior's.
ROUTES: dict[str, list[tuple[str, str, str]]] = {
    "TJ": [
        ("legislation.change", "TJ-MOL", "RU-MINTRUD"),
        ("employer.permit", "TJ-MOL", "RU-MVD"),
        ("recruitment_agency.license", "TJ-MOL", "RU-MVD"),
        ("labour_market.report", "TJ-MOL", "RU-MINTRUD"),
        ("work_permit.cancellation", "TJ-MVD", "RU-MVD"),
        ("worker.death", "TJ-MVD", "RU-MVD"),
    ],
    "RU": [
        ("legislation.change", "RU-MINTRUD", "TJ-MOL"),
        ("employer.permit", "RU-MVD", "TJ-MOL"),
        ("recruitment_agency.license", "RU-MVD", "TJ-MOL"),
        ("labour_market.report", "RU-MINTRUD", "TJ-MOL"),
        ("work_permit.cancellation", "RU-MVD", "TJ-MOL"),
        ("worker.death", "RU-MVD", "TJ-MOL"),
    ],
}
# The second agreement, TJ-UZ: (type, sender, recipient, the refusal expected, if any).
SECOND_PEER: list[tuple[str, str, str, str | None]] = [
    ("legislation.change", "TJ-MOL", "UZ-MEHNAT", None),
    ("worker.death", "TJ-MVD", "UZ-MEHNAT", str(Reason.POLICY_TYPE_NOT_COVERED)),
]
# The joint plan ran 2021-2023 (the shipped file says so). The demo runs it as an operator would
# after a renewal: a copy of the file with one more period. This period stands in for a renewal
# document and is the demo's alone.
DEMO_RENEWAL = """
[[period]]
from = 2024-01-01
until = 2099-12-31
basis = "the demo's stand-in for a renewed plan (not a real document)"
"""
DEMO_COUNTRIES = ("TJ", "RU", "UZ")
CONSULATE = "TJ-CONSULATE-MOSCOW"
CONSULATE_TYPES = ("worker.death", "work_permit.cancellation")
RECEIPT_WAIT_S = 60.0
AUDITOR = "TJ-AUDITOR"


@dataclass(frozen=True)
class Outcome:
    message_type: str
    direction: str
    message_id: UUID | None = None
    verdict: str | None = None
    reason: str | None = None
    audit_index: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    expected: str | None = None  # the refusal this send must get; None: it must be accepted

    @property
    def as_expected(self) -> bool:
        if self.expected is None:
            return self.verdict == "accepted"
        return self.verdict == "refused" and self.reason == self.expected


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _rabbit_listening(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def _send_timed(
    gateway: Gateway, message_type: str, sender: str, recipient: str, expected: str | None = None
) -> Outcome:
    """Through the Python API of a gateway the ministry system embeds."""
    direction = f"{gateway.country} → {recipient[:2]}"  # an authority id starts with its country
    started = time.perf_counter()
    try:
        result = await gateway.send(
            sample_payloads()[message_type],
            to=recipient,
            sender=sender,
            wait_receipt=True,
            receipt_timeout_s=RECEIPT_WAIT_S,
        )
    except LocalError as refused:  # the agreement does not let us send it
        if refused.reason.value.startswith("policy."):
            return Outcome(message_type, direction, verdict="refused", reason=str(refused.reason),
                           error=refused.diagnostic, expected=expected)  # fmt: skip
        return Outcome(message_type, direction, error=str(refused), expected=expected)
    except (ExchangeError, TimeoutError) as error:
        return Outcome(message_type, direction, error=str(error) or "no receipt in time", expected=expected)
    receipt = result.receipt
    assert receipt is not None  # wait_receipt
    return Outcome(
        message_type, direction, result.message_id, receipt.verdict, receipt.reason, receipt.audit_index,
        _ms_since(started),
    )  # fmt: skip


async def _submit_timed(client: SubmissionClient, message_type: str, sender: str, recipient: str) -> Outcome:
    """Through the submission channel of the running gateway, as the ministry's own RabbitMQ user."""
    direction = f"{client.country} → {'TJ' if client.country == 'RU' else 'RU'}"
    payload = json.loads(sample_payloads()[message_type].model_dump_json())
    request_id = str(uuid7())
    started = time.perf_counter()
    await client.submit(
        Submission(request_id=request_id, type=message_type, to=recipient, sender=sender, payload=payload)
    )
    accepted = await client.answer(request_id, timeout_s=RECEIPT_WAIT_S)
    if not isinstance(accepted, Accepted):
        error = accepted.diagnostic if isinstance(accepted, Refused) else "the gateway did not answer"
        return Outcome(message_type, direction, error=error)
    news = await client.answer(request_id, timeout_s=RECEIPT_WAIT_S)
    if not isinstance(news, ReceiptNews):
        return Outcome(message_type, direction, accepted.message_id, error="no receipt in time")
    return Outcome(
        message_type, direction, accepted.message_id, news.verdict, news.reason, news.audit_index,
        _ms_since(started),
    )  # fmt: skip


async def _submitters(dev: DevExchange, country: str) -> dict[str, SubmissionClient]:
    """One connection per ministry of `country` that sends in the demo, each as its own user."""
    clients = {}
    for sender in sorted({sender for _, sender, _ in ROUTES[country]}):
        broker = dev.brokers[country]
        user = broker.submitter_user(sender)
        url = broker.uri_for(user=user, password=dev.passwords[user])
        clients[sender] = await SubmissionClient.connect(url=url, user=user, country=country)
    return clients


async def run_demo(
    *,
    workdir: Path,
    console: Console,
    keep: bool = False,
    vhost_prefix: str | None = None,
    admin: RabbitAdmin | None = None,
) -> bool:
    """The whole demo in vhosts `<prefix>tj`/`<prefix>ru` (default prefix `demo-<random>-`), which it
    deletes at the end with its users unless `keep`. It touches nothing else on the node."""
    if not _rabbit_listening():
        raise TransportError(
            Reason.TRANSPORT_UNAVAILABLE,
            "RabbitMQ is not listening on 127.0.0.1:5672. Install and start it with "
            "`apt-get install -y rabbitmq-server && rabbitmq-server -detached` "
            "(scripts/demo.sh does this for you).",
        )
    from broker.exchange.devkit import provision_dev_exchange, remove_dev_exchange  # noqa: PLC0415 - needs the broker

    prefix = vhost_prefix or f"demo-{secrets.token_hex(3)}-"
    admin = admin or RabbitAdmin()
    shutil.rmtree(workdir, ignore_errors=True)
    vhosts = ", ".join(f"{prefix}{country.lower()}" for country in DEMO_COUNTRIES)
    console.print(
        f"[bold]1.[/bold] dev PKI for TJ, RU and UZ, topology (vhosts {vhosts}, their users, shovels "
        f"between TJ and each peer) in {workdir}; the TJ-UZ plan renewed for the demo"
    )
    try:
        dev = await provision_dev_exchange(
            workdir,
            vhost_prefix=prefix,
            admin=admin,
            agreements=["tj-ru-2004", str(_renewed_plan(workdir))],
            resend_check_interval_s=1.0,
        )
        outcomes, alerts = await _exchange(dev, console)
        return _summary(outcomes, alerts, console=console, workdir=workdir)
    finally:
        if keep:
            console.print(f"kept vhosts {vhosts} and their users (--keep)")
        else:
            removed = await asyncio.to_thread(
                remove_dev_exchange, vhost_prefix=prefix, admin=admin, countries=DEMO_COUNTRIES
            )
            console.print(f"removed what the demo made: {len(removed)} vhosts and users named {prefix}*")


def _renewed_plan(workdir: Path) -> Path:
    """The demo's copy of the TJ-UZ plan with its stand-in renewal (`DEMO_RENEWAL`)."""
    path = workdir / "agreements" / "tj-uz-2021.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped = resources.files("broker.core.agreements").joinpath("tj-uz-2021.toml").read_text("utf-8")
    path.write_text(shipped + DEMO_RENEWAL, encoding="utf-8")
    return path


async def _exchange(dev: DevExchange, console: Console) -> tuple[list[Outcome], list[Alert]]:
    gateways = {country: await gateway_from_settings(dev.settings[country]) for country in DEMO_COUNTRIES}
    consulate_transport = await RabbitTransport.connect(url=dev.gateway_url("TJ"), name="demo-consulate")
    submitters: dict[str, SubmissionClient] = {}
    try:
        subscription = Subscription(
            transport=consulate_transport,
            agreement=dev.agreement,
            trust=dev.keystore.trust_store(dev.agreement.countries),
            authority_id=CONSULATE,
            types=CONSULATE_TYPES,
            citizenship="TJ",
            decryptor=dev.keystore.decryptor(CONSULATE),
        )
        await subscription.declare()
        for gateway in gateways.values():
            await gateway.start()
        submitters = await _submitters(dev, "RU")
        console.print(
            "[bold]2.[/bold] gateways TJ-GW (peers RU, UZ), RU-GW and UZ-GW running; consulate subscribed"
        )
        console.print(
            "[bold]3.[/bold] one message of each type each way, waiting for receipts: TJ ministries "
            "through the Python API of an embedded gateway, RU ministries submitting to the running RU "
            "gateway as their own RabbitMQ users (what `broker send` does)"
        )
        sends = [
            _send_timed(gateways["TJ"], message_type, sender, recipient)
            for message_type, sender, recipient in ROUTES["TJ"]
        ]
        sends += [
            _submit_timed(submitters[sender], message_type, sender, recipient)
            for message_type, sender, recipient in ROUTES["RU"]
        ]
        outcomes = list(await asyncio.gather(*sends))
        console.print(
            "[bold]4.[/bold] the TJ-UZ plan (items 5, 7): the legislation change to Uzbekistan too; a death "
            "notice only to Russia (the plan does not cover it: TJ's gateway refuses to send it)"
        )
        outcomes += await asyncio.gather(
            *(_send_timed(gateways["TJ"], t, sender, to, expected) for t, sender, to, expected in SECOND_PEER)
        )
        alerts = await subscription.collect(len(CONSULATE_TYPES), timeout_s=30)
    finally:
        for client in submitters.values():
            await client.close()
        for gateway in gateways.values():
            await gateway.close()
        await consulate_transport.close()
    return outcomes, alerts


def _summary(outcomes: list[Outcome], alerts: list[Alert], *, console: Console, workdir: Path) -> bool:
    table = Table(title="Exchange summary")
    for column in ("type", "direction", "verdict", "receipt latency", "receiver audit index", "message id"):
        table.add_column(column)
    all_accepted = True
    for outcome in outcomes:
        verdict = outcome.verdict or f"[red]{escape(outcome.error or '')}[/red]"
        if not outcome.as_expected:
            all_accepted = False
        table.add_row(
            outcome.message_type,
            outcome.direction,
            verdict if outcome.reason is None else f"{verdict} ({outcome.reason})",
            f"{outcome.latency_ms:.0f} ms" if outcome.verdict and outcome.message_id else "-",
            str(outcome.audit_index) if outcome.verdict and outcome.message_id else "-",
            str(outcome.message_id) if outcome.message_id else "-",
        )
    console.print(table)
    console.print(f"[bold]{CONSULATE}[/bold] received {len(alerts)} alert(s):")
    for alert in alerts:
        console.print(f"  • {alert.headline()}")
    ok = all_accepted and len(alerts) == len(CONSULATE_TYPES)
    console.print(
        "[green]every receipt accepted, the death notice to UZ refused; the consulate got its alerts[/green]"
        if ok
        else "[red]the exchange did not complete[/red]"
    )
    console.print(
        f"Trail of a message: broker status <message id> --country RU --config {workdir}/ru/gateway.toml"
    )
    console.print(
        f"Evidence about the sample worker, sealed notices opened with TJ's auditor key: "
        f"{shlex.join(bundle_command(workdir))}"
    )
    return ok


def bundle_command(workdir: Path, out: Path = Path("worker.zip")) -> list[str]:
    """`broker audit bundle` on the demo's Tajik log, opening sealed payloads as TJ-AUDITOR."""
    worker = sample_payloads()["worker.death"]
    assert isinstance(worker, WorkerDeath)  # the catalogue's class for this type
    return [
        "broker", "audit", "bundle", "--worker", worker.worker.identity_document.number,
        "--store", str(workdir / "tj" / "audit.sqlite"), "--keys", str(workdir / "keys"),
        "--vault", str(workdir / "tj" / VAULT_FILE),
        "--key", str(KeyLayout(workdir / "keys").encryption_dir(AUDITOR)), "--out", str(out),
    ]  # fmt: skip


def demo(
    workdir: Annotated[Path, typer.Option(help="where keys and state of the demo live")] = Path("var/demo"),
    keep: Annotated[
        bool, typer.Option("--keep", help="leave the demo's vhosts and users on RabbitMQ when it ends")
    ] = False,
) -> None:
    """TJ's exchange with RU and UZ on the local RabbitMQ, in vhosts of its own it removes after."""
    configure_logging("console", level=30)
    ok = run(lambda: run_demo(workdir=workdir, console=console, keep=keep))
    raise typer.Exit(0 if ok else 1)
