"""`broker demo`, the README's main command, against the local RabbitMQ, beside other exchanges.

It must end with every receipt accepted, and `broker status <id>` must then show the trail of a
message it sent. It works in vhosts and users of its own prefix and removes them at the end: the
session's exchange on the same node (and any operator's `tj`/`ru`) is never touched. Without
RabbitMQ the demo raises, so this test fails rather than skips.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import Mapping
from pathlib import Path

import pytest
from rich.console import Console
from structlog.testing import capture_logs
from typer.testing import CliRunner

from broker.cli.app import app
from broker.cli.demo import ROUTES, run_demo
from broker.exchange.devkit import DevExchange
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import BrokerPlan
from broker.exchange.transport import RabbitTransport

pytestmark = pytest.mark.rabbitmq

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


def test_demo_ends_with_every_receipt_accepted_and_status_shows_the_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_exchange: DevExchange
) -> None:
    workdir = tmp_path / "demo"
    printed = io.StringIO()
    prefix = f"demo-{secrets.token_hex(3)}-"
    admin = RecordingAdmin()
    # Wide enough that no cell is cut, so message ids print whole.
    ok = asyncio.run(
        run_demo(workdir=workdir, console=Console(file=printed, width=220), vhost_prefix=prefix, admin=admin)
    )
    output = printed.getvalue()
    assert ok, output

    # Its own names only, all of them gone again; the session's exchange on the node untouched.
    assert admin.touched
    assert [name for name in admin.touched if not name.startswith(prefix)] == []
    assert [vhost for vhost in admin.vhosts() if vhost.startswith(prefix)] == []
    assert [user for user in admin.users() if user.startswith(prefix)] == []
    assert {broker.vhost for broker in dev_exchange.brokers.values()} <= admin.vhosts()
    asyncio.run(still_logs_in(dev_exchange))
    assert f"removed what the demo made: 10 vhosts and users named {prefix}*" in output

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
