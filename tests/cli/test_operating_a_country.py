"""Setting a country up with the `broker` command alone: `init`, bundles both ways, and every bad input
as one `error [reason]` line with a non-zero exit. Runs the installed console script, as a user does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.test_error_path import broker, one_error_line
from tests.state.test_country_dir import snapshot


def ok(*args: str, cwd: Path) -> str:
    result = broker(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def two_countries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TJ and RU set up in one working folder, bundles exported (not yet imported)."""
    cwd = tmp_path_factory.mktemp("countries")
    for country in ("TJ", "RU"):
        ok("init", "--country", country, cwd=cwd)
        ok("keys", "export", "--country", country, "--out", f"{country.lower()}-bundle.pem", cwd=cwd)
    return cwd


@pytest.fixture
def countries(two_countries: Path, tmp_path: Path) -> Path:
    """A copy of `two_countries` this test may change."""
    cwd = tmp_path / "work"
    shutil.copytree(two_countries, cwd)
    return cwd


def test_init_makes_a_country_and_running_it_again_changes_nothing(tmp_path: Path) -> None:
    made = ok("init", "--country", "TJ", cwd=tmp_path)
    assert "made TJ CA" in made
    assert "TJ-CONSULATE-MOSCOW: signing key and key-agreement key" in made
    assert "TJ-AUDITOR: signing key and key-agreement key" in made  # opens sealed payloads for audits
    settings = (tmp_path / "var" / "tj" / "gateway.toml").read_text(encoding="utf-8")
    assert 'amqp_url = "amqp://tj-gateway@127.0.0.1:5672/tj"' in settings
    assert 'secrets_file = "../rabbitmq-secrets.json"' in settings
    before = snapshot(tmp_path / "var")
    again = broker("init", "--country", "TJ", cwd=tmp_path)
    assert again.returncode == 0
    assert "already set up" in again.stdout
    assert snapshot(tmp_path / "var") == before


def test_bundles_carry_both_kinds_and_each_side_lists_the_others_keys(countries: Path) -> None:
    said = ok("keys", "import", "--country", "TJ", "ru-bundle.pem", cwd=countries)
    assert "RU bundle imported" in said
    assert "6 signing and 6 key-agreement certificate(s)" in said  # RU-AUDITOR's among them
    ok("keys", "import", "--country", "RU", "tj-bundle.pem", cwd=countries)
    rows = json.loads(ok("keys", "list", "--country", "TJ", "--json", cwd=countries))
    seen = {(row["country"], row["kind"], row["usage"], row["holder"]) for row in rows}
    assert ("RU", "peer-authority", "key-agreement", "RU-MVD") in seen
    assert ("RU", "peer-authority", "signing", "RU-MVD") in seen
    assert ("TJ", "authority", "key-agreement", "TJ-CONSULATE-MOSCOW") in seen
    assert {row["status"] for row in rows} == {"valid"}
    assert not any(row["private_key"] for row in rows if row["country"] == "RU")
    # A revocation travels in the next bundle and shows on the other side.
    mvd = next(r for r in rows if r["holder"] == "RU-MVD" and r["usage"] == "signing")
    ok("keys", "revoke", "--authority", "RU-MVD", "--serial", mvd["serial"], cwd=countries)
    ok("keys", "export", "--country", "RU", "--out", "ru-bundle.pem", cwd=countries)
    ok("keys", "import", "--country", "TJ", "ru-bundle.pem", cwd=countries)
    rows = json.loads(ok("keys", "list", "--country", "TJ", "--json", cwd=countries))
    [revoked] = [r for r in rows if r["serial"] == mvd["serial"]]
    assert revoked["status"] == "revoked"


def test_keys_issue_makes_both_kinds_unless_told(countries: Path) -> None:
    shutil.rmtree(countries / "var" / "tj" / "keys" / "TJ" / "authorities" / "TJ-MOL")
    said = ok("keys", "issue", "--authority", "TJ-MOL", "--kind", "key-agreement", cwd=countries)
    assert "key-agreement certificate" in said
    assert "signing" not in said
    said = ok("keys", "issue", "--authority", "TJ-MOL", "--kind", "signing", cwd=countries)
    assert "signing certificate" in said
    shutil.rmtree(countries / "var" / "tj" / "keys" / "TJ" / "authorities" / "TJ-MVD")
    both = ok("keys", "issue", "--authority", "TJ-MVD", cwd=countries)
    assert "signing certificate" in both
    assert "key-agreement certificate" in both


