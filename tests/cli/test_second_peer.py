"""A country with a second peer, with the `broker` command alone: `init --agreement`, bundles of three
countries, the topology of a country linked to two (issue 20). Runs the installed console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_error_path import broker, one_error_line
from tests.state.test_country_dir import snapshot

SHIPPED_PLAN = Path(__file__).resolve().parents[2] / "broker" / "core" / "agreements" / "tj-uz-2021.toml"
THREE = ("--broker", "tj=amqp://127.0.0.1:5672/tj", "--broker", "ru=amqp://127.0.0.1:5672/ru",
         "--broker", "uz=amqp://127.0.0.1:5672/uz")  # fmt: skip


def ok(*args: str, cwd: Path) -> str:
    result = broker(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tajikistan_adds_uzbekistan_as_a_second_peer(tmp_path: Path) -> None:
    for country in ("TJ", "RU", "UZ"):
        ok("init", "--country", country, cwd=tmp_path)
    uz_settings = (tmp_path / "var" / "uz" / "gateway.toml").read_text(encoding="utf-8")
    assert "# agreements = " in uz_settings  # not set: Uzbekistan's one shipped agreement
    made = ok("init", "--country", "UZ", cwd=tmp_path)
    assert "already set up" in made

    # The operator's renewed copy of the plan, and Tajikistan serving it beside the TJ-RU agreement.
    renewed = tmp_path / "agreements" / "tj-uz-2021.toml"
    renewed.parent.mkdir()
    renewed.write_text(
        SHIPPED_PLAN.read_text("utf-8")
        + '\n[[period]]\nfrom = 2024-01-01\nuntil = 2026-12-31\nbasis = "renewal"\n'
    )
    settings = tmp_path / "var" / "tj" / "gateway.toml"
    before = settings.read_text(encoding="utf-8")
    added = ok("init", "--country", "TJ", "--agreement", "tj-ru-2004", "--agreement", "agreements/tj-uz-2021.toml",
               cwd=tmp_path)  # fmt: skip
    assert "agreements = " in added
    after = settings.read_text(encoding="utf-8")
    assert f'agreements = ["tj-ru-2004", "{renewed}"]' in after.splitlines()
    # Only that line changed: the operator's other settings stay as they were.
    assert len(set(before.splitlines()) ^ set(after.splitlines())) == 2
    state = snapshot(tmp_path / "var")
    again = ok(
        "init", "--country", "TJ", "--agreement", "tj-ru-2004", "--agreement", str(renewed), cwd=tmp_path
    )
    assert "already set up" in again
    assert snapshot(tmp_path / "var") == state

    # Bundles: TJ trusts both peers, each peer only TJ; each country's CA kept apart.
    for country in ("TJ", "RU", "UZ"):
        ok("keys", "export", "--country", country, "--out", f"{country.lower()}.pem", cwd=tmp_path)
    assert "UZ bundle imported" in ok("keys", "import", "--country", "TJ", "uz.pem", cwd=tmp_path)
    assert "RU bundle imported" in ok("keys", "import", "--country", "TJ", "ru.pem", cwd=tmp_path)
    assert "TJ bundle imported" in ok("keys", "import", "--country", "UZ", "tj.pem", cwd=tmp_path)
    rows = json.loads(ok("keys", "list", "--country", "TJ", "--json", cwd=tmp_path))
    holders = {(row["country"], row["holder"]) for row in rows}
    assert ("UZ", "UZ-MEHNAT") in holders
    assert ("RU", "RU-MVD") in holders
    uzbek = {
        row["country"] for row in json.loads(ok("keys", "list", "--country", "UZ", "--json", cwd=tmp_path))
    }
    assert uzbek == {"UZ", "TJ"}

    # The ministry's subscriber kit carries both agreements (the renewed plan copied into it) and
    # both peers' CAs: it verifies what either peer sends.
    ok("keys", "kit", "--as", "TJ-MOL", "--out", "mol-kit", "--config", "var/tj/gateway.toml", cwd=tmp_path)
    kit_settings = (tmp_path / "mol-kit" / "subscriber.toml").read_text(encoding="utf-8")
    assert 'agreements = ["tj-ru-2004", "agreements/tj-uz-2021.toml"]' in kit_settings.splitlines()
    assert (tmp_path / "mol-kit" / "agreements" / "tj-uz-2021.toml").read_text() == renewed.read_text()
    assert {p.name for p in (tmp_path / "mol-kit" / "keys" / "peers").iterdir()} == {"RU", "UZ"}


def test_the_topology_of_three_countries_links_only_those_with_an_agreement(tmp_path: Path) -> None:
    plans = {
        plan["country"]: plan for plan in json.loads(ok("topology", "show", *THREE, "--json", cwd=tmp_path))
    }
    assert set(plans["tj"]["shovels"]) == {"tj-to-ru", "tj-to-uz"}
    assert set(plans["ru"]["shovels"]) == {"ru-to-tj"}  # no agreement binds Russia and Uzbekistan
    assert set(plans["uz"]["shovels"]) == {"uz-to-tj"}
    assert {"outbound.ru", "outbound.uz"} <= set(plans["tj"]["queues"])
    assert "outbound.uz" not in plans["ru"]["queues"]
    # The link users that may publish into each vhost: the peers' only.
    assert "uz-link" in plans["tj"]["users"]
    assert "uz-link" not in plans["ru"]["users"]
    # Uzbekistan's ministry submits through its own gateway.
    assert "uz-mehnat" in plans["uz"]["users"]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("init", "--country", "UZ", "--agreement", "tj-ru-2004"), "config.invalid", "UZ is not party"),
        (("init", "--country", "TJ", "--agreement", "tj-kz-2030"), "config.invalid", "no shipped agreement"),
        (
            ("init", "--country", "TJ", "--agreement", "tj-ru-2004", "--agreement", "tj-ru-2004"),
            "config.invalid",
            "both agreements of TJ with RU",
        ),
        (("init", "--country", "KZ"), "config.invalid", "TJ and UZ"),
        (
            ("init", "--country", "TJ", "--agreement", "missing.toml"),
            "config.invalid",
            "cannot read agreement",
        ),
        (
            (
                "topology",
                "show",
                "--broker",
                "tj=amqp://127.0.0.1:5672/tj",
                "--broker",
                "tj=amqp://127.0.0.1:5672/t2",
            ),
            "config.invalid",
            "each of a different country",
        ),
    ],
    ids=[
        "not-party",
        "unknown-id",
        "two-for-one-peer",
        "unknown-country",
        "missing-file",
        "same-country-twice",
    ],
)
def test_a_bad_second_peer_is_one_error_line(
    tmp_path: Path, args: tuple[str, ...], code: str, says: str
) -> None:
    assert says in one_error_line(broker(*args, cwd=tmp_path), code)
