"""The message catalogue: round trips, strictness, and every rule of the agreement both ways."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pydantic
import pytest
import rfc8785

from broker.core.catalogue import (
    CATALOGUE,
    Payload,
    citizenship_of,
    parse_payload,
    payload_class,
    payload_to_json,
    sample_payloads,
)
from broker.core.catalogue.base import Attachment
from broker.core.catalogue.death import WorkerDeath
from broker.core.catalogue.employer import EmployerPermit
from broker.core.catalogue.fields import add_years, age_on
from broker.core.catalogue.receipt import Receipt, ReceiptBatch
from broker.core.errors import Reason, ValidationError

JsonDict = dict[str, Any]


def sample_json(message_type: str) -> JsonDict:
    return copy.deepcopy(payload_to_json(sample_payloads()[message_type]))


def parse(message_type: str, data: JsonDict) -> Payload:
    return parse_payload(message_type, 1, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def rejected(message_type: str, data: JsonDict) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(message_type, data)
    return caught.value


def assert_rule(message_type: str, data: JsonDict, article: str) -> None:
    error = rejected(message_type, data)
    assert error.reason is Reason.AGREEMENT_RULE
    assert error.article == article
    assert f"Art. {article}:" in error.diagnostic


def assert_schema_invalid(message_type: str, data: JsonDict, *, path: str) -> ValidationError:
    error = rejected(message_type, data)
    assert error.reason is Reason.SCHEMA_INVALID
    assert error.article is None
    assert f"{path}:" in error.diagnostic
    return error


# --- the catalogue itself -----------------------------------------------------------------------


def test_catalogue_lists_every_type_once_with_a_sample() -> None:
    assert set(CATALOGUE) == {
        ("legislation.change", 1),
        ("employer.permit", 1),
        ("recruitment_agency.license", 1),
        ("labour_market.report", 1),
        ("work_permit.cancellation", 1),
        ("worker.death", 1),
        ("receipt", 1),
        ("receipt.batch", 1),
        ("trust.update", 1),
        ("checkpoint.witness", 1),
    }
    assert set(sample_payloads()) == {message_type for message_type, _ in CATALOGUE}
    for (message_type, version), cls in CATALOGUE.items():
        assert (message_type, version) == (cls.MESSAGE_TYPE, cls.VERSION)
        assert payload_class(message_type, version) is cls


def test_only_death_and_cancellation_carry_personal_data() -> None:
    personal = {cls.MESSAGE_TYPE for cls in CATALOGUE.values() if cls.PERSONAL}
    assert personal == {"worker.death", "work_permit.cancellation"}


@pytest.mark.parametrize("message_type", sorted(t for t, _ in CATALOGUE))
def test_round_trip_through_canonical_json(message_type: str) -> None:
    payload = sample_payloads()[message_type]
    body: JsonDict = payload_to_json(payload)
    again = parse_payload(message_type, 1, rfc8785.dumps(body))
    assert again == payload
    assert type(again) is type(payload)


def test_citizenship_is_the_workers_for_personal_messages_only() -> None:
    samples = sample_payloads()
    assert citizenship_of(samples["worker.death"]) == "TJ"
    assert citizenship_of(samples["work_permit.cancellation"]) == "TJ"
    for message_type in ("legislation.change", "employer.permit", "receipt", "labour_market.report"):
        assert citizenship_of(samples[message_type]) is None


@pytest.mark.parametrize(("message_type", "version"), [("worker.birth", 1), ("worker.death", 2)])
def test_unknown_type_or_version(message_type: str, version: int) -> None:
    with pytest.raises(ValidationError) as caught:
        payload_class(message_type, version)
    assert caught.value.reason is Reason.SCHEMA_UNKNOWN_TYPE
    with pytest.raises(ValidationError) as caught:
        parse_payload(message_type, version, b"{}")
    assert caught.value.reason is Reason.SCHEMA_UNKNOWN_TYPE


def test_payloads_are_frozen() -> None:
    payload = sample_payloads()["employer.permit"]
    assert isinstance(payload, EmployerPermit)
    with pytest.raises(pydantic.ValidationError):
        payload.quota = 5  # type: ignore[misc]


# --- strictness ---------------------------------------------------------------------------------


def test_extra_field_rejected_at_top_and_nested() -> None:
    data = sample_json("worker.death")
    data["cause_of_death"] = "x"
    assert_schema_invalid("worker.death", data, path="cause_of_death")
    data = sample_json("worker.death")
    data["worker"]["nickname"] = "x"
    assert_schema_invalid("worker.death", data, path="worker.nickname")


def test_naive_datetime_rejected() -> None:
    data = sample_json("receipt")
    data["received_at"] = "2025-01-17T09:30:12"
    assert_schema_invalid("receipt", data, path="received_at")


def test_datetime_with_local_offset_rejected_utc_spellings_accepted() -> None:
    data = sample_json("receipt")
    data["received_at"] = "2025-01-17T12:30:12+03:00"
    assert_schema_invalid("receipt", data, path="received_at")
    data["received_at"] = "2025-01-17T09:30:12+00:00"
    assert parse("receipt", data) == sample_payloads()["receipt"]


def test_no_type_coercion_from_strings() -> None:
    data = sample_json("employer.permit")
    data["quota"] = "120"
    assert_schema_invalid("employer.permit", data, path="quota")
    data = sample_json("worker.death")
    data["work_related"] = "true"
    assert_schema_invalid("worker.death", data, path="work_related")


def test_missing_field_and_bad_json() -> None:
    data = sample_json("legislation.change")
    del data["act_number"]
    assert_schema_invalid("legislation.change", data, path="act_number")
    with pytest.raises(ValidationError) as caught:
        parse_payload("legislation.change", 1, b'{"act_title": ')
    assert caught.value.reason is Reason.SCHEMA_INVALID


@pytest.mark.parametrize("citizenship", ["tj", "TJK", "T1", ""])
def test_citizenship_is_two_uppercase_letters(citizenship: str) -> None:
    data = sample_json("work_permit.cancellation")
    data["worker"]["citizenship"] = citizenship
    assert_schema_invalid("work_permit.cancellation", data, path="worker.citizenship")


def test_names_are_in_the_right_script() -> None:
    data = sample_json("worker.death")
    data["worker"]["surname_cyrillic"] = "Rakhimov"
    assert_schema_invalid("worker.death", data, path="worker.surname_cyrillic")
    data = sample_json("worker.death")
    data["worker"]["surname_latin"] = "Раҳимов"
    assert_schema_invalid("worker.death", data, path="worker.surname_latin")
    data = sample_json("worker.death")
    data["worker"]["surname_cyrillic"] = "Ҷӯраева-Қодирова"  # Tajik letters and a hyphen
    assert parse("worker.death", data)


def test_diagnostic_never_echoes_the_submitted_values() -> None:
    data = sample_json("work_permit.cancellation")
    data["worker"]["identity_document"]["number"] = "secret passport 123"
    data["worker"]["date_of_birth"] = "not-a-date-SECRET"
    error = assert_schema_invalid("work_permit.cancellation", data, path="worker.identity_document.number")
    assert "worker.date_of_birth:" in error.diagnostic
    assert "secret" not in error.diagnostic.lower()


def test_diagnostic_is_bounded_for_hostile_input() -> None:
    data = sample_json("labour_market.report")
    data["regions"] = ["bad"] * 500
    error = assert_schema_invalid("labour_market.report", data, path="regions.0")
    assert "more" in error.diagnostic
    assert len(error.diagnostic) <= 2000


def test_repeated_set_items_rejected() -> None:
    data = sample_json("legislation.change")
    data["areas"] = ["labour", "labour"]
    assert_schema_invalid("legislation.change", data, path="areas")
    data["areas"] = []
    assert_schema_invalid("legislation.change", data, path="areas")


# --- attachments --------------------------------------------------------------------------------


def test_inline_attachment_must_match_its_hash_and_size() -> None:
    good = Attachment.inline(media_type="application/pdf", content=b"%PDF-1.7 death certificate")
    assert good.content() == b"%PDF-1.7 death certificate"
    data = sample_json("worker.death")
    data["attachments"] = [payload_to_json_model(good)]
    assert parse("worker.death", data)

    wrong_hash = {**payload_to_json_model(good), "sha256": "0" * 64}
    data["attachments"] = [wrong_hash]
    assert_schema_invalid("worker.death", data, path="attachments.0")

    wrong_size = {**payload_to_json_model(good), "size": good.size + 1}
    data["attachments"] = [wrong_size]
    assert_schema_invalid("worker.death", data, path="attachments.0")

    not_base64 = {**payload_to_json_model(good), "content_base64": "%%%%"}
    data["attachments"] = [not_base64]
    assert_schema_invalid("worker.death", data, path="attachments.0")


def test_attachment_by_reference_needs_no_content() -> None:
    data = sample_json("worker.death")
    reference = data["attachments"][0]
    assert "content_base64" not in reference or reference["content_base64"] is None
    assert parse("worker.death", data)
    reference["sha256"] = "ABC"
    assert_schema_invalid("worker.death", data, path="attachments.0.sha256")


def payload_to_json_model(model: pydantic.BaseModel) -> JsonDict:
    return model.model_dump(mode="json")


def test_legislation_sample_carries_the_amended_article_inline() -> None:
    document = sample_json("legislation.change")["document"]
    text = base64.b64decode(document["content_base64"]).decode("utf-8")
    assert "не более чем на три года" in text


# --- Art. 10: workers are at least 18 -----------------------------------------------------------


def test_art10_worker_eighteen_on_permit_issue_date_passes() -> None:
    data = sample_json("work_permit.cancellation")
    data["permit"]["issue_date"] = "2024-05-20"
    data["worker"]["date_of_birth"] = "2006-05-20"
    assert parse("work_permit.cancellation", data)


def test_art10_worker_one_day_short_of_eighteen_fails() -> None:
    data = sample_json("work_permit.cancellation")
    data["permit"]["issue_date"] = "2024-05-20"
    data["worker"]["date_of_birth"] = "2006-05-21"
    assert_rule("work_permit.cancellation", data, "10")


def test_art10_death_of_someone_under_eighteen_is_not_a_workers_death() -> None:
    data = sample_json("worker.death")
    data["worker"]["date_of_birth"] = "2007-06-01"
    data["date_of_death"] = "2025-01-17"
    assert_rule("worker.death", data, "10")


def test_age_counts_full_years() -> None:
    assert age_on(date(2006, 5, 20), date(2024, 5, 20)) == 18
    assert age_on(date(2006, 5, 21), date(2024, 5, 20)) == 17
    assert age_on(date(2004, 2, 29), date(2022, 2, 28)) == 17
    assert age_on(date(2004, 2, 29), date(2022, 3, 1)) == 18


# --- Art. 4.2: a work permit lasts at most three years ------------------------------------------


def test_art4_2_three_years_to_the_day_passes() -> None:
    data = sample_json("work_permit.cancellation")
    data["permit"]["expiry_date"] = "2027-05-20"  # issued 2024-05-20
    assert parse("work_permit.cancellation", data)


def test_art4_2_one_day_over_three_years_fails() -> None:
    data = sample_json("work_permit.cancellation")
    data["permit"]["expiry_date"] = "2027-05-21"
    assert_rule("work_permit.cancellation", data, "4.2")


def test_permit_expiring_before_issue_is_inconsistent_not_a_rule() -> None:
    data = sample_json("work_permit.cancellation")
    data["permit"]["expiry_date"] = "2024-05-19"
    assert_schema_invalid("work_permit.cancellation", data, path="permit")


def test_three_years_from_29_february_ends_on_28_february() -> None:
    assert add_years(date(2024, 2, 29), 3) == date(2027, 2, 28)
    assert add_years(date(2024, 5, 20), 3) == date(2027, 5, 20)


# --- Art. 14: leave within 15 days --------------------------------------------------------------


def test_art14_deadline_fifteen_days_after_decision_passes() -> None:
    payload = parse("work_permit.cancellation", sample_json("work_permit.cancellation"))
    assert payload == sample_payloads()["work_permit.cancellation"]


@pytest.mark.parametrize("deadline", ["2025-02-24", "2025-02-26", "2025-02-10"])
def test_art14_any_other_deadline_fails(deadline: str) -> None:
    data = sample_json("work_permit.cancellation")
    assert data["decision_date"] == "2025-02-10"
    data["departure_deadline"] = deadline
    assert_rule("work_permit.cancellation", data, "14")


def test_art12_2_other_reason_needs_text() -> None:
    data = sample_json("work_permit.cancellation")
    data["reason"] = "other"
    data["reason_text"] = None
    assert_schema_invalid("work_permit.cancellation", data, path="(payload)")
    data["reason_text"] = "Нарушение правил пребывания"
    assert parse("work_permit.cancellation", data)
    data["reason"] = "art12_2_moonlighting"
    assert_schema_invalid("work_permit.cancellation", data, path="reason")


def test_cancellation_outside_the_permits_validity_is_inconsistent() -> None:
    data = sample_json("work_permit.cancellation")
    data["decision_date"] = "2025-06-01"
    data["departure_deadline"] = "2025-06-16"
    assert_schema_invalid("work_permit.cancellation", data, path="(payload)")


# --- Art. 2 and 15.1-15.3: category and responsible party ---------------------------------------


def death_in_category(category: str, responsible: str) -> JsonDict:
    data = sample_json("worker.death")
    data["category"] = category
    data["responsible_party"] = responsible
    if category == "a":  # the employer is a legal entity of the worker's home state
        data["employer"]["region"] = "TJ-DU"
        data["employer"]["tax_id"] = "020054321"
    return data


@pytest.mark.parametrize(
    ("category", "responsible"),
    [("a", "home_state_employer"), ("b", "host_state_customer"), ("c", "host_state_employer")],
)
def test_art15_responsible_party_follows_category(category: str, responsible: str) -> None:
    payload = parse("worker.death", death_in_category(category, responsible))
    assert isinstance(payload, WorkerDeath)
    assert payload.responsible_party == responsible


@pytest.mark.parametrize(
    ("category", "responsible", "article"),
    [
        ("a", "host_state_employer", "15.1"),
        ("b", "host_state_employer", "15.2"),
        ("b", "home_state_employer", "15.2"),
        ("c", "host_state_customer", "15.3"),
    ],
)
def test_art15_wrong_responsible_party_fails(category: str, responsible: str, article: str) -> None:
    assert_rule("worker.death", death_in_category(category, responsible), article)


def test_art2_category_a_employer_must_be_of_the_home_state() -> None:
    data = death_in_category("a", "home_state_employer")
    data["employer"]["region"] = "RU-MOW"
    assert_rule("worker.death", data, "2")


def test_art2_category_c_employer_must_be_of_the_host_state() -> None:
    data = sample_json("worker.death")
    data["employer"]["region"] = "TJ-SU"
    assert_rule("worker.death", data, "2")


# --- Art. 15.4: compensation through the consular office ----------------------------------------


def test_art15_4_work_related_death_names_the_paying_office() -> None:
    data = sample_json("worker.death")
    assert data["work_related"] is True
    assert parse("worker.death", data)
    data["compensation_office"] = None
    assert_rule("worker.death", data, "15.4")


def test_art15_4_not_work_related_needs_no_office_and_refuses_one() -> None:
    data = sample_json("worker.death")
    data["work_related"] = False
    assert_rule("worker.death", data, "15.4")
    data["compensation_office"] = None
    assert parse("worker.death", data)


@pytest.mark.parametrize(
    ("of_state", "located_in"),
    [("RU", "RU"), ("TJ", "TJ"), ("KZ", "TJ")],
)
def test_art15_4_office_is_the_host_states_in_the_home_state(of_state: str, located_in: str) -> None:
    data = sample_json("worker.death")
    data["compensation_office"]["of_state"] = of_state
    data["compensation_office"]["located_in"] = located_in
    assert_rule("worker.death", data, "15.4")


def test_art15_4_office_for_category_a_is_checked_against_the_home_state() -> None:
    data = death_in_category("a", "home_state_employer")
    assert parse("worker.death", data)  # RU office in TJ, employer in TJ
    data["compensation_office"]["located_in"] = "RU"
    assert_rule("worker.death", data, "15.4")


def test_death_before_birth_is_inconsistent() -> None:
    data = sample_json("worker.death")
    data["date_of_death"] = "1990-01-01"
    assert_schema_invalid("worker.death", data, path="(payload)")


# --- the other message types' own consistency ---------------------------------------------------


def test_receipt_reason_given_iff_rejected() -> None:
    data = sample_json("receipt")
    data["reason"] = "signature.invalid"
    assert_schema_invalid("receipt", data, path="(payload)")
    data["verdict"] = "rejected"
    assert parse("receipt", data)
    data["reason"] = None
    assert_schema_invalid("receipt", data, path="(payload)")


def test_every_reason_code_fits_a_receipt() -> None:
    data = sample_json("receipt")
    data["verdict"] = "rejected"
    for reason in Reason:
        data["reason"] = str(reason)
        receipt = parse("receipt", data)
        assert isinstance(receipt, Receipt)
        assert receipt.reason == str(reason)
    data["reason"] = "Not A Code"
    assert_schema_invalid("receipt", data, path="reason")


def test_receipt_checkpoint_must_cover_the_audit_index() -> None:
    data = sample_json("receipt")
    data["audit_index"] = data["checkpoint"]["tree_size"]
    assert_schema_invalid("receipt", data, path="(payload)")


def test_receipt_message_id_is_a_uuid() -> None:
    data = sample_json("receipt")
    data["message_id"] = "not-a-uuid"
    assert_schema_invalid("receipt", data, path="message_id")


def test_integers_stay_within_the_exact_json_range() -> None:
    data = sample_json("receipt")
    data["audit_index"] = 2**53
    data["checkpoint"]["tree_size"] = 2**53 + 1
    assert_schema_invalid("receipt", data, path="audit_index")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["indicators"][0].update(unit="RUB"), "indicators.0"),
        (lambda d: d["indicators"][2].update(unit="persons"), "indicators.2"),
        (lambda d: d["indicators"][0].update(value="1.5"), "indicators.0"),
        (lambda d: d["indicators"][0].update(region="RU-SPE"), "(payload)"),
        (lambda d: d["indicators"].append(d["indicators"][0]), "(payload)"),
        (lambda d: d.update(period_end="2023-12-31"), "(payload)"),
        (lambda d: d["indicators"][0].update(value="-1"), "indicators.0.value"),
    ],
)
def test_labour_market_report_consistency(mutate: Callable[[JsonDict], None], path: str) -> None:
    data = sample_json("labour_market.report")
    mutate(data)
    assert_schema_invalid("labour_market.report", data, path=path)


def test_validity_periods_do_not_run_backwards() -> None:
    data = sample_json("employer.permit")
    data["valid_until"] = "2024-02-01"
    assert_schema_invalid("employer.permit", data, path="(payload)")
    data = sample_json("recruitment_agency.license")
    data["valid_until"] = None  # a licence without an end date
    assert parse("recruitment_agency.license", data)
    data["valid_until"] = "2020-01-01"
    assert_schema_invalid("recruitment_agency.license", data, path="(payload)")


def test_a_batched_receipt_lists_each_message_once_under_a_covering_checkpoint() -> None:
    data = sample_json("receipt.batch")
    batch = parse("receipt.batch", data)
    assert isinstance(batch, ReceiptBatch)
    answers = batch.receipts()
    assert [(a.message_id, a.verdict, a.reason) for a in answers] == [
        (line.message_id, line.verdict, line.reason) for line in batch.lines
    ]
    assert all(a.checkpoint == batch.checkpoint and a.received_at == batch.received_at for a in answers)
    twice = sample_json("receipt.batch")
    twice["lines"] = [twice["lines"][0], twice["lines"][0]]
    assert_schema_invalid("receipt.batch", twice, path="(payload)")
    uncovered = sample_json("receipt.batch")
    uncovered["checkpoint"]["tree_size"] = uncovered["lines"][1]["audit_index"]
    assert_schema_invalid("receipt.batch", uncovered, path="(payload)")
    empty = sample_json("receipt.batch")
    empty["lines"] = []
    assert_schema_invalid("receipt.batch", empty, path="(payload)")  # answers nothing
    reasonless = sample_json("receipt.batch")
    del reasonless["lines"][1]["reason"]
    assert_schema_invalid("receipt.batch", reasonless, path="lines.1")


def test_a_batched_receipt_answers_unreadable_bodies_by_their_sha256_alone() -> None:
    unreadable = {"sha256": "ab" * 32, "reason": "message.malformed", "audit_index": 3}
    data = {**sample_json("receipt.batch"), "lines": [], "unreadable": [unreadable]}
    batch = parse("receipt.batch", data)
    assert isinstance(batch, ReceiptBatch)
    assert [(line.sha256, line.reason) for line in batch.unreadable] == [("ab" * 32, "message.malformed")]
    assert batch.receipts() == []  # no message id to settle by
    assert payload_to_json(batch)["unreadable"] == [{**unreadable, "diagnostic": None}]
    # Without unreadable bodies the member is left out: the bytes any other gateway signs and reads.
    assert "unreadable" not in payload_to_json(parse("receipt.batch", sample_json("receipt.batch")))
    twice = {**data, "unreadable": [unreadable, unreadable]}
    assert_schema_invalid("receipt.batch", twice, path="(payload)")
    uncovered = {**data, "unreadable": [{**unreadable, "audit_index": data["checkpoint"]["tree_size"]}]}
    assert_schema_invalid("receipt.batch", uncovered, path="(payload)")
    reasonless = {**data, "unreadable": [{"sha256": "ab" * 32, "audit_index": 3}]}
    assert_schema_invalid("receipt.batch", reasonless, path="unreadable.0.reason")
