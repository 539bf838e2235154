"""The folder drop against whoever can write to its inbox (issue 21, items 2 and 3).

The inbox is a ministry's file share: its writer may plant symbolic links and FIFOs, swap a result
folder for a link while a file is being sent, or drop the next file under the same name. The
attacks run against a real key store in tmp_path: the peer trust store and the CRL must come out
untouched, nothing outside the inbox may be read or written, and no dropped file may be lost.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs
from typer.testing import CliRunner

from adapters.folder_drop import FolderDrop
from adapters.pipeline import import_bytes, load_adapter
from broker.cli.app import app
from broker.core.catalogue import Payload
from broker.core.errors import LocalError, Reason, VerificationError
from broker.core.pki import create_ca, issue_authority_certificate
from broker.state.keystore import KeyStore

RU_SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "ru" / "samples"
TJ_SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "tj" / "samples"
DOCUMENT = (RU_SAMPLES / "employer.permit.xml").read_bytes()
OTHER_DOCUMENT = (RU_SAMPLES / "worker.death.xml").read_bytes()


class Crash(BaseException):
    """The process dying (not an error of the file: nothing catches it)."""


class Sender:
    """Stands in for a gateway: remembers what it sent. `during` runs inside the first send, once
    the message is out; with `crash_at`, that send (counted from 1) dies before sending."""

    def __init__(self, *, crash_at: int | None = None) -> None:
        self.sent: list[Payload] = []
        self.during: list[Callable[[], None]] = []
        self._calls = 0
        self._crash_at = crash_at

    async def send(
        self, payload: Payload, *, to: str, sender: str | None = None, wait_receipt: bool = False
    ) -> Sender.Result:
        self._calls += 1
        if self._calls == self._crash_at:
            raise Crash
        self.sent.append(payload)
        while self.during:
            self.during.pop(0)()
        return Sender.Result()

    class Result:
        message_id = uuid.uuid4()


def drop(
    inbox: Path,
    sender: Sender,
    *,
    country: str = "RU",
    state: Path | None = None,
    done: Path | None = None,
    failed: Path | None = None,
    work: Path | None = None,
    poll_interval_s: float = 2.0,
) -> FolderDrop:
    """The folder drop as `broker adapt <country> watch` runs it, sending through `sender`."""
    adapter = load_adapter(country, state_dir=state or inbox.parent / "state")
    to, authority = ("TJ-MOL", "RU-MVD") if country == "RU" else ("RU-MVD", None)

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=adapter, gateway=sender, to=to, sender=authority)

    return FolderDrop(
        inbox=inbox, handle=handle, done=done, failed=failed, work=work, poll_interval_s=poll_interval_s
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes (links as their target path)."""
    found: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


class Keys:
    """Tajikistan's key store with Russia's bundle imported; RU-MINTRUD's key revoked by Russia."""

    def __init__(self, root: Path, now: datetime) -> None:
        self.now = now
        russia = KeyStore(root=root / "ru-keys")
        russia.init_country("RU", now=now)
        russia.issue("RU-MINTRUD", "RU", now=now)
        self.revoked_chain = russia.signer("RU-MINTRUD", at=now + timedelta(minutes=1)).chain
        russia.revoke("RU-MINTRUD", now=now + timedelta(minutes=2))
        self.store = KeyStore(root=root / "tj-keys")
        self.store.init_country("TJ", now=now)
        self.store.import_bundle("RU", russia.export_bundle("RU"))
        self.peer_dir = self.store.root / "peers" / "RU"
        self.before = snapshot(self.store.root)
        # The attacker's own "RU" CA and an RU-MVD certificate under it.
        attacker_key, attacker_ca = create_ca(
            country="RU", not_before=now, not_after=now + timedelta(days=30)
        )
        self.attacker_ca_pem = attacker_ca.public_bytes(serialization.Encoding.PEM)
        leaf = issue_authority_certificate(
            ca_key=attacker_key,
            ca_cert=attacker_ca,
            authority_id="RU-MVD",
            country="RU",
            public_key=Ed25519PrivateKey.generate().public_key(),
            not_before=now,
            not_after=now + timedelta(days=30),
        )
        self.attacker_chain = (leaf, attacker_ca)

    def assert_untouched(self) -> None:
        assert snapshot(self.store.root) == self.before
        # As a restarted gateway reads it: the attacker's RU-MVD is not trusted, the revoked key stays revoked.
        trust = KeyStore(root=self.store.root).trust_store(["RU", "TJ"])
        later = self.now + timedelta(hours=1)
        with pytest.raises(VerificationError) as untrusted:
            trust.verify_signer(self.attacker_chain, at=later)
        assert untrusted.value.reason is Reason.CERT_UNTRUSTED
        with pytest.raises(VerificationError) as revoked:
            trust.verify_signer(self.revoked_chain, at=later)
        assert revoked.value.reason is Reason.CERT_REVOKED


