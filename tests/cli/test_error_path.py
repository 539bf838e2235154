"""Every bad input to the `broker` command: one line `error [reason.code] ...`, a non-zero exit, no traceback.

The command runs as a user runs it: the installed console script in a fresh process, its output a pipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.ru import RussianAdapter
from broker.cli import app as cli_app
from broker.core.catalogue import sample_payloads

BROKER = Path(sys.executable).with_name("broker")


def broker(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BROKER), *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess[str], code: str) -> str:
    """The single line on stderr, checked to carry `code` and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error [{code}] "), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    """Settings that load (nothing connects before the checks these tests exercise)."""
    path = tmp_path / "ru.toml"
    path.write_text(
        f'country = "RU"\namqp_url = "amqp://127.0.0.1:5672/nowhere"\nstate_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def death_file(tmp_path: Path) -> Path:
    path = tmp_path / "death.json"
    path.write_text(sample_payloads()["worker.death"].model_dump_json(), encoding="utf-8")
    return path


def test_an_unknown_country_is_named_with_the_agreements_countries(tmp_path: Path, death_file: Path) -> None:
    result = broker("send", "--country", "XX", "--type", "worker.death", "--file", str(death_file),
                    "--to", "TJ-MOL", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result, "config.invalid")
    assert "XX" in line
    assert "TJ" in line
    assert "RU" in line


def test_a_config_file_that_does_not_exist_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    result = broker("status", "0190a2b0-0000-7000-8000-000000000000", "--country", "RU",
                    "--config", "nosuch.toml", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "nosuch.toml" in one_error_line(result, "input.unreadable")


def test_a_missing_payload_file_is_named(tmp_path: Path, settings_file: Path) -> None:
    result = broker("send", "--country", "RU", "--type", "worker.death", "--file", "nosuch.json",
                    "--to", "TJ-MOL", "--config", str(settings_file), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "nosuch.json" in one_error_line(result, "input.unreadable")


def test_a_payload_that_breaks_its_schema_names_the_field(tmp_path: Path, settings_file: Path) -> None:
    payload = json.loads(sample_payloads()["worker.death"].model_dump_json())
    del payload["date_of_death"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(payload), encoding="utf-8")
    result = broker("send", "--country", "RU", "--type", "worker.death", "--file", str(bad),
                    "--to", "TJ-MOL", "--config", str(settings_file), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "date_of_death" in one_error_line(result, "schema.invalid")


def test_a_settings_file_with_an_unknown_setting_names_it(tmp_path: Path, settings_file: Path) -> None:
    settings_file.write_text(settings_file.read_text(encoding="utf-8") + "prefech = 10\n", encoding="utf-8")
    result = broker("status", "0190a2b0-0000-7000-8000-000000000000", "--country", "RU",
                    "--config", str(settings_file), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "prefech" in one_error_line(result, "config.invalid")


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("nosuch",), "broker --help"),
        (("send", "--country", "RU", "--bogus"), "broker send --help"),
        (("status", "not-a-uuid", "--country", "RU"), "broker status --help"),
        (("keys", "list", "--bogus"), "broker keys list --help"),
    ],
)
def test_a_wrong_call_is_one_usage_line_with_the_help_to_read(
    tmp_path: Path, args: tuple[str, ...], hint: str
) -> None:
    result = broker(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert hint in one_error_line(result, "cli.usage")


def test_a_serial_that_is_not_hexadecimal(tmp_path: Path) -> None:
    result = broker("keys", "revoke", "--authority", "TJ-MOL", "--serial", "zz", "--root", str(tmp_path),
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "zz" in one_error_line(result, "cli.usage")


def test_a_trust_bundle_that_cannot_be_read(tmp_path: Path) -> None:
    result = broker("keys", "import", "--country", "RU", "nosuch.pem", "--root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "nosuch.pem" in one_error_line(result, "input.unreadable")


@pytest.mark.parametrize("verb", [("import", "bundle.pem"), ("list",), ("export", "--out", "out.pem")])
def test_a_mistyped_country_writes_nothing_into_the_default_key_store(
    tmp_path: Path, verb: tuple[str, ...]
) -> None:
    (tmp_path / "bundle.pem").write_text("not read: the country is refused first", encoding="utf-8")
    result = broker("keys", verb[0], "--country", "XX", *verb[1:], cwd=tmp_path)
    assert result.returncode == 1
    assert "XX" in one_error_line(result, "config.invalid")
    assert not (tmp_path / "keys").exists()
    assert not (tmp_path / "out.pem").exists()


def test_topology_remove_without_yes_and_without_a_terminal_removes_nothing(tmp_path: Path) -> None:
    # A vhost prefix no one uses: if the refusal failed, nothing real would be deleted either.
    result = broker("topology", "remove", "--broker", "tj=amqp://127.0.0.1:5672/nosuch-tj",
                    "--broker", "ru=amqp://127.0.0.1:5672/nosuch-ru", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "--yes" in one_error_line(result, "cli.usage")


def test_an_alert_file_that_cannot_be_written(tmp_path: Path, settings_file: Path) -> None:
    settings_file.write_text(
        settings_file.read_text(encoding="utf-8").replace('"RU"', '"TJ"'), encoding="utf-8"
    )
    result = broker("subscribe", "--as", "TJ-CONSULATE-MOSCOW", "--types", "worker.death",
                    "--out", str(tmp_path / "no" / "such" / "dir" / "alerts.jsonl"),
                    "--config", str(settings_file), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "alerts.jsonl" in one_error_line(result, "config.invalid")


def test_debug_adds_the_traceback_to_the_same_line(tmp_path: Path) -> None:
    result = broker("status", "0190a2b0-0000-7000-8000-000000000000", "--country", "RU",
                    "--config", "nosuch.toml", "--debug", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "error [input.unreadable]" in result.stderr
    assert "Traceback" in result.stderr


def test_version_and_short_help(tmp_path: Path) -> None:
    version = broker("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("broker ")
    short = broker("send", "-h", cwd=tmp_path)
    assert short.returncode == 0
    assert "--type" in short.stdout


def test_a_bug_is_one_line_naming_the_exception(
    tmp_path: Path,
    settings_file: Path,
    death_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug in the payload parser")

    monkeypatch.setattr("broker.cli.gateway.parse_payload", broken)
    status = cli_app.main(["send", "--country", "RU", "--type", "worker.death", "--file", str(death_file),
                           "--to", "TJ-MOL", "--config", str(settings_file)])  # fmt: skip
    captured = capsys.readouterr()
    assert status == cli_app.EXIT_BUG
    [line] = [line for line in captured.err.splitlines() if line.strip()]
    assert line.startswith("error [internal.error] RuntimeError: a bug in the payload parser")
    assert "--debug" in line


def test_an_import_of_utf16_without_a_byte_order_mark_is_one_encoding_line(
    tmp_path: Path, settings_file: Path
) -> None:
    document = RussianAdapter().render(sample_payloads()["legislation.change"]).decode("utf-8")
    law = tmp_path / "law.xml"
    law.write_bytes(document.encode("utf-16-le"))
    result = broker("adapt", "ru", "import", str(law), "--to", "TJ-MOL", "--config", str(settings_file),
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result, "adapter.encoding")
    assert "law.xml:1: " in line
    assert "UTF-16LE without a byte-order mark" in line
