"""Secrets on disk that others could read: a process refuses to start with them (`config.secret_exposed`).

Every private key is written 0600 (`key_files`), and so is the secrets file of RabbitMQ passwords
(`provisioning`); a copy made with `cp -r`, an archive unpacked under another umask or a `chmod` by
hand can still open one to the group or to every user of the host. A gateway that started anyway
would sign with a key anyone there may have copied, so it says which file, and stops. Group access
counts too: a key is its authority's alone, as ssh treats its own.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

from broker.core.errors import ConfigError, Reason

PRIVATE_KEY_GLOB = "*.key.pem"
# Any right of the group or of others.
_SHARED = stat.S_IRWXG | stat.S_IRWXO


def exposed(path: Path) -> int | None:
    """The mode of `path` when its group or others may use it; None when it is private (or absent)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot look at {path}: {exc.strerror}") from None
    return mode if mode & _SHARED else None


def private_keys(keys_dir: Path) -> list[Path]:
    """Every private key file under a key store (CA, signing and key-agreement keys)."""
    try:
        return sorted(keys_dir.rglob(PRIVATE_KEY_GLOB)) if keys_dir.is_dir() else []
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot list {keys_dir}: {exc.strerror}") from None


def refuse_exposed_secrets(*, keys_dir: Path, secret_files: Iterable[Path | None] = ()) -> None:
    """`config.secret_exposed` naming the first private key or secret file its group or others may read."""
    candidates = [*private_keys(keys_dir), *(path for path in secret_files if path is not None)]
    for path in candidates:
        mode = exposed(path)
        if mode is None:
            continue
        what = "private key" if path.name.endswith(".key.pem") else "secrets file"
        raise ConfigError(
            Reason.CONFIG_SECRET_EXPOSED,
            f"{what} {path} is open to other users of this host (mode {mode:04o}): `chmod 600 {path}`, "
            f"and treat it as copied: rotate it ({_rotation(what)})",
        )


def _rotation(what: str) -> str:
    if what == "private key":
        return "`broker keys rotate --authority <ID>`"
    return "remove the password from the file and run `broker topology apply`"