@pytest.fixture
def keys(tmp_path: Path, pki_now: datetime) -> Keys:
    return Keys(tmp_path, pki_now)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


# -- item 2: nothing outside the inbox is written -------------------------------------------------


@pytest.mark.parametrize(("folder", "content"), [("failed", "attacker CA"), ("done", "document")])
async def test_a_result_folder_linked_into_the_peer_trust_store_plants_no_ca(
    keys: Keys, inbox: Path, folder: str, content: str
) -> None:
    (inbox / folder).symlink_to(keys.peer_dir, target_is_directory=True)
    data = keys.attacker_ca_pem if content == "attacker CA" else DOCUMENT
    (inbox / "ca-2.cert.pem").write_bytes(data)
    sender = Sender()

    with pytest.raises(LocalError) as refused:
        await drop(inbox, sender).process_once()

    assert refused.value.reason is Reason.ADAPTER_UNSAFE_PATH
    assert f"{inbox / folder}" in refused.value.diagnostic
    keys.assert_untouched()
    assert sender.sent == []  # nothing is taken while a result folder is a link
    assert (inbox / "ca-2.cert.pem").read_bytes() == data


async def test_a_reason_file_linked_to_the_peer_crl_leaves_the_crl_alone(keys: Keys, inbox: Path) -> None:
    failed = inbox / "failed"
    failed.mkdir()
    (failed / "x.reason.txt").symlink_to(keys.peer_dir / "crl.pem")
    (inbox / "x").write_bytes(b"not a document")

    [outcome] = await drop(inbox, Sender()).process_once()

    keys.assert_untouched()
    assert outcome.error is not None
    assert outcome.error.reason is Reason.MESSAGE_MALFORMED
    assert outcome.moved_to is not None
    assert outcome.moved_to.parent == failed
    assert outcome.moved_to.name != "x"  # the planted name is not used; the time is added instead
    assert outcome.moved_to.read_bytes() == b"not a document"
    reason = outcome.moved_to.with_name(f"{outcome.moved_to.name}.reason.txt").read_text("utf-8")
    assert "reason: message.malformed" in reason
    assert os.readlink(failed / "x.reason.txt") == str(keys.peer_dir / "crl.pem")  # left as it was


async def test_a_result_folder_swapped_for_a_link_during_the_send_is_not_followed(
    keys: Keys, inbox: Path
) -> None:
    """The check-then-use race: `failed/` is a real folder when the poll starts, a link when the
    refused file is moved. The move goes by the descriptor opened at the start."""
    failed = inbox / "failed"
    failed.mkdir()
    (inbox / "ca-2.cert.pem").write_bytes(keys.attacker_ca_pem)
    sender = Sender()
    folder_drop = drop(inbox, sender)

    async def swap_then_refuse(name: str, data: bytes) -> None:
        failed.rename(inbox / "failed.old")
        failed.symlink_to(keys.peer_dir, target_is_directory=True)
        raise LocalError(Reason.ADAPTER_INVALID, f"{name}: not a document")

    folder_drop._handle = swap_then_refuse

    [outcome] = await folder_drop.process_once()

    keys.assert_untouched()
    assert outcome.error is not None
    assert outcome.error.reason is Reason.ADAPTER_INVALID
    assert (inbox / "failed.old" / "ca-2.cert.pem").read_bytes() == keys.attacker_ca_pem
    assert "reason: adapter.invalid" in (inbox / "failed.old" / "ca-2.cert.pem.reason.txt").read_text("utf-8")


