"""The RFC 9162 Merkle tree: published vectors, an independent naive MTH, and every proof up to 300."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.audit import merkle
from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, entry_bytes, entry_leaf_hash
from broker.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeId,
    consistency_path,
    consistency_ranges,
    fold_cover,
    inclusion_path,
    leaf_hash,
    perfect_cover,
    root_from_leaf_hashes,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300

# The RFC 6962 reference tree used across Certificate Transparency implementations.
REFERENCE_INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
REFERENCE_INCLUSION = [  # (index, size, path)
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
REFERENCE_CONSISTENCY = [  # (old, new, path)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# One leaf more than the largest tree, so every tree has a next size to be confused with.
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(MAX_SIZE + 1)]


def naive_mth(hashes: list[bytes]) -> bytes:
    """MTH written straight from the RFC's recursive definition, independent of the module."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    split = 1
    while split * 2 < len(hashes):
        split *= 2
    return hashlib.sha256(b"\x01" + naive_mth(hashes[:split]) + naive_mth(hashes[split:])).digest()


@cache
def subtree(start: int, end: int) -> bytes:
    return naive_mth(LEAVES[start:end])


ROOTS = [subtree(0, size) for size in range(MAX_SIZE + 2)]


def reference_node_getter(size: int) -> Callable[[int, int], bytes]:
    leaves = [leaf_hash(data) for data in REFERENCE_INPUTS[:size]]
    return lambda start, end: naive_mth(leaves[start:end])


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


# Published vectors: a tree no other implementation agrees with proves nothing to anyone.


def test_reference_roots() -> None:
    assert EMPTY_ROOT.hex() == REFERENCE_ROOTS[0]
    for size in range(len(REFERENCE_INPUTS) + 1):
        assert root_from_leaves(REFERENCE_INPUTS[:size]).hex() == REFERENCE_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "expected"), REFERENCE_INCLUSION)
def test_reference_inclusion_paths(index: int, size: int, expected: list[str]) -> None:
    path = inclusion_path(index, size, reference_node_getter(size))
    assert [h.hex() for h in path] == expected
    leaf = leaf_hash(REFERENCE_INPUTS[index])
    assert verify_inclusion(leaf, index, size, path, bytes.fromhex(REFERENCE_ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "expected"), REFERENCE_CONSISTENCY)
def test_reference_consistency_paths(old: int, new: int, expected: list[str]) -> None:
    path = consistency_path(old, new, reference_node_getter(new))
    assert [h.hex() for h in path] == expected
    old_root, new_root = bytes.fromhex(REFERENCE_ROOTS[old]), bytes.fromhex(REFERENCE_ROOTS[new])
    assert verify_consistency(old, new, old_root, new_root, path)


# Every proof of every tree up to MAX_SIZE leaves.


def test_every_inclusion_proof_verifies() -> None:
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            path = inclusion_path(index, size, subtree)
            assert verify_inclusion(LEAVES[index], index, size, path, ROOTS[size]), (index, size)


def test_every_consistency_proof_verifies() -> None:
    for new in range(1, MAX_SIZE + 1):
        for old in range(1, new + 1):
            path = consistency_path(old, new, subtree)
            assert verify_consistency(old, new, ROOTS[old], ROOTS[new], path), (old, new)


def test_proofs_are_logarithmic() -> None:
    for size in range(1, MAX_SIZE + 1):
        height = (size - 1).bit_length()
        assert all(len(inclusion_path(i, size, subtree)) <= height for i in range(size))
        assert all(len(consistency_ranges(old, size)) <= height + 1 for old in range(1, size + 1))


sizes_and_index = st.integers(1, MAX_SIZE).flatmap(
    lambda size: st.tuples(st.just(size), st.integers(0, size - 1))
)


