"""A consulate's kit holds its own secrets and nobody else's; exposed secrets stop a process at start.

Runs the installed `broker` as an operator runs it: both countries set up in one working folder with
`broker init`, bundles exchanged, then `broker keys kit`. The checks at start (`config.secret_exposed`)
come before any connection, so no broker is needed here; the kit's subscriber runs against the real
RabbitMQ in the README walkthrough (tests/cli/test_readme_walkthrough.py).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.cli.test_error_path import broker, one_error_line

CONSUL = "TJ-CONSULATE-MOSCOW"


def ok(*args: str, cwd: Path) -> str:
    result = broker(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TJ and RU set up and trusting each other, as after the README's first six lines."""
    cwd = tmp_path_factory.mktemp("operator")
    for country in ("TJ", "RU"):
        ok("init", "--country", country, cwd=cwd)
        ok("keys", "export", "--country", country, "--out", f"{country.lower()}-bundle.pem", cwd=cwd)
    ok("keys", "import", "--country", "RU", "tj-bundle.pem", cwd=cwd)
    ok("keys", "import", "--country", "TJ", "ru-bundle.pem", cwd=cwd)
    return cwd


@pytest.fixture
def work(operator: Path, tmp_path: Path) -> Path:
    cwd = tmp_path / "work"
    shutil.copytree(operator, cwd)
    return cwd


