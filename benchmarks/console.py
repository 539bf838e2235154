"""Console pages with 100,000 messages in the store: how long each page takes to render.

Builds, in a temporary state folder, what a year of Tajikistan's gateway would hold: an outbox of
`--messages` sent messages spread over two days (every type and outcome), an audit log of as many
received messages plus checkpoints signed every 10,000 entries, a share of them death notices and
permit cancellations (sealed; the consulate's page opens one page of them with the key vault's
wraps), and the key store. Then it serves the API and console for real (uvicorn) and times each
page over HTTP from a client on the same machine, after one warm-up visit (the consulate's alert
index catches up with the log on the first visit, which is reported on its own).

Run: `python -m benchmarks.console --messages 100000 --json console.json`. RabbitMQ on
127.0.0.1 (guest) is asked for queue depths by the overview; the figures do not need it running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from broker.api.server import serving
from broker.audit.checkpoint import CheckpointBody, sign_checkpoint
from broker.audit.entry import EntryDraft, EntryKind
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.agreement import load_agreement
from broker.core.catalogue import sample_payloads
from broker.core.ids import uuid7
from broker.core.personal import encode_key_header, new_data_key, wrap_data_key
from broker.core.sealing import seal
from broker.state.api_tokens import TokenFile
from broker.state.key_vault import VAULT_FILE, KeyVault
from broker.state.keystore import KeyStore
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings

TYPES = ("legislation.change", "employer.permit", "labour_market.report", "recruitment_agency.license")
OUTCOMES = ("receipted",) * 90 + ("rejected",) * 4 + ("confirmed",) * 5 + ("sent",)
REAL_ALERTS = 120  # sealed, opened from the log on the consulate's pages (more than two pages of 50)
ALERT_SHARE = 0.2  # of the log's received entries: death notices and cancellations
CHECKPOINT_EVERY = 10_000
BATCH = 2048
PAGE_REPEATS = 20


def _keys(root: Path, now: datetime) -> KeyStore:
    agreement = load_agreement()
    store = KeyStore(root=root, crl_validity_days=366)
    for country in agreement.countries:
        store.init_country(country, now=now - timedelta(days=1))
    for authority in agreement.authorities:
        store.issue(authority.id, authority.country, now=now - timedelta(days=1), display_name=authority.name)
    store.issue_encryption("TJ-MOL", now=now - timedelta(days=1))
    return store


def _outbox(path: Path, count: int, now: datetime, sample: bytes) -> None:
    Outbox.open(path).close()  # the gateway's schema, indexes included
    rng = random.Random(7)
    db = sqlite3.connect(path)
    rows = []
    for _ in range(count):
        sent = now - timedelta(seconds=rng.uniform(0, 48 * 3600))
        state = rng.choice(OUTCOMES)
        rows.append((
            str(uuid7()), rng.choice(TYPES), "RU-MINTRUD", sample, "0" * 64, state, sent.isoformat(),
            (sent + timedelta(hours=4)).isoformat(), 1, "signature.invalid" if state == "rejected" else None,
            (sent + timedelta(seconds=2)).isoformat() if state in ("receipted", "rejected") else None,
        ))  # fmt: skip
    db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


async def _log_and_vault(state: Path, keystore: KeyStore, count: int, now: datetime) -> None:
    """`count` received entries (the real alerts among them) and a signed checkpoint every 10,000."""
    signer = keystore.signer("RU-MVD", at=now)
    gateway = keystore.signer("TJ-GW", at=now)
    certificate = keystore.encryption_certificates("TJ-MOL")[-1]
    vault = KeyVault.open(state / VAULT_FILE)
    real: dict[int, tuple[UUID, bytes, str]] = {}
    spots = random.Random(11).sample(range(count), REAL_ALERTS)
    for position in spots:
        message_type = "worker.death" if position % 2 else "work_permit.cancellation"
        message_id, data_key = uuid7(), new_data_key()
        sealed = seal(
            sample_payloads()[message_type], sender="RU-MVD", recipient="TJ-MOL", signer=signer,
            created_at=now - timedelta(hours=1), message_id=message_id, data_key=data_key,
        )  # fmt: skip
        header = encode_key_header([wrap_data_key(data_key, message_id=message_id, certificate=certificate)])
        await vault.put(message_id, header, at=now)
        real[position] = (message_id, sealed.raw, message_type)
    vault.close()
    store = await SqliteAuditStore.open(state / "audit.sqlite")
    rng = random.Random(13)
    try:
        drafts: list[EntryDraft] = []
        for position in range(count):
            if position in real:
                message_id, raw, message_type = real[position]
            else:
                message_id = uuid7()
                alert = rng.random() < ALERT_SHARE
                message_type = (
                    rng.choice(("worker.death", "work_permit.cancellation")) if alert else rng.choice(TYPES)
                )
                raw = b'{"filler":true}'  # not an envelope: opened, it is "unreadable" and no one's alert
            drafts.append(
                EntryDraft(kind=EntryKind.RECEIVED, time=now - timedelta(seconds=count - position),
                           message_id=message_id, message_type=message_type, peer="RU-MVD", envelope=raw,
                           verdict="accepted")
            )  # fmt: skip
            if len(drafts) >= BATCH or position == count - 1:
                await store.append(drafts)
                drafts = []
            size = await store.size() if not drafts else 0
            if size and size % CHECKPOINT_EVERY < BATCH and (size // CHECKPOINT_EVERY) and not drafts:
                body = CheckpointBody(
                    origin="TJ-GW", tree_size=size, root_hash=await store.root(size), time=now
                )
                signed = sign_checkpoint(body, signer=gateway)
                await store.append([
                    EntryDraft(kind=EntryKind.CHECKPOINT, time=now, message_id=None, message_type=None,
                               peer=None, envelope=signed.to_bytes())
                ])  # fmt: skip
        size = await store.size()
        body = CheckpointBody(origin="TJ-GW", tree_size=size, root_hash=await store.root(size), time=now)
        await store.append([
            EntryDraft(kind=EntryKind.CHECKPOINT, time=now, message_id=None, message_type=None, peer=None,
                       envelope=sign_checkpoint(body, signer=gateway).to_bytes())
        ])  # fmt: skip
    finally:
        await store.close()


async def _time(client: httpx.AsyncClient, path: str, token: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return elapsed, len(response.content)


async def measure(messages: int, workdir: Path) -> dict[str, Any]:
    now = datetime.now(UTC)
    built = time.perf_counter()
    keystore = _keys(workdir / "keys", now)
    settings = ExchangeSettings.load(
        None, country="TJ", state_dir=workdir / "state", keys_dir=workdir / "keys",
        amqp_url="amqp://guest:guest@127.0.0.1:5672/", api_address="127.0.0.1",
    )  # fmt: skip
    state = settings.country_state_dir
    state.mkdir(parents=True, exist_ok=True)
    sample = seal(sample_payloads()["employer.permit"], sender="TJ-MOL", recipient="RU-MINTRUD",
                  signer=keystore.signer("TJ-MOL", at=now), created_at=now).raw  # fmt: skip
    _outbox(state / "outbox.sqlite", messages, now, sample)
    await _log_and_vault(state, keystore, messages, now)
    build_s = time.perf_counter() - built
    tokens = TokenFile(settings.api_tokens_path)
    token = {who: tokens.issue(who, now=now)[0] for who in ("TJ-GW", "TJ-AUDITOR", "TJ-CONSULATE-MOSCOW")}
    some_id = (
        sqlite3.connect(state / "outbox.sqlite")
        .execute("SELECT message_id FROM outbox LIMIT 1")
        .fetchone()[0]
    )
    pages = {
        "operator_overview": ("/console/operator", "TJ-GW"),
        "operator_messages": ("/console/operator/messages", "TJ-GW"),
        "operator_messages_filtered": (
            "/console/operator/messages?type=employer.permit&state=rejected&since="
            f"{(now - timedelta(days=1)).date().isoformat()}", "TJ-GW"),
        "operator_message": (f"/console/operator/messages/{some_id}", "TJ-GW"),
        "operator_keys": ("/console/operator/keys", "TJ-GW"),
        "auditor_checkpoints": ("/console/auditor", "TJ-AUDITOR"),
        "consulate_alerts": ("/console/consulate", "TJ-CONSULATE-MOSCOW"),
    }  # fmt: skip
    figures: dict[str, Any] = {"messages": messages, "build_s": round(build_s, 1), "pages": {}}
    async with (
        serving(settings, port=0) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client,
    ):
        first, _ = await _time(client, "/console/consulate", token["TJ-CONSULATE-MOSCOW"])
        figures["consulate_first_visit_ms"] = round(first, 1)  # the alert index catching up with the log
        for name, (path, who) in pages.items():
            await _time(client, path, token[who])  # warm: connections, template compilation
            times = [(await _time(client, path, token[who]))[0] for _ in range(PAGE_REPEATS)]
            figures["pages"][name] = {
                "p50_ms": round(statistics.median(times), 1),
                "max_ms": round(max(times), 1),
            }
    figures["slowest_p50_ms"] = max(page["p50_ms"] for page in figures["pages"].values())
    figures["slowest_max_ms"] = max(page["max_ms"] for page in figures["pages"].values())
    figures["all_under_200_ms_p50"] = figures["slowest_p50_ms"] < 200
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the outbox and in the log")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as workdir:
        figures = asyncio.run(measure(args.messages, Path(workdir)))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
