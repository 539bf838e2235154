"""Sign checkpoints of our own log, and witness the peer's.

Every `every_entries` new entries or `every_seconds` (whichever first), and whenever a receipt needs
one that covers its entry, the checkpointer signs the current tree with the gateway's key and appends
it as a CHECKPOINT entry. Callers that need a checkpoint at the same time share one signature, so
under load one checkpoint covers many receipts.

A checkpoint the peer sends in a receipt is verified and countersigned, and the countersignature is
appended as a WITNESS entry: the peer can no longer rewrite what it showed us without our log and
its own disagreeing. The gateway also hands the countersignature back to the peer
(`broker.audit.witnessing`), so the peer's own log holds it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from broker.audit.checkpoint import (
    CheckpointBody,
    SignedCheckpoint,
    WitnessRecord,
    cosign,
    sign_checkpoint,
    verify_checkpoint,
)
from broker.audit.entry import EntryDraft, EntryKind
from broker.audit.stores.base import AuditStore
from broker.core.catalogue.receipt import Checkpoint
from broker.core.errors import LocalError
from broker.core.pki import Signer
from broker.core.trust import TrustStore

log = structlog.get_logger("broker.audit.stores.checkpointer")

DEFAULT_EVERY_ENTRIES = 1000
DEFAULT_EVERY_SECONDS = 60.0
# Receipts asking for a covering checkpoint within this long of the previous one wait for the next:
# under load one signature (and one witness at the peer) covers every receipt of the window.
DEFAULT_MIN_INTERVAL_SECONDS = 0.05
WITNESSED_REMEMBERED = 1024  # per peer; far more than the checkpoint windows a receipt can lag behind


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Checkpointer:
    def __init__(
        self,
        *,
        store: AuditStore,
        signer: Signer,
        trust: TrustStore,
        every_entries: int = DEFAULT_EVERY_ENTRIES,
        every_seconds: float = DEFAULT_EVERY_SECONDS,
        poll_seconds: float = 1.0,
        min_interval_seconds: float = DEFAULT_MIN_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if every_entries < 1 or every_seconds <= 0 or poll_seconds <= 0 or min_interval_seconds < 0:
            raise ValueError("checkpoint intervals must be positive")
        self._store = store
        self._signer = signer
        self._trust = trust
        self._every_entries = every_entries
        self._every_seconds = every_seconds
        self._poll_seconds = min(poll_seconds, every_seconds)
        self._clock = clock
        self._min_interval_seconds = min_interval_seconds
        self._last_signed_at = -math.inf  # monotonic, for the coalescing window
        self._lock = asyncio.Lock()
        self._witness_lock = asyncio.Lock()
        self._latest: SignedCheckpoint | None = None
        # Log size just after our latest CHECKPOINT entry: entries beyond it are new.
        self._size_after_latest = 0
        # Per peer: the checkpoints countersigned lately, by tree size, as they came in receipts.
        self._witnessed: dict[str, OrderedDict[int, Checkpoint]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def origin(self) -> str:
        return self._signer.authority_id

    def replace_trust(self, trust: TrustStore) -> None:
        """Judge the peer's checkpoints with new trust material (a trust update) from now on."""
        self._trust = trust

    def replace_signer(self, signer: Signer) -> None:
        """Sign checkpoints and countersignatures with a rotated gateway key from now on."""
        if signer.authority_id != self._signer.authority_id:
            raise ValueError(
                f"{signer.authority_id} cannot sign the checkpoints of {self._signer.authority_id}"
            )
        self._signer = signer

    @property
    def latest(self) -> SignedCheckpoint | None:
        return self._latest

    async def start(self) -> None:
        """Sign the tree as it is now (so receipts never wait on an old log), then keep signing."""
        if await self._store.size() > 0:
            await self.checkpoint_now()
        self._task = asyncio.create_task(self._run(), name=f"{self.origin}-checkpoints")

    async def stop(self) -> None:
        """Stop signing; first sign what was logged since the latest checkpoint, so it is covered."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            if await self._store.size() > self._size_after_latest:
                await self.checkpoint_now()
        except LocalError as error:
            log.warning("checkpoint.failed", reason=str(error.reason), diagnostic=error.diagnostic)

    async def checkpoint_now(self) -> SignedCheckpoint:
        async with self._lock:
            return await self._sign_current()

    async def covering(self, index: int) -> SignedCheckpoint:
        """The latest checkpoint whose tree includes entry `index`, signing a new one if needed."""
        latest = self._latest
        if latest is not None and latest.body.tree_size > index:
            return latest
        async with self._lock:
            latest = self._latest
            if latest is not None and latest.body.tree_size > index:
                return latest  # someone else signed one while we waited
            # Holding the lock through the pause: callers arriving meanwhile queue behind it and
            # are covered by the one signature made after it.
            pause = self._last_signed_at + self._min_interval_seconds - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            return await self._sign_current()

    async def _sign_current(self) -> SignedCheckpoint:
        size = await self._store.size()
        latest = self._latest
        if latest is not None and latest.body.tree_size == size:
            return latest
        body = CheckpointBody(
            origin=self.origin, tree_size=size, root_hash=await self._store.root(size), time=self._clock()
        )
        signed = sign_checkpoint(body, signer=self._signer)
        [entry] = await self._store.append(
            [
                EntryDraft(
                    kind=EntryKind.CHECKPOINT,
                    time=body.time,
                    message_id=None,
                    message_type=None,
                    peer=None,
                    envelope=signed.to_bytes(),
                )
            ]
        )
        self._latest = signed
        self._size_after_latest = entry.index + 1
        self._last_signed_at = time.monotonic()
        log.info("checkpoint.signed", tree_size=size, audit_index=entry.index, root=body.root_hash.hex())
        return signed

    async def _due(self) -> bool:
        fresh = await self._store.size() - self._size_after_latest
        if fresh <= 0:
            return False
        if fresh >= self._every_entries or self._latest is None:
            return True
        return (self._clock() - self._latest.body.time).total_seconds() >= self._every_seconds

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                if await self._due():
                    await self.checkpoint_now()
            except LocalError as error:
                # The store is down: the next round tries again, receipts sign on demand meanwhile.
                log.warning("checkpoint.failed", reason=str(error.reason), diagnostic=error.diagnostic)

    async def witness(self, checkpoint: Checkpoint, *, origin: str) -> WitnessRecord | None:
        """Verify the peer's checkpoint from a receipt and log our countersignature of it.

        Raises VerificationError when the checkpoint is not `origin`'s validly signed one; returns
        None when we already countersigned this tree. Receipts of one window share a checkpoint and
        receipts of neighbouring windows arrive interleaved, so the recently witnessed trees are
        remembered by size, not only the last one. Another root for a size already witnessed (the
        peer showing two versions of its log) is verified and countersigned too: the two records
        together are the evidence.
        """
        witnessed = self._witnessed.setdefault(origin, OrderedDict())
        if witnessed.get(checkpoint.tree_size) == checkpoint:
            return None  # the very bytes we verified and countersigned: nothing new to check
        signed = SignedCheckpoint.from_receipt(checkpoint)
        verify_checkpoint(signed, trust=self._trust, origin=origin)
        async with self._witness_lock:
            if witnessed.get(checkpoint.tree_size) == checkpoint:
                return None  # countersigned while we waited for the lock
            known = witnessed.get(checkpoint.tree_size)
            if known is not None:
                log.warning(
                    "checkpoint.equivocation", peer=origin, tree_size=checkpoint.tree_size,
                    roots=[known.root_hash, checkpoint.root_hash],
                )  # fmt: skip
            record = await self._cosign(signed, origin=origin)
            witnessed[checkpoint.tree_size] = checkpoint
            while len(witnessed) > WITNESSED_REMEMBERED:
                witnessed.popitem(last=False)
            return record

    async def _cosign(self, signed: SignedCheckpoint, *, origin: str) -> WitnessRecord:
        record = cosign(signed, signer=self._signer, time=self._clock())
        [entry] = await self._store.append(
            [
                EntryDraft(
                    kind=EntryKind.WITNESS,
                    time=record.time,
                    message_id=None,
                    message_type=None,
                    peer=origin,
                    envelope=record.to_bytes(),
                )
            ]
        )
        log.info(
            "checkpoint.witnessed",
            peer=origin,
            tree_size=signed.body.tree_size,
            root=signed.body.root_hash.hex(),
            audit_index=entry.index,
        )
        return record
