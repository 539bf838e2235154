"""`broker api token|openapi|serve` as an operator runs them: the installed console script."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from broker.state.api_tokens import TOKEN_PREFIX, TokenFile
from tests.cli.test_error_path import broker, one_error_line, settings_file

CONTRACT = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
__all__ = ["settings_file"]  # the fixture, shared with the error-path tests


def test_a_token_is_printed_once_listed_by_id_and_revoked(tmp_path: Path, settings_file: Path) -> None:
    issued = broker("api", "token", "issue", "--country", "RU", "--config", str(settings_file),
                    "--authority", "RU-MINTRUD", cwd=tmp_path)  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith(TOKEN_PREFIX)
    [record] = TokenFile(tmp_path / "state" / "ru" / "api-tokens.json").records()
    assert record.authority == "RU-MINTRUD"
    assert record.token_id in issued.stderr

    listed = broker("api", "token", "list", "--country", "RU", "--config", str(settings_file), cwd=tmp_path)
    revoked = broker("api", "token", "revoke", record.token_id, "--country", "RU", "--config", str(settings_file),
                     cwd=tmp_path)  # fmt: skip
    again = broker("api", "token", "revoke", record.token_id, "--country", "RU", "--config", str(settings_file),
                   cwd=tmp_path)  # fmt: skip

    assert record.token_id in listed.stdout
    assert token not in listed.stdout + listed.stderr
    assert revoked.returncode == 0, revoked.stderr
    assert TokenFile(tmp_path / "state" / "ru" / "api-tokens.json").lookup(token) is None
    assert record.token_id in one_error_line(again, "config.invalid")


@pytest.mark.parametrize(
    ("authority", "code"),
    [("TJ-MOL", "config.invalid"), ("RU-NOSUCH", "policy.recipient_unknown")],
)
def test_a_token_only_for_an_authority_of_this_country(
    tmp_path: Path, settings_file: Path, authority: str, code: str
) -> None:
    result = broker("api", "token", "issue", "--country", "RU", "--config", str(settings_file),
                    "--authority", authority, cwd=tmp_path)  # fmt: skip

    assert result.returncode == 1
    assert authority in one_error_line(result, code)
    assert not (tmp_path / "state" / "ru" / "api-tokens.json").exists()


def test_openapi_prints_the_committed_contract(tmp_path: Path) -> None:
    result = broker("api", "openapi", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == CONTRACT.read_text("utf-8")
    assert json.loads(result.stdout)["info"]["version"] == "1"


def test_serve_on_a_port_in_use_is_one_error_line(tmp_path: Path, settings_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with settings_file.open("a", encoding="utf-8") as settings:
            settings.write(f"api_port = {port}\n")

        result = broker("api", "serve", "--country", "RU", "--config", str(settings_file), cwd=tmp_path)

    assert result.returncode == 1
    assert str(port) in one_error_line(result, "config.invalid")
