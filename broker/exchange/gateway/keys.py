"""A running gateway's keys: read from its key store, cached, and taken in again when the store changes.

`GatewayKeys` reads what the gateway uses (trust anchors and CRLs of both countries, every
key-agreement certificate, its own receipt key) and caches the signers and decryptors of its
authorities. `KeyWatcher` looks at the key store every `keys_reload_interval_s` (a fingerprint of
its file names, sizes and times; cheap) and, when anything changed (`broker keys issue|rotate|revoke|
import`, a restored private key), reads it again and swaps it in, logging `keys.reloaded` with what
was added and removed. A store that does not read (a half-written import, a corrupt file) is logged
as `keys.reload_failed` and the gateway keeps what it had; the next change is tried again.

A reload never makes revocation older: a CRL the gateway holds (from a `trust.update`) with a higher
number than the one on disk is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from broker.core.agreement_set import Agreements
from broker.core.errors import ExchangeError, VerificationError
from broker.core.pki import Signer, certificate_thumbprint
from broker.core.trust import TrustStore
from broker.core.trust_update import EncryptionDirectory
from broker.exchange.gateway.context import GatewayContext
from broker.exchange.personal_keys import KeyUnwrapper, PersonalDataKeys, ReloadingDecryptor
from broker.state.key_files import crl_number, newest_crl
from broker.state.keystore import KeyStore

SIGNER_REFRESH = timedelta(seconds=60)


def key_store_fingerprint(root: Path) -> str:
    """A digest of every file's name, size, modification time and inode under `root`: any write (an
    atomic replace too) changes it, and nothing is read but the directory entries."""
    entries = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            if name.startswith("."):  # the temporary file of an atomic write
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):  # removed while we walked
                info = os.stat(path)
                entries.append(
                    f"{os.path.relpath(path, root)}|{info.st_size}|{info.st_mtime_ns}|{info.st_ino}"
                )
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


@dataclass(frozen=True)
class KeyMaterial:
    """What the gateway uses from its key store, as read at one moment."""

    trust: TrustStore
    directory: EncryptionDirectory
    gateway_signer: Signer
    pieces: frozenset[str]  # one line per certificate, CRL and private key: what a reload tells apart


class GatewayKeys:
    """The key store as one gateway uses it; `load` reads everything, the rest is cached."""

    def __init__(
        self, *, keystore: KeyStore, agreement: Agreements, country: str, crl_grace: timedelta
    ) -> None:
        self.keystore = keystore
        self._agreement = agreement
        self._country = country
        self._crl_grace = crl_grace
        self._gateway_id = agreement.gateway(country).id
        self._signers: dict[str, tuple[datetime, Signer]] = {}
        self._decryptors: dict[str, ReloadingDecryptor] = {}

    def load(self, at: datetime) -> KeyMaterial:
        """Read trust, key-agreement certificates and the gateway's key (blocking: disk)."""
        trust = self.keystore.trust_store(self._agreement.countries, crl_grace=self._crl_grace)
        directory = EncryptionDirectory.of(
            (
                cert
                for a in self._agreement.authorities
                for cert in self.keystore.encryption_certificates(a.id)
            ),
            trust=trust,
            at=at,
        )
        signer = self.keystore.signer(self._gateway_id, at=at)
        return KeyMaterial(trust, directory, signer, frozenset(self._pieces(trust, directory, signer)))

    def _pieces(self, trust: TrustStore, directory: EncryptionDirectory, signer: Signer) -> Iterator[str]:
        for country in sorted(trust.countries):
            yield from (f"CA {country} {cert.serial_number:x}" for cert in trust.anchors(country))
            crl = newest_crl(list(trust.crls(country)))
            if crl is not None:
                yield f"CRL {country} number {crl_number(crl)}"
        for holder, certs in directory.certificates.items():
            yield from (f"key-agreement certificate {holder} {cert.serial_number:x}" for cert in certs)
        yield f"gateway signing key {signer.authority_id} {signer.chain[0].serial_number:x}"
        for authority in self._agreement.authorities:
            if authority.country != self._country:
                continue
            for cert in self.keystore.signing_certificates(authority.id):
                yield f"signing certificate {authority.id} {cert.serial_number:x}"
            with contextlib.suppress(ExchangeError):  # an authority without key agreement
                for kid in self.keystore.decryptor(authority.id).keys:
                    yield f"key-agreement private key {authority.id} {kid}"

    def signer_for(self, authority_id: str, *, at: datetime) -> Signer:
        """Loading a signer reads key files and checks the chain: once a minute, not once per message.
        A rotated or revoked key is picked up on the next load (or reload); one about to expire is
        never reused."""
        cached = self._signers.get(authority_id)
        if (
            cached is None
            or at - cached[0] > SIGNER_REFRESH
            or at + SIGNER_REFRESH >= cached[1].chain[0].not_valid_after_utc
        ):
            cached = (at, self.keystore.signer(authority_id, at=at))
            self._signers[authority_id] = cached
        return cached[1]

    def decryptor_for(self, authority_id: str) -> KeyUnwrapper:
        """Key-agreement keys are read from disk once per authority, not once per message."""
        decryptor = self._decryptors.get(authority_id)
        if decryptor is None:
            decryptor = self._decryptors[authority_id] = ReloadingDecryptor(self.keystore, authority_id)
        return decryptor

    def forget_cached(self) -> None:
        self._signers.clear()
        self._decryptors.clear()


