"""What a gateway needs to seal and open personal data: key-agreement certificates, private keys, the vault.

Kept out of the gateway so the gateway only asks three questions: which data key and header go with a
message I send, how do I open one I received, and which header lets my subscribers open it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

import structlog

from broker.core.agreement_set import Agreements
from broker.core.envelope import Envelope
from broker.core.errors import ConfigError
from broker.core.personal import (
    SEALED_KEY_HEADER,
    Decryptor,
    WrappedKey,
    committed_data_key,
    decode_key_header,
    encode_key_header,
    new_data_key,
    wrap_data_key,
)
from broker.core.pki import certificate_thumbprint
from broker.core.sealing import OpenedMessage
from broker.core.trust import TrustStore
from broker.core.trust_update import EncryptionDirectory
from broker.exchange.transport_api import HeaderValue
from broker.state.key_vault import KeyVault
from broker.state.keystore import KeyStore

log = structlog.get_logger("broker.core.personal")


class KeyUnwrapper(Protocol):
    """What opens a data key for one authority: a `Decryptor`, or a cache in front of one."""

    def unwrap(
        self, wraps: Sequence[WrappedKey], *, message_id: UUID, dek_sha256: str | None = None
    ) -> bytes: ...


class ReloadingDecryptor:
    """An authority's `Decryptor`, read from the key store once and again whenever no wrap names a
    key it holds (a key issued or restored since), so a new key never fails a message. A wrap that
    names a held key but does not open is tampering: re-reading the disk would not help."""

    def __init__(self, keystore: KeyStore, authority_id: str) -> None:
        self._keystore = keystore
        self._authority_id = authority_id
        self._decryptor: Decryptor | None = None

    def unwrap(
        self, wraps: Sequence[WrappedKey], *, message_id: UUID, dek_sha256: str | None = None
    ) -> bytes:
        decryptor = self._decryptor
        if decryptor is None or not decryptor.holds_a_key_for(wraps):
            decryptor = self._decryptor = self._keystore.decryptor(self._authority_id)
        return decryptor.unwrap(wraps, message_id=message_id, dek_sha256=dek_sha256)


class PersonalDataKeys:
    def __init__(
        self,
        *,
        directory: EncryptionDirectory,
        decryptor_for: Callable[[str], KeyUnwrapper],
        vault: KeyVault,
        auditors: Sequence[str] = (),
    ) -> None:
        self.directory = directory  # replaced when a trust update brings new certificates
        self._decryptor_for = decryptor_for
        self.vault = vault
        # Our country's auditors (agreement role `auditor`): every data key this gateway keeps in its
        # vault is wrapped for them too, so `broker audit bundle --key` can open it.
        self.auditors = tuple(auditors)

    def wrap_for_sending(
        self, *, message_id: UUID, sender: str, recipient: str, trust: TrustStore, at: datetime
    ) -> tuple[bytes, str]:
        """A fresh data key, and the header wrapping it for the recipient, the sender and our auditors."""
        data_key = new_data_key()
        wraps = [
            wrap_data_key(
                data_key,
                message_id=message_id,
                certificate=self.directory.current(recipient, trust=trust, at=at),
            )
        ]
        wraps += self._wraps_for(
            (sender, *self.auditors), data_key, message_id=message_id, trust=trust, at=at
        )
        return data_key, encode_key_header(wraps)

    def vault_header(
        self, opened: OpenedMessage, received: Sequence[WrappedKey], *, trust: TrustStore, at: datetime
    ) -> str:
        """What the receiving gateway keeps in its vault: the wraps the message came with (the
        recipient's opens a redelivered copy again) and wraps of its data key for our auditors."""
        assert opened.data_key is not None  # only an opened sealed payload has its key kept
        kept = [wrap for wrap in received if wrap.holder not in self.auditors]
        kept += self._wraps_for(
            self.auditors, opened.data_key, message_id=opened.envelope.id, trust=trust, at=at
        )
        return encode_key_header(kept)

    def _wraps_for(
        self, holders: Sequence[str], data_key: bytes, *, message_id: UUID, trust: TrustStore, at: datetime
    ) -> list[WrappedKey]:
        """Wraps for holders that may lack a key-agreement key: one missing is warned about, not fatal."""
        wraps = []
        for holder in holders:
            try:
                certificate = self.directory.current(holder, trust=trust, at=at)
            except ConfigError:
                log.warning(
                    "personal.holder_has_no_key_agreement_key", message_id=str(message_id), holder=holder
                )
                continue
            wraps.append(wrap_data_key(data_key, message_id=message_id, certificate=certificate))
        return wraps

    def data_key_source(self, headers: Mapping[str, HeaderValue]) -> ReceivedKey:
        """For `open_message`: unwrap the header's data key with the envelope recipient's private key."""
        return ReceivedKey(headers=headers, decryptor_for=self._decryptor_for)

    def delivery_header(
        self,
        opened: OpenedMessage,
        *,
        agreement: Agreements,
        country: str,
        trust: TrustStore,
        at: datetime,
        received: Sequence[WrappedKey] = (),
    ) -> str | None:
        """The data key re-wrapped to every local authority the agreement lets receive this type.

        `received` are the wraps the message came with (`ReceivedKey.wraps`): the recipient's is
        passed on as it is when it is the only one for the recipient and names the recipient's
        current certificate. It is known good (it is the wrap the gateway just opened the payload with), so
        wrapping the same key again for the same holder would only cost an HPKE operation.
        """
        if opened.data_key is None:
            return None
        rule = agreement.rule(opened.envelope.type)
        reusable = _recipients_wrap(opened, received)
        wraps = []
        for authority in agreement.authorities:
            if authority.country != country or not set(authority.roles) & set(rule.subscribers):
                continue
            try:
                certificate = self.directory.current(authority.id, trust=trust, at=at)
            except ConfigError:
                log.warning(
                    "personal.subscriber_has_no_key_agreement_key",
                    message_id=str(opened.envelope.id),
                    subscriber=authority.id,
                )
                continue
            if (
                reusable is not None
                and reusable.holder == authority.id
                and reusable.kid == certificate_thumbprint(certificate)
            ):
                wraps.append(reusable)
                continue
            wraps.append(
                wrap_data_key(opened.data_key, message_id=opened.envelope.id, certificate=certificate)
            )
        return encode_key_header(wraps)


def _recipients_wrap(opened: OpenedMessage, received: Sequence[WrappedKey]) -> WrappedKey | None:
    wraps = [w for w in received if w.holder == opened.envelope.recipient]
    return wraps[0] if len(wraps) == 1 else None


class ReceivedKey:
    """A received message's data key source (`open_message`'s `DataKeySource`). It keeps the wraps it
    decoded from the header, so delivery re-wraps from them without parsing the header again."""

    def __init__(
        self, *, headers: Mapping[str, HeaderValue], decryptor_for: Callable[[str], KeyUnwrapper]
    ) -> None:
        self._headers = headers
        self._decryptor_for = decryptor_for
        self.wraps: Sequence[WrappedKey] = ()  # filled when the payload is opened

    def __call__(self, envelope: Envelope) -> bytes:
        self.wraps = decode_key_header(self._headers.get(SEALED_KEY_HEADER))
        return self._decryptor_for(envelope.recipient).unwrap(
            self.wraps, message_id=envelope.id, dek_sha256=committed_data_key(envelope)
        )


def sealed_key_headers(header: str | None) -> dict[str, HeaderValue]:
    return {} if header is None else {SEALED_KEY_HEADER: header}
