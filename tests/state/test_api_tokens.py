"""The API's token file keeps hashes only, is private, and a running reader sees issues and revocations."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.core.errors import ConfigError, Reason
from broker.state.api_tokens import TOKEN_PREFIX, TokenFile

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_token_is_kept_only_as_its_hash_in_a_private_file(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "state" / "api-tokens.json")

    token, record = tokens.issue("TJ-MOL", now=NOW)

    text = tokens.path.read_text("utf-8")
    assert token.startswith(TOKEN_PREFIX)
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(os.stat(tokens.path).st_mode) == 0o600
    assert tokens.lookup(token) == record
    assert tokens.lookup(token + "x") is None


def test_a_reader_sees_tokens_issued_and_revoked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    reader, writer = TokenFile(path), TokenFile(path)
    assert reader.lookup("lxa_anything") is None  # no file yet: no tokens

    token, record = writer.issue("TJ-MVD", now=NOW)
    assert reader.lookup(token) == record
    assert writer.revoke(record.token_id) == record

    assert reader.lookup(token) is None
    assert writer.revoke(record.token_id) is None


def test_a_token_file_of_another_shape_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    path.write_text('{"tokens": [{"authority": "TJ-MOL"}]}', encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        TokenFile(path).lookup("lxa_x")

    assert raised.value.reason is Reason.CONFIG_INVALID
    assert str(path) in raised.value.diagnostic
