"""`broker demo`, the README's main command, against the local RabbitMQ, beside other exchanges.

It must end with every receipt accepted, and `broker status <id>` must then show the trail of a
message it sent. It works in vhosts and users of its own prefix and removes them at the end: the
session's exchange on the same node (and any operator's `tj`/`ru`) is never touched. Without
RabbitMQ the demo raises, so this test fails rather than skips.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import shlex
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from rich.console import Console
from structlog.testing import capture_logs
from typer.testing import CliRunner

from broker.cli.app import app
from broker.cli.audit import audit_app
from broker.cli.demo import ROUTES, bundle_command, run_demo
from broker.core.canonical import canonical_bytes
from broker.core.catalogue import parse_payload, sample_payloads
from broker.exchange.devkit import DevExchange
from broker.exchange.plan import BrokerPlan
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.transport import RabbitTransport
from broker.state.key_vault import VAULT_FILE, KeyVault

pytestmark = pytest.mark.rabbitmq
runner = CliRunner()

# Columns of the summary table: type, direction, verdict, receipt latency, audit index, message id.
COLUMNS = 6


def summary_rows(printed: str) -> list[list[str]]:
    """Cells of the body rows of the demo's summary table (rich draws them between `│`)."""
    rows = []
    for line in printed.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if line.lstrip().startswith("│") and len(cells) == COLUMNS and cells[0] != "type":
            rows.append(cells)
    return rows


class RecordingAdmin(RabbitAdmin):
    """A real admin that notes every vhost and user it is asked to set up or delete."""

    def __init__(self) -> None:
        super().__init__()
        self.touched: list[str] = []

    def provision(self, plan: BrokerPlan, passwords: Mapping[str, str]) -> list[str]:
        self.touched += [plan.vhost, *plan.users, *(permission.user for permission in plan.permissions)]
        return super().provision(plan, passwords)

    def start_shovels(
        self, plan: BrokerPlan, passwords: Mapping[str, str], *, timeout: float = 30.0
    ) -> list[str]:
        self.touched += [plan.vhost, *(user for shovel in plan.shovels for user in shovel.users)]
        return super().start_shovels(plan, passwords, timeout=timeout)

    def delete_vhost(self, name: str) -> bool:
        self.touched.append(name)
        return super().delete_vhost(name)

    def delete_user(self, name: str) -> bool:
        self.touched.append(name)
        return super().delete_user(name)


async def still_logs_in(dev: DevExchange) -> None:
    """Every user of the exchange still logs in to its vhost with the password it was given."""
    for plan in dev.plans:
        for user in plan.users:
            if user.endswith("-link"):  # the peer's shovel user: no permission in its own vhost
                continue
            transport = await RabbitTransport.connect(
                url=plan.broker.uri_for(user=user, password=dev.passwords[user]), name="test-still-there"
            )
            await transport.close()


@dataclass(frozen=True)
class DemoRun:
    workdir: Path
    ok: bool
    output: str
    prefix: str
    admin: RecordingAdmin


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One run of the demo for the module's tests (it takes a while, and the tests only read it)."""
    workdir = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    prefix = f"demo-{secrets.token_hex(3)}-"
    admin = RecordingAdmin()
    # Wide enough that no cell is cut, so message ids print whole.
    ok = asyncio.run(
        run_demo(workdir=workdir, console=Console(file=printed, width=220), vhost_prefix=prefix, admin=admin)
    )
    return DemoRun(workdir=workdir, ok=ok, output=printed.getvalue(), prefix=prefix, admin=admin)


