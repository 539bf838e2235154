"""The Tajik adapter: registry exports (CSV/JSON, Tajik or Russian headers), notices, incremental sync.

Three successive exports of the recruitment-agency registry (samples/agencies-export-1..3) must send
exactly the changes between them, and an export imported twice sends nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import types
import uuid
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from adapters.base import MAX_FILE_BYTES, AdapterError, NationalAdapter
from adapters.folder_drop import FolderDrop
from adapters.pipeline import import_bytes, import_file, load_adapter
from adapters.tj import TajikAdapter, adapter
from adapters.tj.labels import FIELD_OF_LABEL, Language, normal
from adapters.tj.registry import AGENCIES, render_row
from broker.core.catalogue import Payload, payload_class, sample_payloads
from broker.core.catalogue.employer import PermissionStatus
from broker.core.errors import Reason, TransportError

SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "tj" / "samples"


class RecordingSender:
    """Stands in for a gateway: records what it was asked to send; can fail after N messages."""

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.sent: list[Payload] = []
        self._fail_after = fail_after

    async def send(
        self, payload: Payload, *, to: str, sender: str | None = None, wait_receipt: bool = False
    ) -> RecordingSender.Result:
        if self._fail_after is not None and len(self.sent) >= self._fail_after:
            raise TransportError(Reason.TRANSPORT_UNAVAILABLE, "broker went away")
        self.sent.append(payload)
        return RecordingSender.Result(message_id=uuid.uuid4())

    def recover(self) -> None:
        self._fail_after = None

    class Result:
        def __init__(self, *, message_id: uuid.UUID) -> None:
            self.message_id = message_id


@pytest.fixture
def tj(tmp_path: Path) -> TajikAdapter:
    return adapter(state_dir=tmp_path / "state")


def changes_of(payloads: list[Payload]) -> list[tuple[str, str]]:
    return [(str(p.model_dump()["license_number"]), str(p.model_dump()["status"])) for p in payloads]


def refused(tj: TajikAdapter, data: bytes, filename: str) -> AdapterError:
    with pytest.raises(AdapterError) as caught:
        tj.parse(data, filename=filename)
    return caught.value


def agencies_csv(rows: list[list[str]], *, headers: list[str] | None = None) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers or [column.tajik for column in AGENCIES.columns])
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


GOOD_ROW = [
    "0012345",
    "ҶДММ «Меҳнат»",
    "шахси ҳуқуқӣ",
    "020012345",
    "TJ-DU",
    "",
    "2023-06-01",
    "2028-05-31",
    "амалкунанда",
]


# -- shape, labels and samples -------------------------------------------------------------------
def test_the_adapter_has_the_shared_shape(tmp_path: Path) -> None:
    loaded = load_adapter("tj", state_dir=tmp_path)
    assert isinstance(loaded, NationalAdapter)
    assert loaded.country == "TJ"
    assert loaded.render_formats == ("json-tg", "json-ru", "csv-tg", "csv-ru")


def _field_names(cls: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in cls.model_fields.items():
        names.add(name)
        stack: list[object] = [field.annotation]
        while stack:
            annotation = stack.pop()
            if get_origin(annotation) in (Annotated, Union, types.UnionType, tuple):
                stack += get_args(annotation)
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= _field_names(annotation)
    return names


def test_every_field_of_every_ministry_type_has_a_tajik_and_a_russian_label(tj: TajikAdapter) -> None:
    labelled = set(FIELD_OF_LABEL.values())
    for message_type in tj.supported_types:
        assert _field_names(payload_class(message_type, 1)) <= labelled, message_type


def test_there_is_a_notice_sample_of_every_type(tj: TajikAdapter) -> None:
    types_seen = {
        tj.parse(p.read_bytes(), filename=p.name)[0].MESSAGE_TYPE for p in SAMPLES.glob("notice-*.json")
    }
    assert types_seen == tj.supported_types


@pytest.mark.parametrize("path", sorted(SAMPLES.iterdir()), ids=lambda path: path.name)
def test_every_sample_parses(tj: TajikAdapter, path: Path) -> None:
    assert tj.parse(path.read_bytes(), filename=path.name)


@pytest.mark.parametrize("fmt", ["json-tg", "json-ru", "csv-tg", "csv-ru"])
@pytest.mark.parametrize("message_type", sorted(TajikAdapter.supported_types))
def test_every_type_renders_and_reads_back_equal(tj: TajikAdapter, message_type: str, fmt: str) -> None:
    payload = sample_payloads()[message_type]
    rendered = tj.render(payload, fmt=fmt)
    assert tj.parse(rendered, filename=f"notice.{fmt[:-3]}") == [payload]


def test_labels_are_the_chosen_language(tj: TajikAdapter) -> None:
    payload = sample_payloads()["worker.death"]
    tajik = json.loads(tj.render(payload, fmt="json-tg"))
    russian = json.loads(tj.render(payload, fmt="json-ru"))
    assert tajik["Навъи паём"] == russian["Тип сообщения"] == "worker.death"
    assert tajik["Корманд"]["Санаи таваллуд"] == russian["Работник"]["Дата рождения"] == "1994-03-12"
    header = next(csv.reader(io.StringIO(tj.render(payload, fmt="csv-ru").decode("utf-8-sig"))))
    assert "Работник.Дата рождения" in header


def test_tajik_and_russian_headers_read_the_same_registry(tj: TajikAdapter) -> None:
    [first, *_] = tj.parse((SAMPLES / "agencies-export-1.csv").read_bytes(), filename="a.csv")
    russian = render_row(AGENCIES, first, Language.RUSSIAN)
    data = agencies_csv([list(russian.values())], headers=list(russian))
    assert "Номер лицензии" in data.decode("utf-8")
    assert tj.parse(data, filename="ru.csv") == [first]


def test_semicolons_and_day_first_dates_as_russian_excel_writes_them(tj: TajikAdapter) -> None:
    rows = tj.parse((SAMPLES / "agencies-export-2.csv").read_bytes(), filename="a.csv")
    assert rows[1].model_dump()["valid_from"].isoformat() == "2025-03-15"
    assert rows[2].model_dump()["status"] == PermissionStatus.SUSPENDED


def test_an_export_with_a_byte_order_mark_reads_like_one_without(tj: TajikAdapter) -> None:
    data = (SAMPLES / "agencies-export-1.csv").read_bytes()
    assert tj.parse(b"\xef\xbb\xbf" + data, filename="bom.csv") == tj.parse(data, filename="a.csv")


# -- incremental sync ----------------------------------------------------------------------------
async def _import(tj: NationalAdapter, name: str, sender: RecordingSender) -> list[Payload]:
    before = len(sender.sent)
    await import_file(SAMPLES / name, adapter=tj, gateway=sender, to="RU-MVD")
    return sender.sent[before:]


async def test_three_successive_exports_send_exactly_their_changes(tmp_path: Path) -> None:
    sender = RecordingSender()
    first = adapter(state_dir=tmp_path)
    assert changes_of(await _import(first, "agencies-export-1.csv", sender)) == [
        ("0012345", "granted"),
        ("0012346", "granted"),
        ("0012347", "granted"),
    ]
    # A new process (new adapter object) reads the same state file.
    second = adapter(state_dir=tmp_path)
    assert changes_of(await _import(second, "agencies-export-2.csv", sender)) == [
        ("0012346", "renewed"),  # new dates
        ("0012347", "suspended"),
        ("0012348", "granted"),  # new agency
    ]
    assert changes_of(await _import(second, "agencies-export-3.json", sender)) == [
        ("0012345", "revoked"),  # revoked in the registry
        ("0012347", "renewed"),  # reinstated after the suspension
        ("0012348", "revoked"),  # no longer listed
    ]
    assert await _import(second, "agencies-export-3.json", sender) == []
    assert (
        await _import(adapter(state_dir=tmp_path), "agencies-export-1.csv", sender) != []
    )  # going back is a change


async def test_reimporting_the_same_export_sends_nothing(tj: TajikAdapter) -> None:
    sender = RecordingSender()
    assert len(await _import(tj, "employers-export.json", sender)) == 2
    assert await _import(tj, "employers-export.json", sender) == []


async def test_an_import_cut_short_sends_only_the_rest_next_time(tj: TajikAdapter) -> None:
    failing = RecordingSender(fail_after=1)
    with pytest.raises(TransportError):
        await _import(tj, "agencies-export-1.csv", failing)
    assert changes_of(failing.sent) == [("0012345", "granted")]
    assert changes_of(await _import(tj, "agencies-export-1.csv", RecordingSender())) == [
        ("0012346", "granted"),
        ("0012347", "granted"),
    ]


async def test_a_notice_about_a_licence_counts_as_told(tj: TajikAdapter) -> None:
    sender = RecordingSender()
    await _import(tj, "notice-recruitment_agency.license.json", sender)
    # The export's row 0012345 is the same licence, already told.
    assert changes_of(await _import(tj, "agencies-export-1.csv", sender))[0][0] == "0012346"


async def test_notices_are_sent_every_time(tj: TajikAdapter) -> None:
    sender = RecordingSender()
    await _import(tj, "notice-worker.death.json", sender)
    await _import(tj, "notice-worker.death.json", sender)
    assert [p.MESSAGE_TYPE for p in sender.sent] == ["worker.death", "worker.death"]


# -- bad files -----------------------------------------------------------------------------------
def test_a_missing_column_is_named_on_line_1(tj: TajikAdapter) -> None:
    headers = [c.tajik for c in AGENCIES.columns if c.key != "tax_id"]
    row = [v for c, v in zip(AGENCIES.columns, GOOD_ROW, strict=True) if c.key != "tax_id"]
    error = refused(tj, agencies_csv([row], headers=headers), "agencies.csv")
    assert (error.reason, error.filename, error.line) == (Reason.ADAPTER_INVALID, "agencies.csv", 1)
    assert "«РМА»" in error.diagnostic


def test_an_impossible_date_names_its_line(tj: TajikAdapter) -> None:
    bad = [*GOOD_ROW[:6], "2025-02-30", *GOOD_ROW[7:]]
    other = ["0012399", *GOOD_ROW[1:]]
    error = refused(tj, agencies_csv([other, bad]), "agencies.csv")
    assert (error.reason, error.line) == (Reason.ADAPTER_INVALID, 3)
    assert "2025-02-30" in error.diagnostic
    assert error.diagnostic.startswith("agencies.csv:3: ")


def test_an_impossible_day_first_date_is_refused_too(tj: TajikAdapter) -> None:
    bad = [*GOOD_ROW[:6], "30.02.2025", *GOOD_ROW[7:]]
    assert refused(tj, agencies_csv([bad]), "a.csv").line == 2


def test_windows_1251_export_names_the_first_bad_line(tj: TajikAdapter) -> None:
    data = "Number,Name\n0012345,Agency\n0012346,ООО «Вектор»\n".encode("cp1251")
    error = refused(tj, data, "a.csv")
    assert (error.reason, error.line) == (Reason.ADAPTER_ENCODING, 3)
    assert "UTF-8" in error.diagnostic


def test_an_unknown_state_word_and_a_repeated_number_are_refused(tj: TajikAdapter) -> None:
    unknown = refused(tj, agencies_csv([[*GOOD_ROW[:8], "шояд"]]), "a.csv")
    assert unknown.line == 2
    assert "«шояд»" in unknown.diagnostic
    repeated = refused(tj, agencies_csv([GOOD_ROW, GOOD_ROW]), "a.csv")
    assert repeated.line == 3
    assert "first on line 2" in repeated.diagnostic


def test_an_unknown_column_is_refused(tj: TajikAdapter) -> None:
    error = refused(
        tj, agencies_csv([[*GOOD_ROW, "x"]], headers=[*(c.tajik for c in AGENCIES.columns), "Эзоҳ"]), "a.csv"
    )
    assert "«Эзоҳ»" in error.diagnostic


def test_a_row_breaking_the_model_keeps_the_catalogue_reason_and_its_line(tj: TajikAdapter) -> None:
    until_before_from = [*GOOD_ROW[:6], "2023-06-01", "2020-01-01", GOOD_ROW[8]]
    error = refused(tj, agencies_csv([until_before_from]), "a.csv")
    assert (error.reason, error.line) == (Reason.SCHEMA_INVALID, 2)


def test_json_errors_name_their_line(tj: TajikAdapter) -> None:
    text = (SAMPLES / "agencies-export-3.json").read_text("utf-8").replace("2024-01-10", "2024-13-10")
    third_row = text[: text.index('"0012347"')].rindex("{")
    error = refused(tj, text.encode("utf-8"), "export.json")
    assert (error.reason, error.line) == (Reason.ADAPTER_INVALID, text.count("\n", 0, third_row) + 1)
    syntax = refused(tj, b'[\n  {"a": 1},\n  {"b": }\n]', "broken.json")
    assert (syntax.reason, syntax.line) == (Reason.ADAPTER_INVALID, 3)


def test_a_notice_with_an_unknown_label_or_type_is_refused(tj: TajikAdapter) -> None:
    notice = json.loads((SAMPLES / "notice-employer.permit.json").read_text("utf-8"))
    notice["Рақами иҷозатт"] = notice.pop("Рақами иҷозат")
    assert (
        "«Рақами иҷозатт»"
        in refused(tj, json.dumps(notice, ensure_ascii=False).encode(), "n.json").diagnostic
    )
    wrong_type = {"Навъи паём": "receipt"}
    assert refused(tj, json.dumps(wrong_type).encode(), "n.json").reason == Reason.SCHEMA_UNKNOWN_TYPE


def test_an_oversized_export_is_refused(tj: TajikAdapter) -> None:
    data = agencies_csv([GOOD_ROW]) + b"," * (MAX_FILE_BYTES + 1)
    assert refused(tj, data, "big.csv").reason == Reason.MESSAGE_OVERSIZED


def test_labels_compare_without_case_or_extra_space() -> None:
    assert FIELD_OF_LABEL[normal("  рақами   ИҶОЗАТ ")] == "permit_number"


async def test_folder_drop_moves_good_files_to_done_and_bad_ones_to_failed_with_their_reason(
    tj: TajikAdapter, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "agencies.csv").write_bytes((SAMPLES / "agencies-export-1.csv").read_bytes())
    impossible = [*GOOD_ROW[:6], "2025-02-30", *GOOD_ROW[7:]]
    (inbox / "impossible-date.csv").write_bytes(agencies_csv([["0012399", *GOOD_ROW[1:]], impossible]))
    headers = [c.tajik for c in AGENCIES.columns if c.key != "state"]
    (inbox / "missing-column.csv").write_bytes(agencies_csv([GOOD_ROW[:8]], headers=headers))
    (inbox / "cp1251.json").write_bytes(
        (SAMPLES / "notice-worker.death.json").read_text("utf-8").encode("cp1251", "replace")
    )
    sender = RecordingSender()

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=tj, gateway=sender, to="RU-MVD")

    await FolderDrop(inbox=inbox, handle=handle).process_once()

    assert len(sender.sent) == 3  # the good export's three agencies, nothing of the bad files
    assert [p.name for p in (inbox / "done").iterdir()] == ["agencies.csv"]
    reason = (inbox / "failed" / "impossible-date.csv.reason.txt").read_text("utf-8")
    assert "reason: adapter.invalid" in reason
    assert "line: 3" in reason
    assert "2025-02-30" in reason
    assert "«Ҳолат»" in (inbox / "failed" / "missing-column.csv.reason.txt").read_text("utf-8")
    assert "reason: adapter.encoding" in (inbox / "failed" / "cp1251.json.reason.txt").read_text("utf-8")
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []


async def test_a_file_that_could_not_be_sent_waits_and_goes_first_at_the_next_poll(
    tj: TajikAdapter, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    export = (SAMPLES / "agencies-export-1.csv").read_bytes()
    (inbox / "agencies.csv").write_bytes(export)
    (inbox / "later.json").write_bytes((SAMPLES / "notice-worker.death.json").read_bytes())
    os.utime(inbox / "later.json", ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    sender = RecordingSender(fail_after=0)

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=tj, gateway=sender, to="RU-MVD")

    drop = FolderDrop(inbox=inbox, handle=handle)
    [outcome] = await drop.process_once()
    assert outcome.moved_to is None
    assert outcome.error is not None
    assert outcome.error.reason == Reason.TRANSPORT_UNAVAILABLE
    assert (drop.work / "agencies.csv").read_bytes() == export  # taken, waiting in the work folder
    assert (inbox / "later.json").exists()  # not taken while our side is down
    assert not list((inbox / "failed").iterdir())

    sender.recover()
    outcomes = await drop.process_once()
    assert [(o.name, o.error) for o in outcomes] == [("agencies.csv", None), ("later.json", None)]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["agencies.csv", "later.json"]
    assert not list(drop.work.iterdir())