@given(sizes_and_index)
def test_inclusion_fails_for_wrong_leaf_index_size_or_root(case: tuple[int, int]) -> None:
    size, index = case
    path = inclusion_path(index, size, subtree)
    leaf, root = LEAVES[index], ROOTS[size]
    assert not verify_inclusion(flip(leaf), index, size, path, root)
    assert not verify_inclusion(leaf, index, size, path, flip(root))
    # The size only shapes the walk; the root is what binds it (the tree of size + 1 has another root).
    assert not verify_inclusion(leaf, index, size + 1, path, ROOTS[size + 1])
    assert not verify_inclusion(leaf, index, size, [*path, LEAVES[0]], root)
    if size > 1:
        other = (index + 1) % size
        assert not verify_inclusion(leaf, other, size, path, root)
        assert not verify_inclusion(LEAVES[other], index, size, path, root)
        assert not verify_inclusion(leaf, index, size, path[:-1], root)
        tampered = list(path)
        tampered[len(path) // 2] = flip(tampered[len(path) // 2])
        assert not verify_inclusion(leaf, index, size, tampered, root)


sizes_pair = st.integers(2, MAX_SIZE).flatmap(lambda new: st.tuples(st.integers(1, new - 1), st.just(new)))


@given(sizes_pair)
def test_consistency_fails_for_wrong_roots_sizes_or_path(case: tuple[int, int]) -> None:
    old, new = case
    path = consistency_path(old, new, subtree)
    assert not verify_consistency(old, new, flip(ROOTS[old]), ROOTS[new], path)
    assert not verify_consistency(old, new, ROOTS[old], flip(ROOTS[new]), path)
    assert not verify_consistency(old, new, ROOTS[new], ROOTS[old], path)
    assert not verify_consistency(new, old, ROOTS[new], ROOTS[old], path)
    assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], [*path, LEAVES[0]])
    assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], path[:-1])
    for position in range(len(path)):
        tampered = list(path)
        tampered[position] = flip(tampered[position])
        assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], tampered)
    if old + 1 < new:
        assert not verify_consistency(old + 1, new, ROOTS[old + 1], ROOTS[new], path)


def test_degenerate_consistency_cases() -> None:
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert not verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])
    assert verify_consistency(7, 7, ROOTS[7], ROOTS[7], [])
    assert not verify_consistency(7, 7, ROOTS[7], ROOTS[6], [])
    assert not verify_consistency(7, 7, ROOTS[7], ROOTS[7], [LEAVES[0]])
    assert not verify_consistency(3, 7, ROOTS[3], ROOTS[7], [])
    assert not verify_consistency(3, 7, ROOTS[3][:31], ROOTS[7], consistency_path(3, 7, subtree))


def test_impossible_proof_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        inclusion_path(5, 5, subtree)
    with pytest.raises(ValueError):
        inclusion_path(-1, 5, subtree)
    with pytest.raises(ValueError):
        consistency_path(6, 5, subtree)
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)


# Building: the compact range and perfect covers agree with the naive tree.


def test_compact_range_matches_naive_tree_and_yields_every_perfect_subtree() -> None:
    compact = CompactRange()
    assert compact.root() == EMPTY_ROOT
    stored: dict[NodeId, bytes] = {}
    for size in range(1, MAX_SIZE + 1):
        for node, hashed in compact.append(LEAVES[size - 1]):
            assert node not in stored
            stored[node] = hashed
        assert compact.size == size
        assert compact.root() == ROOTS[size]
        assert compact.border == [stored[node] for node in perfect_cover(0, size)]
    assert all(stored[node] == subtree(node.start, node.end) for node in stored)
    perfect_count = sum(MAX_SIZE >> level for level in range(MAX_SIZE.bit_length()))
    assert len(stored) == perfect_count


def test_compact_range_resumes_from_its_border() -> None:
    compact = CompactRange()
    for leaf in LEAVES[:77]:
        compact.append(leaf)
    resumed = CompactRange.from_border(size=77, hashes=compact.border)
    for leaf in LEAVES[77:200]:
        resumed.append(leaf)
    assert resumed.root() == ROOTS[200]
    with pytest.raises(ValueError):
        CompactRange.from_border(size=77, hashes=compact.border[:-1])


def test_copy_is_independent() -> None:
    compact = CompactRange()
    compact.append(LEAVES[0])
    clone = compact.copy()
    clone.append(LEAVES[1])
    assert (compact.size, compact.root()) == (1, ROOTS[1])
    assert (clone.size, clone.root()) == (2, ROOTS[2])