def test_demo_ends_with_every_receipt_accepted_and_status_shows_the_trail(
    demo_run: DemoRun, monkeypatch: pytest.MonkeyPatch, dev_exchange: DevExchange
) -> None:
    workdir, ok, output = demo_run.workdir, demo_run.ok, demo_run.output
    assert ok, output

    # Its own names only, all of them gone again; the session's exchange on the node untouched.
    prefix, admin = demo_run.prefix, demo_run.admin
    assert admin.touched
    assert [name for name in admin.touched if not name.startswith(prefix)] == []
    assert [vhost for vhost in admin.vhosts() if vhost.startswith(prefix)] == []
    assert [user for user in admin.users() if user.startswith(prefix)] == []
    assert {broker.vhost for broker in dev_exchange.brokers.values()} <= admin.vhosts()
    asyncio.run(still_logs_in(dev_exchange))
    # 2 vhosts; per country its gateway, shovel, the peer's link, 2 ministries and 3 subscribers.
    assert f"removed what the demo made: 18 vhosts and users named {prefix}*" in output

    rows = summary_rows(output)
    assert len(rows) == 12, output
    assert all(verdict == "accepted" for _, _, verdict, *_ in rows), output
    sent = {(message_type, direction) for message_type, direction, *_ in rows}
    assert sent == {
        (message_type, f"{country} → {'RU' if country == 'TJ' else 'TJ'}")
        for country, routes in ROUTES.items()
        for message_type, _, _ in routes
    }
    assert "TJ-CONSULATE-MOSCOW received 2 alert(s)" in output

    # The CLI would point logging at the stream CliRunner lends it; keep this process's logging as is.
    monkeypatch.setattr("broker.cli.common.configure_logging", lambda *_, **__: None)
    runner = CliRunner()
    for _, direction, _, _, _, message_id in rows:
        country = direction[:2]
        config = workdir / country.lower() / "gateway.toml"
        with capture_logs():
            result = runner.invoke(app, ["status", message_id, "--country", country, "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert "receipted" in result.output, result.output


# -- evidence about the sample worker from the demo's Tajik log ------------------------------------


def _sealed_ids(output: str) -> dict[str, str]:
    """Message id -> type of the demo's death notices and permit cancellations (both directions)."""
    return {
        message_id: message_type
        for message_type, _, _, _, _, message_id in summary_rows(output)
        if message_type in ("worker.death", "work_permit.cancellation")
    }


def _opened_members(bundle: Path) -> dict[str, dict[str, Any]]:
    with zipfile.ZipFile(bundle) as archive:
        return {
            info.filename.removeprefix("opened/").removesuffix(".json"): json.loads(archive.read(info))
            for info in archive.infolist()
            if info.filename.startswith("opened/")
        }


def test_demo_log_bundles_the_workers_sealed_notices_opened_with_the_auditors_key(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    assert demo_run.ok, demo_run.output
    sealed = _sealed_ids(demo_run.output)
    assert len(sealed) == 4  # a death notice and a cancellation each way, all about the sample worker
    out = tmp_path / "worker.zip"
    command = bundle_command(demo_run.workdir, out)
    assert shlex.join(bundle_command(demo_run.workdir)) in " ".join(
        demo_run.output.split()
    )  # the demo says how

    made = runner.invoke(audit_app, command[2:])
    assert made.exit_code == 0, made.output
    assert "4 of 4 sealed messages opened with the auditor's key name the worker" in made.output
    samples = sample_payloads()
    opened = _opened_members(out)
    assert {message_id: samples[t] for message_id, t in sealed.items()} == {
        message_id: parse_payload(sealed[message_id], 1, canonical_bytes(member["payload"]))
        for message_id, member in opened.items()
    }

    checked = runner.invoke(audit_app, ["check-bundle", str(out), "--keys", str(demo_run.workdir / "keys")])
    assert checked.exit_code == 0, checked.output
    assert "4 sealed payloads opened" in checked.output
    for message_id in sealed:
        assert f"opened {message_id}:" in checked.output


def test_demo_log_without_the_auditors_key_says_how_many_sealed_messages_were_not_searched(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    assert demo_run.ok, demo_run.output
    command = bundle_command(demo_run.workdir, tmp_path / "worker.zip")
    without_key = command[2 : command.index("--vault")] + command[command.index("--out") :]
    refused = runner.invoke(audit_app, without_key)
    assert refused.exit_code == 2, refused.output
    assert "4 sealed message(s) not searched" in refused.output
    assert not (tmp_path / "worker.zip").exists()


def test_demo_log_lists_a_crypto_shredded_notice_as_erased_with_its_date(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    assert demo_run.ok, demo_run.output
    sealed = _sealed_ids(demo_run.output)
    vault = tmp_path / VAULT_FILE
    shutil.copyfile(demo_run.workdir / "tj" / VAULT_FILE, vault)
    [death, *_] = [UUID(message_id) for message_id, t in sealed.items() if t == "worker.death"]
    erased_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    async def erase() -> None:
        copy = KeyVault.open(vault)
        try:
            assert await copy.destroy(death, at=erased_at)
        finally:
            copy.close()

    asyncio.run(erase())
    out = tmp_path / "worker.zip"
    command = bundle_command(demo_run.workdir, out)
    command[command.index("--vault") + 1] = str(vault)
    made = runner.invoke(audit_app, command[2:])
    assert made.exit_code == 0, made.output
    assert f"erased: sealed message {death}, data key destroyed {erased_at.isoformat()}" in made.output
    assert set(_opened_members(out)) == set(sealed) - {str(death)}
    checked = runner.invoke(audit_app, ["check-bundle", str(out), "--keys", str(demo_run.workdir / "keys")])
    assert checked.exit_code == 0, checked.output
    said = (
        f"erased (as the bundler states): sealed message {death}, data key destroyed {erased_at.isoformat()}"
    )
    assert said in checked.output


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("no vault", "--key needs --vault"),
        ("missing vault", "no key vault at"),
        ("signing key given", "is not an X25519 key"),
    ],
)
def test_demo_log_bundle_refuses_an_auditor_key_it_cannot_use(
    demo_run: DemoRun, tmp_path: Path, change: str, said: str
) -> None:
    command = bundle_command(demo_run.workdir, tmp_path / "worker.zip")[2:]
    vault = command.index("--vault")
    if change == "no vault":
        del command[vault : vault + 2]
    elif change == "missing vault":
        command[vault + 1] = str(tmp_path / "nowhere.sqlite")
    else:  # the auditor's signing key folder, not its key-agreement one
        command[command.index("--key") + 1] = command[command.index("--key") + 1].removesuffix("/encryption")
    refused = runner.invoke(audit_app, command)
    assert refused.exit_code == 2, refused.output
    assert "error [config.invalid]" in " ".join(refused.output.split()), refused.output
    assert said in " ".join(refused.output.split()), refused.output
    assert not (tmp_path / "worker.zip").exists()
