"""Agreements as configuration: the TJ-UZ joint plan beside the TJ-RU agreement, and their set (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from broker.core.agreement import (
    load_agreement,
    load_shipped_agreement,
    parse_agreement,
    shipped_agreement_ids,
)
from broker.core.agreement_set import AgreementSet, load_agreements
from broker.core.errors import ConfigError, PolicyError, Reason
from broker.state.settings import ExchangeSettings

PLAN = "tj-uz-2021"
IN_THE_PLAN = datetime(2022, 5, 1, tzinfo=UTC)
AFTER_THE_PLAN = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def tajik() -> AgreementSet:
    return load_agreements("TJ", ["tj-ru-2004", PLAN])


def test_the_plan_covers_items_5_and_7_for_2021_to_2023_between_the_two_ministries() -> None:
    assert shipped_agreement_ids() == ("tj-ru-2004", PLAN)
    plan = load_shipped_agreement(PLAN)
    assert plan.countries == ("TJ", "UZ")
    notices = [
        t for t in plan.types() if t not in {"receipt", "receipt.batch", "trust.update", "checkpoint.witness"}
    ]
    assert notices == ["legislation.change", "labour_market.report"]
    assert plan.cite(plan.rule("legislation.change")) == "item 7"
    assert plan.cite(plan.rule("labour_market.report")) == "item 5"
    [period] = plan.periods
    assert (period.start, period.end) == (date(2021, 8, 1), date(2023, 12, 31))
    assert plan.holders_of("competent_ministry", "UZ") == ("UZ-MEHNAT",)


def test_a_type_the_plan_does_not_cover_is_refused_naming_the_plan(tajik: AgreementSet) -> None:
    with pytest.raises(PolicyError) as refused:
        tajik.check_send(
            message_type="worker.death", sender_id="TJ-MVD", recipient_id="UZ-MEHNAT", at=IN_THE_PLAN
        )
    assert refused.value.reason == Reason.POLICY_TYPE_NOT_COVERED
    assert "tj-uz-2021" in refused.value.diagnostic
    # The same type to Russia is the TJ-RU agreement's, Art. 15.5.
    rule = tajik.check_send(
        message_type="worker.death", sender_id="TJ-MVD", recipient_id="RU-MVD", at=AFTER_THE_PLAN
    )
    assert rule.article == "15.5"


def test_outside_the_plans_period_is_refused_naming_the_period_and_protocol_types_are_not(
    tajik: AgreementSet,
) -> None:
    tajik.check_send(
        message_type="legislation.change", sender_id="TJ-MOL", recipient_id="UZ-MEHNAT", at=IN_THE_PLAN
    )
    for day in (datetime(2021, 7, 31, 23, 59, tzinfo=UTC), AFTER_THE_PLAN):
        with pytest.raises(PolicyError) as refused:
            tajik.check_send(
                message_type="legislation.change", sender_id="TJ-MOL", recipient_id="UZ-MEHNAT", at=day
            )
        assert refused.value.reason == Reason.POLICY_OUTSIDE_PERIOD
        assert "tj-uz-2021 is in force 2021-08-01 to 2023-12-31" in refused.value.diagnostic
    # A receipt for a message of the period is still answered after it.
    tajik.check_send(message_type="receipt.batch", sender_id="UZ-GW", recipient_id="TJ-GW", at=AFTER_THE_PLAN)
    # The TJ-RU agreement has no end.
    tajik.check_send(
        message_type="legislation.change", sender_id="TJ-MOL", recipient_id="RU-MVD", at=AFTER_THE_PLAN
    )


def test_a_broken_rule_cites_the_plans_item(tajik: AgreementSet) -> None:
    with pytest.raises(PolicyError) as refused:
        tajik.check_send(
            message_type="legislation.change", sender_id="UZ-GW", recipient_id="TJ-MOL", at=IN_THE_PLAN
        )
    assert refused.value.reason == Reason.POLICY_SENDER_NOT_ALLOWED
    assert "tj-uz-2021 item 7" in refused.value.diagnostic


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [("RU-MVD", "UZ-MEHNAT"), ("UZ-MEHNAT", "RU-MVD")],
    ids=["russia-to-uzbekistan", "uzbekistan-to-russia"],
)
def test_no_agreement_of_ours_binds_two_other_countries(
    tajik: AgreementSet, sender: str, recipient: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        tajik.check_send(
            message_type="legislation.change", sender_id=sender, recipient_id=recipient, at=IN_THE_PLAN
        )
    assert refused.value.reason == Reason.POLICY_NO_AGREEMENT


def test_the_set_answers_per_peer(tajik: AgreementSet) -> None:
    assert tajik.peers == ("RU", "UZ")
    assert tajik.countries == ("TJ", "RU", "UZ")
    assert tajik.for_peer("UZ").id == PLAN
    assert tajik.gateway("UZ").id == "UZ-GW"
    assert tajik.senders_of("worker.death", "TJ") == ("TJ-MVD",)
    with pytest.raises(PolicyError) as unknown:
        tajik.for_peer("KZ")
    assert unknown.value.reason == Reason.POLICY_NO_AGREEMENT
    # Each peer knows only its own agreement: Uzbekistan's set has no Russian authority.
    uzbek = load_agreements("UZ", [PLAN])
    with pytest.raises(PolicyError) as stranger:
        uzbek.authority("RU-MVD")
    assert stranger.value.reason == Reason.POLICY_RECIPIENT_UNKNOWN


def test_a_subscriber_receives_what_one_of_its_agreements_lets_it(tajik: AgreementSet) -> None:
    tajik.check_subscriber(subscriber_id="TJ-MOL", message_type="labour_market.report", country="TJ")
    with pytest.raises(PolicyError) as refused:
        tajik.check_subscriber(subscriber_id="TJ-GW", message_type="legislation.change", country="TJ")
    assert refused.value.reason == Reason.POLICY_SUBSCRIBER_NOT_ALLOWED


def _text(**changes: str) -> str:
    text = (
        Path(__file__).resolve().parents[2] / "broker" / "core" / "agreements" / "tj-uz-2021.toml"
    ).read_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize(
    ("agreements", "country", "complaint"),
    [
        ([load_agreement(), load_agreement()], "TJ", "both agreements of TJ with RU"),
        ([load_shipped_agreement(PLAN)], "RU", "RU is not party"),
        (
            [load_agreement(), parse_agreement(_text(**{'id = "TJ-GW"': 'id = "TJ-GATEWAY"'}))],
            "TJ",
            "different gateways",
        ),
        (
            [load_agreement(), parse_agreement(_text(**{'id = "UZ-MEHNAT"': 'id = "RU-MVD"'}))],
            "TJ",
            "RU-MVD belongs to RU in one agreement and to UZ",
        ),
    ],
    ids=["two-agreements-one-peer", "country-not-party", "two-gateways", "authority-in-two-countries"],
)
def test_an_inconsistent_set_is_refused_at_start(agreements: list, country: str, complaint: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as refused:
        AgreementSet(agreements, country=country)
    assert refused.value.reason == Reason.CONFIG_INVALID
    assert complaint in refused.value.diagnostic


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"until = 2023-12-31": "until = 2020-12-31"}, "a period ends before it starts"),
        ({'countries = ["TJ", "UZ"]': 'countries = ["TJ", "TJ"]'}, "two different countries"),
        ({'basis = "joint plan': 'basis_of = "joint plan'}, "basis"),
    ],
    ids=["period-backwards", "one-country", "period-without-basis"],
)
def test_a_bad_agreement_file_is_refused(changes: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_agreement(_text(**changes))
    assert refused.value.reason == Reason.CONFIG_INVALID
    assert complaint in refused.value.diagnostic


def test_a_renewal_is_a_period_in_the_operators_copy_named_in_the_settings(tmp_path: Path) -> None:
    renewed = tmp_path / "agreements" / "tj-uz-2021.toml"
    renewed.parent.mkdir()
    renewed.write_text(
        _text() + '\n[[period]]\nfrom = 2024-01-01\nuntil = 2026-12-31\nbasis = "renewed plan, 2024-2026"\n'
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        'country = "TJ"\namqp_url = "amqp://tj-gateway@127.0.0.1:5672/tj"\n'
        'agreements = ["tj-ru-2004", "agreements/tj-uz-2021.toml"]\n'
    )
    settings = ExchangeSettings.load(config)
    assert settings.agreements[1] == str(renewed)  # relative to the settings file's folder
    tajik = settings.agreement_set()
    tajik.check_send(
        message_type="legislation.change", sender_id="TJ-MOL", recipient_id="UZ-MEHNAT", at=AFTER_THE_PLAN
    )
    with pytest.raises(ConfigError) as missing:
        load_agreements("TJ", ["tj-kz-2030"])
    assert "no shipped agreement 'tj-kz-2030'" in missing.value.diagnostic