class KeyHolder(Protocol):
    """Where a reload puts what it read: the gateway."""

    @property
    def personal(self) -> PersonalDataKeys | None: ...

    def replace_trust(self, trust: TrustStore) -> None: ...

    def replace_gateway_signer(self, signer: Signer) -> None: ...


class KeyWatcher:
    """Reloads a running gateway's keys when its key store changes (module docstring)."""

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        keys: GatewayKeys,
        loaded: KeyMaterial,
        fingerprint: str,
        interval_s: float,
    ) -> None:
        self._ctx = ctx
        self._keys = keys
        self._loaded = loaded
        self._fingerprint = fingerprint
        self._interval_s = interval_s
        self._holder: KeyHolder | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, holder: KeyHolder) -> None:
        self._holder = holder
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="key-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # never let the watch end: the gateway would silently stop following
                self._ctx.log.exception("keys.watch_failed")

    async def check(self, *, force: bool = False) -> bool:
        """Reload if the key store changed since the last look (or `force`); True if anything changed."""
        ctx = self._ctx
        fingerprint = await asyncio.to_thread(key_store_fingerprint, self._keys.keystore.root)
        if fingerprint == self._fingerprint and not force:
            return False
        async with ctx.key_lock:  # not while a trust update is being written and applied
            try:
                material = await asyncio.to_thread(self._keys.load, ctx.clock())
            except ExchangeError as error:
                self._fingerprint = fingerprint  # tried again at the next change, not every few seconds
                ctx.metrics.keys_reloaded.labels("failed").inc()
                ctx.log.error(  # noqa: TRY400 - the diagnostic says it all; no traceback
                    "keys.reload_failed",
                    reason=str(error.reason),
                    diagnostic=error.diagnostic,
                    kept="the keys loaded before",
                )
                return False
            material = self._with_live_trust(material)
            self._swap_in(material)
        added, removed = material.pieces - self._loaded.pieces, self._loaded.pieces - material.pieces
        self._fingerprint, self._loaded = fingerprint, material
        if not added and not removed:
            ctx.log.debug("keys.unchanged")
            return False
        ctx.metrics.keys_reloaded.labels("changed").inc()
        ctx.log.info("keys.reloaded", added=sorted(added), removed=sorted(removed))
        return True

    def _with_live_trust(self, material: KeyMaterial) -> KeyMaterial:
        """Keep what the running gateway holds beyond the disk: a newer CRL, trusted certificates."""
        ctx = self._ctx
        trust = material.trust
        for country in sorted(trust.countries & ctx.trust.countries):
            live = newest_crl(list(ctx.trust.crls(country)))
            read = newest_crl(list(trust.crls(country)))
            if live is not None and (read is None or crl_number(live) > crl_number(read)):
                with contextlib.suppress(VerificationError):  # signed by a CA no longer trusted
                    trust = trust.with_crl(country, live)
        held = [material.directory] + ([ctx.personal.directory] if ctx.personal is not None else [])
        directory = EncryptionDirectory.of(  # `of` leaves out what `trust` no longer vouches for
            (cert for each in held for certs in each.certificates.values() for cert in certs),
            trust=trust,
            at=ctx.clock(),
        )
        return KeyMaterial(trust, directory, material.gateway_signer, material.pieces)

    def _swap_in(self, material: KeyMaterial) -> None:
        holder = self._holder
        if holder is None:
            return
        holder.replace_trust(material.trust)
        if holder.personal is not None:
            holder.personal.directory = material.directory
        if certificate_thumbprint(material.gateway_signer.chain[0]) != certificate_thumbprint(
            self._ctx.gateway_signer.chain[0]
        ):
            holder.replace_gateway_signer(material.gateway_signer)
        self._keys.forget_cached()
