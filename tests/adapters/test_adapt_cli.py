"""`broker adapt <cc> import|watch` as an operator runs them beside the running gateways.

Like `broker send`, they used to embed a second gateway, which consumed the country's `inbound` and
`submit` queues next to the running one. They now hand each message to the running gateway as the
sending ministry's own RabbitMQ user (`broker.exchange.submitting_sender`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from broker.audit import EntryKind
from broker.exchange.devkit import write_settings_file
from broker.exchange.gateway import Gateway
from tests.cli.test_error_path import BROKER

if TYPE_CHECKING:
    from tests.support.exchange import ExchangeHarness

pytestmark = pytest.mark.rabbitmq

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
PROCESS_LIMIT_S = 120.0  # a bound on a hang, never a measure of speed


async def broker_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BROKER), *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), PROCESS_LIMIT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def settings_file(exchange: ExchangeHarness, country: str, folder: Path) -> Path:
    """The country's settings as this test's gateways use them, with the passwords topology apply keeps."""
    secrets = folder / "rabbitmq-secrets.json"
    secrets.write_text(json.dumps(exchange.dev.passwords), encoding="utf-8")
    secrets.chmod(0o600)  # as `topology apply` keeps it: a gateway refuses one others may read
    path = folder / f"{country.lower()}.toml"
    write_settings_file(path, exchange.settings(country, secrets_file=secrets))
    return path


async def test_a_russian_document_is_imported_through_the_running_gateway(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    config = settings_file(exchange, "RU", tmp_path)
    document = ADAPTERS / "ru" / "samples" / "worker.death.xml"

    code, out, err = await broker_cli("adapt", "ru", "import", str(document), "--to", "TJ-MOL",
                                      "--config", str(config), cwd=tmp_path)  # fmt: skip

    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("sent worker.death ")]
    message_id = line.split()[-1]
    # Sealed and sent by the gateway that runs, and receipted by Tajikistan's (the import waits for it).
    kinds = [entry.kind for entry in await gateways["RU"].trail(UUID(message_id))]
    assert EntryKind.SENT in kinds
    assert EntryKind.RECEIPT_RECEIVED in kinds


async def test_a_tajik_notice_dropped_in_a_folder_goes_through_the_running_gateway(
    exchange: ExchangeHarness, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    config = settings_file(exchange, "TJ", tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    notice = ADAPTERS / "tj" / "samples" / "notice-legislation.change.json"
    (inbox / notice.name).write_bytes(notice.read_bytes())

    code, out, err = await broker_cli("adapt", "tj", "watch", str(inbox), "--to", "RU-MINTRUD", "--once",
                                      "--config", str(config), cwd=tmp_path)  # fmt: skip

    assert code == 0, err
    assert f"{notice.name}: done" in out
    assert (inbox / "done" / notice.name).exists()
    sent = [
        entry
        async for entry in gateways["TJ"].audit.entries()
        if entry.kind == EntryKind.SENT and entry.message_type == "legislation.change"
    ]
    assert len(sent) == 1  # sealed and sent by the gateway that runs
