"""Audit-log figures: how fast an auditor verifies a whole log, and inclusion proofs in a big one.

Verification is what an auditor runs without trusting the operator: re-derive every entry's leaf
hash from its stored fields, rebuild the Merkle root from those, and compare with the root of the
stored subtree hashes. Chunks of 2**k entries are perfect subtrees, so workers hash chunks in
parallel and the parent folds the chunk roots in RFC 9162's shape.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from broker.audit import EntryDraft, EntryKind, entry_leaf_hash, root_from_leaf_hashes, verify_inclusion
from broker.audit.stores.sqlite import SqliteAuditStore, select_entries

CHUNK_LEAVES = 1 << 12
BUILD_BATCH = 1024
PROOF_SAMPLES = 200


def _chunk_root(path: str, start: int, end: int) -> bytes:
    """MTH of entries [start, end) re-derived from their fields; raises on an edited or missing row."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        entries = select_entries(connection, start, end)
    finally:
        connection.close()
    leaves = []
    for expected_index, entry in enumerate(entries, start):
        hashed = entry_leaf_hash(entry)
        if entry.index != expected_index or hashed != entry.leaf_hash:
            raise ValueError(f"audit entry {entry.index} does not match its stored leaf hash")
        leaves.append(hashed)
    if len(leaves) != end - start:
        raise ValueError(f"audit entries [{start}, {end}) are incomplete")
    return root_from_leaf_hashes(leaves)


async def _stored_root(path: Path) -> tuple[int, bytes]:
    store = await SqliteAuditStore.open(path)
    try:
        size = await store.size()
        return size, await store.root(size)
    finally:
        await store.close()


def verify_entries_per_s(path: Path, *, workers: int | None = None) -> tuple[float, int]:
    """(entries per second over every core, entries verified); raises if the log does not verify."""
    size, expected_root = asyncio.run(_stored_root(path))
    workers = workers or os.cpu_count() or 1
    chunks = [(start, min(start + CHUNK_LEAVES, size)) for start in range(0, size, CHUNK_LEAVES)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(abs, range(workers)))  # start the workers before the clock does
        started = time.perf_counter()
        roots = list(pool.map(_chunk_root, [str(path)] * len(chunks), *zip(*chunks, strict=True)))
        elapsed = time.perf_counter() - started
    if root_from_leaf_hashes(roots) != expected_root:
        raise ValueError("the re-derived Merkle root differs from the stored tree")
    return size / elapsed, size


def _synthetic_draft(index: int, origin: datetime) -> EntryDraft:
    return EntryDraft(
        kind=EntryKind.SENT,
        time=origin + timedelta(microseconds=index),
        message_id=UUID(int=index),
        message_type="work_permit.cancellation",
        peer="RU-MVD",
        envelope=index.to_bytes(8, "big") * 24,
    )


async def _build(path: Path, size: int) -> None:
    store = await SqliteAuditStore.open(path)
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for start in range(0, size, BUILD_BATCH):
            await store.append(
                [_synthetic_draft(i, origin) for i in range(start, min(start + BUILD_BATCH, size))]
            )
    finally:
        await store.close()


def cached_log(cache_dir: Path, size: int) -> Path:
    """A log of `size` synthetic entries, built once (it takes a while at a million) and reused."""
    path = cache_dir / f"audit-{size}.sqlite"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in cache_dir.glob(f"{partial.name}*"):
        leftover.unlink()
    asyncio.run(_build(partial, size))
    _checkpoint_wal(partial)
    partial.rename(path)
    return path


def _checkpoint_wal(path: Path) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


async def _proof_times(path: Path) -> list[float]:
    store = await SqliteAuditStore.open(path)
    try:
        size = await store.size()
        root = await store.root(size)
        picks = random.Random(size).sample(range(size), min(PROOF_SAMPLES, size))
        times = []
        for index in picks:
            started = time.perf_counter()
            proof = await store.inclusion_proof(index, size)
            times.append((time.perf_counter() - started) * 1000)
            leaf = (await store.entry(index)).leaf_hash
            if not verify_inclusion(leaf, index, size, proof, root):
                raise ValueError(f"inclusion proof of entry {index} does not verify")
        return times
    finally:
        await store.close()


def inclusion_proof_ms(path: Path) -> float:
    """Median time to produce one inclusion proof from the stored subtree hashes."""
    return statistics.median(asyncio.run(_proof_times(path)))