@given(st.integers(0, MAX_SIZE).flatmap(lambda end: st.tuples(st.integers(0, end), st.just(end))))
def test_perfect_cover_folds_to_the_subtree_hash_or_is_refused(case: tuple[int, int]) -> None:
    start, end = case
    try:
        cover = perfect_cover(start, end)
    except ValueError:
        # Refused only when the largest piece would be misaligned.
        top = 1 << ((end - start).bit_length() - 1)
        assert start % top
        return
    assert sum(1 << node.level for node in cover) == end - start
    assert fold_cover([subtree(node.start, node.end) for node in cover]) == subtree(start, end)


def test_roots_from_leaf_hashes() -> None:
    assert root_from_leaf_hashes(LEAVES[:123]) == ROOTS[123]
    assert root_from_leaf_hashes([]) == EMPTY_ROOT


# Entries: the canonical bytes that become leaves.


def make_draft(**overrides: object) -> EntryDraft:
    fields: dict[str, object] = {
        "kind": EntryKind.RECEIVED,
        "time": datetime(2026, 11, 3, 9, 30, 0, 120, tzinfo=UTC),
        "message_id": UUID("01900000-0000-7000-8000-000000000001"),
        "message_type": "worker.death",
        "peer": "ru.mvd",
        "envelope": b'{"signed":"bytes"}',
        "verdict": "accepted",
    }
    fields.update(overrides)
    return EntryDraft(**fields)  # type: ignore[arg-type]


def test_entry_bytes_are_canonical_json() -> None:
    raw = entry_bytes(make_draft())
    assert raw == (
        b'{"envelope":"eyJzaWduZWQiOiJieXRlcyJ9","kind":"received",'
        b'"message_id":"01900000-0000-7000-8000-000000000001","message_type":"worker.death",'
        b'"peer":"ru.mvd","reason":null,"time":"2026-11-03T09:30:00.000120Z","v":1,"verdict":"accepted"}'
    )
    assert json.loads(raw)["time"] == "2026-11-03T09:30:00.000120Z"
    assert entry_leaf_hash(make_draft()) == leaf_hash(raw)


def test_every_field_changes_the_leaf() -> None:
    base = entry_leaf_hash(make_draft())
    variants = [
        make_draft(kind=EntryKind.REJECTED),
        make_draft(time=datetime(2026, 11, 3, 9, 30, 0, 121, tzinfo=UTC)),
        make_draft(message_id=None),
        make_draft(message_type="worker.arrival"),
        make_draft(peer="tj.mfa"),
        make_draft(envelope=b'{"signed":"bytez"}'),
        make_draft(verdict="rejected"),
        make_draft(reason="signature.invalid"),
    ]
    assert len({entry_leaf_hash(v) for v in variants} | {base}) == len(variants) + 1


def test_entry_time_is_normalised_to_utc_and_must_be_aware() -> None:
    moscow = timezone(timedelta(hours=3))
    same_instant = make_draft(time=datetime(2026, 11, 3, 12, 30, 0, 120, tzinfo=moscow))
    assert entry_bytes(same_instant) == entry_bytes(make_draft())
    with pytest.raises(ValueError):
        make_draft(time=datetime(2026, 11, 3, 9, 30))  # a naive time is the point
    with pytest.raises(ValueError):
        make_draft(kind="lost")
    with pytest.raises(UnicodeEncodeError):
        make_draft(peer="\ud800")


def test_audit_entry_detects_an_edited_field() -> None:
    draft = make_draft()
    entry = AuditEntry(**vars(draft), index=4, leaf_hash=entry_leaf_hash(draft))
    assert entry.leaf_hash_matches()
    assert entry.draft() == draft
    edited = AuditEntry(**{**vars(draft), "verdict": "rejected"}, index=4, leaf_hash=entry.leaf_hash)
    assert not edited.leaf_hash_matches()


@pytest.mark.parametrize("module", ["merkle.py", "entry.py"])
def test_core_modules_do_no_io(module: str) -> None:
    source = Path(merkle.__file__).with_name(module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "sqlite3", "asyncpg", "aio_pika", "socket", "os", "io", "pathlib"}


def test_importing_the_core_loads_no_io_module() -> None:
    # The package __init__ must not drag the store (and asyncio) in behind the core's back.
    probe = (
        "import sys, broker.audit, broker.audit.merkle, broker.audit.entry; "
        "print(sorted({'asyncio', 'sqlite3', 'asyncpg', 'aio_pika'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