async def test_an_inbox_entry_linked_outside_is_neither_read_nor_sent_and_its_target_is_untouched(
    keys: Keys, inbox: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "ministry-archive" / "permit.xml"  # readable by us, not meant to be sent
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(DOCUMENT)
    (inbox / "permit.xml").symlink_to(elsewhere)
    (inbox / "key.pem").symlink_to(keys.store.root / "TJ" / "ca" / "private" / "ca-1.key.pem")
    sender = Sender()
    folder_drop = drop(inbox, sender)

    with capture_logs() as logs:
        outcomes = await folder_drop.process_once()

    assert sender.sent == []
    assert {o.name: o.error.reason if o.error else None for o in outcomes} == {
        "permit.xml": Reason.ADAPTER_UNSAFE_PATH,
        "key.pem": Reason.ADAPTER_UNSAFE_PATH,
    }
    assert all(o.moved_to is None for o in outcomes)
    assert elsewhere.read_bytes() == DOCUMENT
    keys.assert_untouched()
    for name in ("permit.xml", "key.pem"):
        assert not (inbox / name).is_symlink()  # the link is removed, its target left alone
        assert not (folder_drop.work / name).is_symlink()
        reason = (inbox / "failed" / f"{name}.reason.txt").read_text("utf-8")
        assert "reason: adapter.unsafe_path" in reason
        assert "symbolic link" in reason
    events = [e for e in logs if e["event"] == "folder_drop.unsafe_entry"]
    assert {e["file"] for e in events} == {"permit.xml", "key.pem"}
    assert all(e["reason"] == "adapter.unsafe_path" for e in events)


async def test_a_fifo_in_the_inbox_is_refused_without_waiting_for_a_writer(inbox: Path) -> None:
    os.mkfifo(inbox / "pipe.xml")
    (inbox / "good.xml").write_bytes(DOCUMENT)
    sender = Sender()

    outcomes = await drop(inbox, sender).process_once()

    assert {o.name: o.error.reason if o.error else None for o in outcomes} == {
        "pipe.xml": Reason.ADAPTER_UNSAFE_PATH,
        "good.xml": None,
    }
    assert len(sender.sent) == 1
    assert "a FIFO" in (inbox / "failed" / "pipe.xml.reason.txt").read_text("utf-8")
    assert not (inbox / "pipe.xml").exists()


async def until(condition: Callable[[], object], *, what: str) -> None:
    """Wait for an event of the watch (the deadline only ends a hung test; it asserts no speed)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def test_a_running_watch_logs_a_refused_poll_and_carries_on_once_the_link_is_gone(
    keys: Keys, inbox: Path
) -> None:
    (inbox / "done").symlink_to(keys.peer_dir, target_is_directory=True)
    (inbox / "good.xml").write_bytes(DOCUMENT)
    sender = Sender()
    stop = asyncio.Event()
    with capture_logs() as logs:
        watching = asyncio.create_task(drop(inbox, sender, poll_interval_s=0.01).run(stop=stop))
        await until(
            lambda: any(e["event"] == "folder_drop.poll_refused" for e in logs), what="a refused poll"
        )
        assert sender.sent == []
        (inbox / "done").unlink()
        await until(lambda: sender.sent, what="the file to be sent")
        stop.set()
        await watching

    [refused, *_] = [e for e in logs if e["event"] == "folder_drop.poll_refused"]
    assert refused["reason"] == "adapter.unsafe_path"
    keys.assert_untouched()
    assert (inbox / "done" / "good.xml").read_bytes() == DOCUMENT


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than tmp_path (tmpfs), for moves that cannot be a rename."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        assert os.stat(folder).st_dev != os.stat(tmp_path).st_dev
        yield Path(folder)


async def test_result_folders_outside_the_inbox_even_on_another_file_system(
    inbox: Path, tmp_path: Path, other_file_system: Path
) -> None:
    done, failed = other_file_system / "done", tmp_path / "failed"
    (inbox / "good.xml").write_bytes(DOCUMENT)
    (inbox / "bad.xml").write_bytes(b"<payload")
    sender = Sender()

    await drop(inbox, sender, done=done, failed=failed).process_once()

    assert len(sender.sent) == 1
    assert (done / "good.xml").read_bytes() == DOCUMENT  # copied across, then removed
    assert (failed / "bad.xml").read_bytes() == b"<payload"
    assert "reason: message.malformed" in (failed / "bad.xml.reason.txt").read_text("utf-8")
    assert os.listdir(inbox) == [".folder-drop-work"]
    assert os.listdir(inbox / ".folder-drop-work") == []


async def test_a_result_folder_the_operator_names_may_not_be_a_link(inbox: Path, tmp_path: Path) -> None:
    (tmp_path / "real-done").mkdir()
    (tmp_path / "done").symlink_to(tmp_path / "real-done", target_is_directory=True)
    with pytest.raises(LocalError) as refused:
        drop(inbox, Sender(), done=tmp_path / "done").check_folders()
    assert refused.value.reason is Reason.ADAPTER_UNSAFE_PATH


async def test_a_work_folder_on_another_file_system_is_refused_at_start(
    inbox: Path, other_file_system: Path
) -> None:
    with pytest.raises(LocalError) as refused:
        drop(inbox, Sender(), work=other_file_system / "work").check_folders()
    assert refused.value.reason is Reason.CONFIG_INVALID
    assert "file system" in refused.value.diagnostic


async def test_the_work_folder_is_private(inbox: Path) -> None:
    folder_drop = drop(inbox, Sender())
    folder_drop.check_folders()
    assert stat.S_IMODE(folder_drop.work.stat().st_mode) == 0o700


# -- item 3: a file replaced while it is sent is not lost -----------------------------------------


async def test_the_next_file_dropped_under_the_same_name_during_a_send_is_kept_and_sent_next(
    inbox: Path,
) -> None:
    (inbox / "notice.xml").write_bytes(DOCUMENT)
    sender = Sender()

    def drop_the_next_one() -> None:
        # As docs/adapters.md tells the ministry system: write under a temporary name, then rename.
        (inbox / ".notice.xml.part").write_bytes(OTHER_DOCUMENT)
        (inbox / ".notice.xml.part").rename(inbox / "notice.xml")

    sender.during.append(drop_the_next_one)
    folder_drop = drop(inbox, sender)

    first = await folder_drop.process_once()
    assert [(o.name, o.error) for o in first] == [("notice.xml", None)]
    assert [p.MESSAGE_TYPE for p in sender.sent] == ["employer.permit"]
    assert (inbox / "done" / "notice.xml").read_bytes() == DOCUMENT  # what was sent, not its successor
    assert (inbox / "notice.xml").read_bytes() == OTHER_DOCUMENT  # waiting for the next poll

    second = await folder_drop.process_once()
    assert [(o.name, o.error) for o in second] == [("notice.xml", None)]
    assert [p.MESSAGE_TYPE for p in sender.sent] == ["employer.permit", "worker.death"]
    kept = sorted((inbox / "done" / name).read_bytes() for name in os.listdir(inbox / "done"))
    assert kept == sorted([DOCUMENT, OTHER_DOCUMENT])  # both kept, neither overwritten


async def test_a_file_left_in_the_work_folder_by_a_crash_after_its_send_is_sent_again_on_restart(
    inbox: Path,
) -> None:
    """A crash between sending and moving: the file is still in the work folder and goes again
    (at least once). A Russian document (or a Tajik notice) is sent a second time under a new message
    id; a Tajik registry export sends only what it had not sent (next test)."""
    (inbox / "permit.xml").write_bytes(DOCUMENT)
    sender = Sender()

    def crash() -> None:
        raise Crash

    sender.during.append(crash)  # the message is out; the process dies before the file is moved
    with pytest.raises(Crash):
        await drop(inbox, sender).process_once()
    restarted = drop(inbox, sender)
    assert (restarted.work / "permit.xml").read_bytes() == DOCUMENT
    assert not (inbox / "permit.xml").exists()

    [outcome] = await restarted.process_once()

    assert (outcome.name, outcome.error) == ("permit.xml", None)
    assert (inbox / "done" / "permit.xml").read_bytes() == DOCUMENT
    assert [p.MESSAGE_TYPE for p in sender.sent] == ["employer.permit", "employer.permit"]


async def test_a_registry_export_left_in_the_work_folder_sends_only_what_was_not_sent(
    inbox: Path, tmp_path: Path
) -> None:
    export = (TJ_SAMPLES / "agencies-export-1.csv").read_bytes()
    (inbox / "agencies.csv").write_bytes(export)
    sender = Sender(crash_at=2)  # dies sending the second of its three agencies
    state = tmp_path / "tj-state"
    with pytest.raises(Crash):
        await drop(inbox, sender, country="TJ", state=state).process_once()
    assert len(sender.sent) == 1

    [outcome] = await drop(inbox, sender, country="TJ", state=state).process_once()

    assert (outcome.name, outcome.error) == ("agencies.csv", None)
    numbers = [str(p.model_dump()["license_number"]) for p in sender.sent]
    assert len(numbers) == len(set(numbers)) == 3  # each agency once
    assert (inbox / "done" / "agencies.csv").read_bytes() == export


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("linked", ["inbox/done", "--failed"])
def test_watch_reports_a_linked_result_folder_in_one_line_before_connecting(
    keys: Keys, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked: str
) -> None:
    monkeypatch.setattr("broker.cli.common.configure_logging", lambda *_, **__: None)
    options: list[str] = []
    if linked == "--failed":
        (tmp_path / "failed").symlink_to(keys.peer_dir, target_is_directory=True)
        options = ["--failed", str(tmp_path / "failed")]
        where = tmp_path / "failed"
    else:
        (inbox / "done").symlink_to(keys.peer_dir, target_is_directory=True)
        where = inbox / "done"
    (inbox / "ca-2.cert.pem").write_bytes(keys.attacker_ca_pem)
    env = {
        "COLUMNS": "250",
        "EXCHANGE_AMQP_URL": "amqp://nobody:nothing@127.0.0.1:1/none",  # never reached
        "EXCHANGE_STATE_DIR": str(tmp_path / "state"),
    }

    result = CliRunner().invoke(
        app, ["adapt", "ru", "watch", str(inbox), "--to", "TJ-MOL", "--once", *options], env=env
    )

    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error [adapter.unsafe_path] {where} is a symbolic link or not a folder; refusing to write through it"
    ]
    keys.assert_untouched()
    assert (inbox / "ca-2.cert.pem").read_bytes() == keys.attacker_ca_pem
