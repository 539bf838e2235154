"""RabbitMQ passwords from the environment: `RABBITMQ_PASSWORD_<USER>`, beside the secrets file.

A container is given exactly the passwords of the users it logs in as (compose interpolates them
from `.env`), instead of a secrets file holding every user's. The name is the user's, upper-cased,
with every character but letters and digits turned into `_`: `tj-gateway` → `RABBITMQ_PASSWORD_TJ_GATEWAY`.
A password given this way wins over the secrets file's and is never written into it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

PASSWORD_ENV_PREFIX = "RABBITMQ_PASSWORD_"  # noqa: S105 - a variable name, not a password


def password_variable(user: str) -> str:
    """The environment variable that holds `user`'s password."""
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", user.upper())


def environment_password(user: str, environ: Mapping[str, str] | None = None) -> str | None:
    """`user`'s password from its variable, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(password_variable(user), "")
    return value or None