def private_keys_in(folder: Path) -> list[Path]:
    """Every file under `folder` that parses as a private key, whatever its name."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            continue
        found.append(path)
    return found


def test_the_kit_holds_no_private_key_but_the_consuls_and_no_password_but_its_own(work: Path) -> None:
    listing = json.loads(ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", "--json", cwd=work))
    kit = work / "moscow-kit"

    assert listing["user"] == "tj-sub-consulate-moscow"
    files = {str(path) for path in listing["files"]}
    assert files == {str(path.relative_to(kit)) for path in kit.rglob("*") if path.is_file()}
    assert {"subscriber.toml", "rabbitmq-password.json", "README.txt", "keys/TJ/crl.pem"} <= files
    assert {"keys/TJ/ca/ca-1.cert.pem", "keys/peers/RU/ca-1.cert.pem", "keys/peers/RU/crl.pem"} <= files
    # Its own key-agreement key, and no other private key: no signing key, no CA key, no other authority's.
    [own_key] = private_keys_in(kit)
    own_folder = kit / "keys" / "TJ" / "authorities" / CONSUL / "encryption" / "private"
    assert own_key.parent == own_folder
    operator_copy = work / "var" / "tj" / "keys" / "TJ" / "authorities" / CONSUL / "encryption" / "private"
    assert own_key.read_bytes() == (operator_copy / own_key.name).read_bytes()
    assert not [path for path in files if "/authorities/" in path and CONSUL not in path]
    # Its own password, and no other: the operator's secrets file holds the gateway's too.
    passwords = json.loads((kit / "rabbitmq-password.json").read_text())
    operator_passwords = json.loads((work / "var" / "rabbitmq-secrets.json").read_text())
    assert passwords == {"tj-sub-consulate-moscow": operator_passwords["tj-sub-consulate-moscow"]}
    for other_password in (v for k, v in operator_passwords.items() if k != "tj-sub-consulate-moscow"):
        assert not [p for p in kit.rglob("*") if p.is_file() and other_password.encode() in p.read_bytes()]
    settings = (kit / "subscriber.toml").read_text()
    assert 'amqp_url = "amqp://tj-sub-consulate-moscow@127.0.0.1:5672/tj"' in settings
    assert 'secrets_file = "rabbitmq-password.json"' in settings
    for secret in (own_key, kit / "rabbitmq-password.json", kit / "subscriber.toml"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_making_the_kit_again_brings_it_up_to_date_and_changes_no_password(work: Path) -> None:
    ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", cwd=work)
    password = (work / "moscow-kit" / "rabbitmq-password.json").read_text()
    ok("keys", "rotate", "--authority", CONSUL, cwd=work)

    ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", cwd=work)

    assert len(private_keys_in(work / "moscow-kit")) == 2  # both generations: older alerts still open
    assert (work / "moscow-kit" / "rabbitmq-password.json").read_text() == password


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (("--as", "TJ-GW"), "policy.subscriber_not_allowed"),  # a gateway subscribes to nothing
        (("--as", "TJ-AUDITOR"), "policy.subscriber_not_allowed"),
        (("--as", "NOT AN ID"), "config.invalid"),
        (("--as", CONSUL, "--config", "missing.toml"), "input.unreadable"),
    ],
)
def test_a_kit_for_no_subscriber_is_refused(work: Path, arguments: tuple[str, ...], code: str) -> None:
    result = broker("keys", "kit", *arguments, "--out", "kit", cwd=work)
    assert result.returncode == 1
    one_error_line(result, code)
    assert not (work / "kit").exists()


def test_a_kit_is_not_made_over_another_folder(work: Path) -> None:
    ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", cwd=work)
    (work / "papers").mkdir()
    (work / "papers" / "letter.txt").write_text("keep")

    over_papers = broker("keys", "kit", "--as", CONSUL, "--out", "papers", cwd=work)
    over_other_kit = broker("keys", "kit", "--as", "TJ-MOL", "--out", "moscow-kit", cwd=work)

    assert "is not a kit" in one_error_line(over_papers, "config.invalid")
    assert f"is the kit of {CONSUL}" in one_error_line(over_other_kit, "config.invalid")


def test_a_kit_before_the_peer_is_trusted_is_refused(tmp_path: Path) -> None:
    ok("init", "--country", "TJ", cwd=tmp_path)
    result = broker("keys", "kit", "--as", CONSUL, "--out", "kit", cwd=tmp_path)
    assert "import its bundle first" in one_error_line(result, "key.missing")


def test_a_subscriber_whose_key_others_may_read_does_not_start(work: Path) -> None:
    ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", cwd=work)
    [key] = private_keys_in(work / "moscow-kit")
    key.chmod(0o644)

    result = broker("subscribe", "--as", CONSUL, "--kit", "moscow-kit", cwd=work)

    assert result.returncode == 1
    line = one_error_line(result, "config.secret_exposed")
    assert str(key.name) in line
    assert "0644" in line


def test_a_subscriber_whose_password_file_the_group_may_read_does_not_start(work: Path) -> None:
    ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", cwd=work)
    (work / "moscow-kit" / "rabbitmq-password.json").chmod(0o640)

    result = broker("subscribe", "--as", CONSUL, "--kit", "moscow-kit", cwd=work)

    assert "rabbitmq-password.json" in one_error_line(result, "config.secret_exposed")


def test_a_gateway_whose_signing_key_others_may_read_does_not_start(work: Path) -> None:
    private = work / "var" / "tj" / "keys" / "TJ" / "authorities" / "TJ-MOL" / "private"
    [key] = list(private.glob("*.key.pem"))
    key.chmod(0o604)

    result = broker("gateway", "--country", "TJ", cwd=work)

    assert result.returncode == 1
    line = one_error_line(result, "config.secret_exposed")
    assert f"private key {key.resolve()} is open to other users of this host (mode 0604)" in line


def test_kit_usage_errors(work: Path) -> None:
    ok("keys", "kit", "--as", CONSUL, "--out", "moscow-kit", cwd=work)
    both = broker("subscribe", "--as", CONSUL, "--kit", "moscow-kit", "--config", "x.toml", cwd=work)
    lone_citizenship = broker(
        "subscribe", "--as", CONSUL, "--kit", "moscow-kit", "--citizenship", "TJ", cwd=work
    )
    no_kit = broker("subscribe", "--as", CONSUL, "--kit", "var", cwd=work)

    assert both.returncode == lone_citizenship.returncode == 2
    one_error_line(both, "cli.usage")
    one_error_line(lone_citizenship, "cli.usage")
    assert "no subscriber.toml" in one_error_line(no_kit, "input.unreadable")
    assert os.path.isdir(work / "moscow-kit")
