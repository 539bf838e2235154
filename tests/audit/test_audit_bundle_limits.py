"""`broker audit check-bundle` against archives built to exhaust memory (issue 21, item 9).

A worker's bundle stores its members uncompressed, so nothing in it can be larger than the archive.
A ZIP bomb (1 MB expanding to 1 GiB), a member claiming more than it occupies, members sharing their
bytes and an oversized file are all refused from the ZIP directory alone, before any member is read:
one line `error [audit.bundle_oversized] ...`, and not a byte decompressed.
"""

from __future__ import annotations

import io
import struct
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import broker.audit.bundle
import broker.cli.audit.common
import broker.cli.audit.evidence
from broker.audit.bundle import MANIFEST, MAX_MEMBER_BYTES
from broker.cli.audit import EXIT_ERROR, audit_app
from broker.state.keystore import KeyStore

GIB = 1 << 30
runner = CliRunner()


@pytest.fixture
def keys(tmp_path: Path, pki_now: datetime) -> Path:
    store = KeyStore(root=tmp_path / "keys")
    for country in ("TJ", "RU"):
        store.init_country(country, now=pki_now)
    return store.root


@pytest.fixture
def unpacked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every byte any ZIP member yields when read (decompressed or stored)."""
    counted: list[int] = []
    original_read = zipfile.ZipExtFile.read
    original_read1 = zipfile.ZipExtFile.read1

    def read(self: zipfile.ZipExtFile, n: int | None = -1) -> bytes:
        data = original_read(self, n)
        counted.append(len(data))
        return data

    def read1(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        data = original_read1(self, n)
        counted.append(len(data))
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    monkeypatch.setattr(zipfile.ZipExtFile, "read1", read1)
    return counted


def zip_bomb() -> bytes:
    """About 1 MB on disk: a small manifest and one deflated proof of 1 GiB of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, b"{}")
        member = zipfile.ZipInfo("proofs/000000000000.json")
        member.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(member, "w", force_zip64=True) as stream:
            chunk = bytes(1 << 20)
            for _ in range(GIB // len(chunk)):
                stream.write(chunk)
    return buffer.getvalue()


def check_bundle(path: Path, keys: Path) -> Any:
    # Wide, so the one line is not wrapped.
    return runner.invoke(audit_app, ["check-bundle", str(path), "--keys", str(keys)], env={"COLUMNS": "250"})


def refused_line(result: Any) -> str:
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    [line] = lines
    assert line.startswith("error [audit.bundle_oversized] bundle: "), line
    return str(line)


def test_a_zip_bomb_is_refused_without_decompressing_it(
    keys: Path, tmp_path: Path, unpacked: list[int]
) -> None:
    bomb = tmp_path / "worker.zip"
    bomb.write_bytes(zip_bomb())
    assert bomb.stat().st_size < 2 * 1024 * 1024

    line = refused_line(check_bundle(bomb, keys))

    assert "is compressed" in line
    assert sum(unpacked) == 0 < MAX_MEMBER_BYTES


def test_a_stored_member_claiming_more_than_it_holds_is_refused(
    keys: Path, tmp_path: Path, unpacked: list[int]
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, b"{}")
    data = bytearray(buffer.getvalue())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, GIB)  # uncompressed size in the central directory
    bundle = tmp_path / "liar.zip"
    bundle.write_bytes(bytes(data))

    assert "claims 1073741824 bytes but occupies 2" in refused_line(check_bundle(bundle, keys))
    assert sum(unpacked) == 0


def test_members_sharing_their_bytes_are_refused(keys: Path, tmp_path: Path, unpacked: list[int]) -> None:
    """The overlapping-files bomb: many directory entries pointing at one stored member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, b"x" * 4096)
    data = buffer.getvalue()
    central = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    record = data[central:end]
    copies = 1000
    directory = record * copies
    eocd = bytearray(data[end:])
    struct.pack_into("<HHII", eocd, 8, copies, copies, len(directory), central)
    bundle = tmp_path / "overlap.zip"
    bundle.write_bytes(data[:central] + directory + bytes(eocd))

    assert "more than the archive's" in refused_line(check_bundle(bundle, keys))
    assert sum(unpacked) == 0


def test_a_bundle_file_over_the_limit_is_not_read_whole(
    keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 64 * 1024
    monkeypatch.setattr(broker.audit.bundle, "MAX_BUNDLE_BYTES", limit)
    monkeypatch.setattr(broker.cli.audit.evidence, "MAX_BUNDLE_BYTES", limit)
    read: list[int] = []
    original = broker.cli.audit.common.read_bytes

    def counting(path: Path, *, limit: int | None = None) -> bytes:
        data = original(path, limit=limit)
        read.append(len(data))
        return data

    monkeypatch.setattr(broker.cli.audit.evidence, "read_bytes", counting)
    big = tmp_path / "big.zip"
    big.write_bytes(bytes(4 * limit))

    assert "the archive is over" in refused_line(check_bundle(big, keys))
    assert read == [limit + 1]
