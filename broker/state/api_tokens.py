"""The HTTP API's bearer tokens: only their SHA-256 is kept, with the authority each one acts as.

A token is 256 random bits, shown once when it is issued (`broker api token issue`) and never
stored: the file holds its SHA-256, which identifies it and cannot be turned back into it. A
256-bit random secret needs no salt or slow hash (those protect guessable passwords). The file is
kept 0600 and re-read when it changes, so a token issued or revoked while the API runs counts at
once. Each token has a short public id for logs and revocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from broker.core.errors import ConfigError, Reason
from broker.state.private_files import private_directory, write_private

TOKEN_PREFIX = "lxa_"  # noqa: S105 - a prefix, not a secret: recognisable in a leaked log or a secret scanner


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    authority: str
    issued_at: datetime


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_digest: dict[str, TokenRecord] = {}
        self._seen: tuple[int, int] | None = None

    def lookup(self, token: str) -> TokenRecord | None:
        """The record of a presented token, or None (re-reading the file if it changed)."""
        self._refresh()
        return self._by_digest.get(token_digest(token))

    def records(self) -> list[TokenRecord]:
        self._refresh()
        return sorted(self._by_digest.values(), key=lambda r: (r.authority, r.issued_at))

    def issue(self, authority: str, *, now: datetime) -> tuple[str, TokenRecord]:
        """A new token for `authority`: (the token, to be shown once; its record)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(token_id=secrets.token_hex(4), authority=authority, issued_at=now)
        entries = self._read()
        entries[token_digest(token)] = record
        self._write(entries)
        return token, record

    def revoke(self, token_id: str) -> TokenRecord | None:
        entries = self._read()
        for digest, record in list(entries.items()):
            if record.token_id == token_id:
                del entries[digest]
                self._write(entries)
                return record
        return None

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._by_digest, self._seen = {}, None
            return
        except OSError as exc:
            raise ConfigError(
                Reason.CONFIG_INVALID, f"cannot read API tokens {self.path}: {exc.strerror}"
            ) from None
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._by_digest, self._seen = self._read(), seen

    def _read(self) -> dict[str, TokenRecord]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"cannot read API tokens {self.path}: {exc}") from None
        try:
            return {
                str(entry["sha256"]): TokenRecord(
                    token_id=str(entry["id"]),
                    authority=str(entry["authority"]),
                    issued_at=datetime.fromisoformat(str(entry["issued_at"])),
                )
                for entry in document["tokens"]
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"API tokens {self.path}: not what `broker api token issue` writes ({exc})",
            ) from None

    def _write(self, entries: dict[str, TokenRecord]) -> None:
        document = {
            "tokens": [
                {
                    "id": record.token_id,
                    "authority": record.authority,
                    "issued_at": record.issued_at.isoformat(),
                    "sha256": digest,
                }
                for digest, record in entries.items()
            ]
        }
        # Written beside, then renamed: a running API never reads half a file.
        private_directory(self.path.parent)
        partial = self.path.with_name(self.path.name + ".partial")
        write_private(partial, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        os.replace(partial, self.path)
        self._seen = None
