"""`broker demo`: a full exchange between Tajikistan and Russia on the local RabbitMQ.

Creates a dev PKI for both countries, applies the topology (vhosts `tj` and `ru`, shovels both
ways), starts both gateways in this process, lets the Tajik consulate in Moscow subscribe, sends one
message of each type each way, waits for every receipt and prints what happened.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.cli.common import run
from broker.cli.logs import configure_logging
from broker.cli.output import console
from broker.core.catalogue import sample_payloads
from broker.core.catalogue.death import WorkerDeath
from broker.core.errors import ExchangeError, Reason, TransportError
from broker.exchange.gateway import Gateway, SendResult, gateway_from_settings
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
CONSULATE = "TJ-CONSULATE-MOSCOW"
CONSULATE_TYPES = ("worker.death", "work_permit.cancellation")
AUDITOR = "TJ-AUDITOR"


@dataclass(frozen=True)
class Outcome:
    message_type: str
    direction: str
    result: SendResult | None
    latency_ms: float
    error: str | None


def _rabbit_listening(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def _send_timed(gateway: Gateway, message_type: str, sender: str, recipient: str) -> Outcome:
    direction = f"{gateway.country} → {gateway.peer_country}"
    payload = sample_payloads()[message_type]
    started = time.perf_counter()
    try:
        result = await gateway.send(
            payload, to=recipient, sender=sender, wait_receipt=True, receipt_timeout_s=60
        )
    except (ExchangeError, TimeoutError) as error:
        return Outcome(message_type, direction, None, 0.0, str(error) or "no receipt within 60 s")
    return Outcome(message_type, direction, result, (time.perf_counter() - started) * 1000, None)


async def run_demo(*, workdir: Path, console: Console) -> bool:
    if not _rabbit_listening():
        raise TransportError(
            Reason.TRANSPORT_UNAVAILABLE,
            "RabbitMQ is not listening on 127.0.0.1:5672. Install and start it with "
            "`apt-get install -y rabbitmq-server && rabbitmq-server -detached` "
            "(scripts/demo.sh does this for you).",
        )
    from broker.exchange.devkit import provision_dev_exchange  # noqa: PLC0415 - needs the broker

    shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"[bold]1.[/bold] dev PKI for TJ and RU, topology (vhosts tj, ru, shovels) in {workdir}")
    dev = await provision_dev_exchange(workdir, resend_check_interval_s=1.0)
    gateways = {country: await gateway_from_settings(dev.settings[country]) for country in ("TJ", "RU")}
    consulate_transport = await RabbitTransport.connect(url=dev.gateway_url("TJ"), name="demo-consulate")
    alerts: list[Alert] = []
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
        await consulate_transport.purge(subscription.queue)
        for gateway in gateways.values():
            await gateway.start()
        console.print("[bold]2.[/bold] gateways TJ-GW and RU-GW running; consulate subscribed")

        console.print("[bold]3.[/bold] sending one message of each type each way, waiting for receipts")
        outcomes = await asyncio.gather(
            *(
                _send_timed(gateways[country], message_type, sender, recipient)
                for country, routes in ROUTES.items()
                for message_type, sender, recipient in routes
            )
        )
        alerts = await subscription.collect(len(CONSULATE_TYPES), timeout_s=30)
    finally:
        for gateway in gateways.values():
            await gateway.close()
        await consulate_transport.close()

    table = Table(title="Exchange summary")
    for column in ("type", "direction", "verdict", "receipt latency", "receiver audit index", "message id"):
        table.add_column(column)
    all_accepted = True
    for outcome in outcomes:
        receipt = outcome.result.receipt if outcome.result else None
        verdict = receipt.verdict if receipt else f"[red]{outcome.error}[/red]"
        if receipt is None or receipt.verdict != "accepted":
            all_accepted = False
        table.add_row(
            outcome.message_type,
            outcome.direction,
            str(verdict) if receipt is None or receipt.reason is None else f"{verdict} ({receipt.reason})",
            f"{outcome.latency_ms:.0f} ms" if receipt else "-",
            str(receipt.audit_index) if receipt else "-",
            str(outcome.result.message_id) if outcome.result else "-",
        )
    console.print(table)
    console.print(f"[bold]{CONSULATE}[/bold] received {len(alerts)} alert(s):")
    for alert in alerts:
        console.print(f"  • {alert.headline()}")
    ok = all_accepted and len(alerts) == len(CONSULATE_TYPES)
    console.print(
        "[green]every receipt accepted; the consulate got its alerts[/green]"
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
) -> None:
    """A full exchange between TJ and RU on the local RabbitMQ."""
    configure_logging("console", level=30)
    ok = run(lambda: run_demo(workdir=workdir, console=console))
    raise typer.Exit(0 if ok else 1)