def _not_chaining_bundle(cwd: Path) -> Path:
    """RU's real bundle plus a key-agreement certificate of RU-MVD from another RU CA."""
    ok("init", "--country", "RU", "--dir", "impostor", cwd=cwd)
    forged = next(
        (cwd / "impostor" / "keys" / "RU" / "authorities" / "RU-MVD" / "encryption").glob("*.cert.pem")
    )
    path = cwd / "forged.pem"
    path.write_bytes((cwd / "ru-bundle.pem").read_bytes() + forged.read_bytes())
    return path


def _write(cwd: Path, name: str, text: str) -> Path:
    (cwd / name).write_text(text, encoding="utf-8")
    return cwd / name


BAD_INPUTS = {
    "init of an unknown country": (("init", "--country", "XX"), "config.invalid", "TJ and RU"),
    "init into a file": (
        ("init", "--country", "TJ", "--dir", "tj-bundle.pem"),
        "config.invalid",
        "not a folder",
    ),
    "init with a password in the URL": (
        ("init", "--country", "TJ", "--dir", "new", "--broker", "amqp://tj-gateway:pw@127.0.0.1:5672/tj"),
        "config.invalid",
        "must not carry a password",
    ),
    "init with another user": (
        ("init", "--country", "TJ", "--dir", "new", "--broker", "amqp://guest@127.0.0.1:5672/tj"),
        "config.invalid",
        "logs in as tj-gateway",
    ),
    "import of a file that is not PEM": (
        ("keys", "import", "--country", "TJ", "settings-copy"),
        "config.invalid",
        "no CA certificate",
    ),
    "import of a bundle that does not chain": (
        ("keys", "import", "--country", "TJ", "FORGED"),
        "cert.untrusted",
        "not issued by a trusted CA",
    ),
    "import of our own bundle": (
        ("keys", "import", "--country", "TJ", "tj-bundle.pem"),
        "config.invalid",
        "our own country",
    ),
    "issue for an authority not in the agreement": (
        ("keys", "issue", "--authority", "TJ-NOBODY"),
        "config.invalid",
        "not an authority of agreement",
    ),
    "issue for an authority that has its keys": (
        ("keys", "issue", "--authority", "TJ-MOL"),
        "config.invalid",
        "rotate it instead",
    ),
    "a gateway without the secrets file": (
        ("gateway", "--country", "TJ"),
        "config.invalid",
        "rabbitmq-secrets.json does not exist",
    ),
    "a gateway whose secrets file lacks its user": (
        ("gateway", "--country", "RU", "--config", "SECRETS-WITHOUT-USER"),
        "config.invalid",
        "holds no password for RabbitMQ user ru-gateway",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_a_bad_input_is_one_error_line(countries: Path, case: str) -> None:
    args, code, expected = BAD_INPUTS[case]
    replacements = {
        "FORGED": lambda: str(_not_chaining_bundle(countries)),
        "settings-copy": lambda: str(_write(countries, "settings-copy", "country = 'TJ'\n")),
        "SECRETS-WITHOUT-USER": lambda: str(_ru_settings_with_secrets(countries, {"tj-gateway": "x"})),
    }
    called = [replacements[arg]() if arg in replacements else arg for arg in args]
    before = snapshot(countries / "var")
    result = broker(*called, cwd=countries)
    assert result.returncode == 1
    line = one_error_line(result, code)
    assert expected in line
    if case != "a gateway without the secrets file":  # the gateway's own run may log; keys never change
        assert snapshot(countries / "var") == before


def _ru_settings_with_secrets(cwd: Path, secrets: dict[str, str]) -> Path:
    _write(cwd, "var/rabbitmq-secrets.json", json.dumps(secrets))
    (cwd / "var" / "rabbitmq-secrets.json").chmod(0o600)  # one others may read is refused before it is read
    return cwd / "var" / "ru" / "gateway.toml"


def test_a_rotation_that_cannot_be_whole_changes_nothing(countries: Path) -> None:
    shutil.rmtree(countries / "var" / "tj" / "keys" / "TJ" / "authorities" / "TJ-MOL" / "encryption")
    before = snapshot(countries / "var")
    result = broker("keys", "rotate", "--authority", "TJ-MOL", cwd=countries)
    assert result.returncode == 1
    assert "no key-agreement key to rotate" in one_error_line(result, "key.missing")
    assert snapshot(countries / "var") == before
    rotated = ok("keys", "rotate", "--authority", "TJ-MOL", "--kind", "signing", cwd=countries)
    assert "new signing certificate" in rotated
