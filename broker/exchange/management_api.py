"""RabbitMQ's management HTTP API: where it is, who logs in, and one error mapping for every call.

`broker topology` administers a node through it (`rabbit_admin`) from any host that reaches the
API: no `rabbitmqctl`, no Erlang cookie, no shell on the broker's host. (A gateway no longer reads
it: readiness judges the link from its queue, `health`.) httpx is the client; it verifies TLS chain and host
name and offers no switch to stop (`broker.core.tls_policy.check_http_url` refuses plaintext to
other hosts). Passwords never appear in a URL, a log line or an error: diagnostics name the API's
scheme, host and port, and any password the client knows is masked in what the API answers.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from broker.core.errors import ConfigError, Reason, TransportError
from broker.core.tls_policy import check_http_url, is_local_host

ENV_URL = "RABBITMQ_ADMIN_URL"
ENV_USER = "RABBITMQ_ADMIN_USER"
ENV_PASSWORD = "RABBITMQ_ADMIN_PASSWORD"  # noqa: S105 - the variable's name, not a password
ENV_CA_FILE = "RABBITMQ_ADMIN_CA_FILE"
DEFAULT_URL = "http://127.0.0.1:15672"
# RabbitMQ's own first user, which it only lets in from the loopback interface: a default for a
# development node on this host and nowhere else.
LOCAL_USER = LOCAL_PASSWORD = "guest"  # noqa: S105 - RabbitMQ's well-known default, loopback only
CREDENTIAL_KEYS = ("url", "user", "password", "ca_file")
MASK = "********"
_URI_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


@dataclass(frozen=True)
class ManagementEndpoint:
    """The management API of one RabbitMQ node (or cluster) and the user that logs in to it."""

    url: str
    user: str
    password: str = field(repr=False)
    ca_file: Path | None = None
    timeout_s: float = 30.0
    plaintext_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_http_url(self.url, plaintext_hosts=self.plaintext_hosts)
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not self.user or not self.password:
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"no user or password for the management API at {self.where} "
                f"({ENV_USER}/{ENV_PASSWORD} or --admin-credentials)",
            )
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ConfigError(Reason.CONFIG_INVALID, f"management API CA file {self.ca_file} does not exist")

    @property
    def where(self) -> str:
        """scheme://host:port of the API, for diagnostics (never credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    @classmethod
    def configure(
        cls,
        *,
        credentials_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        plaintext_hosts: Collection[str] = (),
    ) -> ManagementEndpoint:
        """From `credentials_file` (JSON: url, user, password, ca_file), else RABBITMQ_ADMIN_* variables.

        Without a user, a management API on this host is reached as RabbitMQ's `guest` (which the
        node only admits from loopback); any other host needs credentials.
        """
        values = dict(os.environ if environ is None else environ)
        given = {
            "url": values.get(ENV_URL),
            "user": values.get(ENV_USER),
            "password": values.get(ENV_PASSWORD),
            "ca_file": values.get(ENV_CA_FILE),
        }
        if credentials_file is not None:
            given |= _read_credentials(credentials_file)
        url = given["url"] or DEFAULT_URL
        user, password = given["user"], given["password"]
        if not user and not password and is_local_host(urlsplit(url).hostname):
            user, password = LOCAL_USER, LOCAL_PASSWORD
        return cls(
            url=url,
            user=user or "",
            password=password or "",
            ca_file=Path(given["ca_file"]) if given["ca_file"] else None,
            plaintext_hosts=tuple(plaintext_hosts),
        )

    def as_user(self, user: str, password: str) -> ManagementEndpoint:
        """The same API, logged in as another user (a gateway reading its own vhost)."""
        return ManagementEndpoint(
            url=self.url,
            user=user,
            password=password,
            ca_file=self.ca_file,
            timeout_s=self.timeout_s,
            plaintext_hosts=self.plaintext_hosts,
        )

    def _client_options(self) -> dict[str, Any]:
        verify: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.ca_file))  # checks the host name too
        return {
            "base_url": self.url,
            "auth": httpx.BasicAuth(self.user, self.password),
            "verify": verify,
            "timeout": self.timeout_s,
            "headers": {"content-type": "application/json"},
            "follow_redirects": False,
        }

    def client(self) -> httpx.Client:
        return httpx.Client(**self._client_options())

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(**self._client_options())


def _read_credentials(path: Path) -> dict[str, str | None]:
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"cannot read the management API credentials {path}: {type(exc).__name__}",
        ) from None
    if not isinstance(parsed, dict) or not set(parsed) <= set(CREDENTIAL_KEYS):
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"{path} must be a JSON object with some of {', '.join(CREDENTIAL_KEYS)}",
        )
    return {key: str(value) for key, value in parsed.items() if value is not None}


def path_of(*segments: str) -> str:
    """`/api/<segment>/...` with each name percent-encoded (a vhost may be `/`)."""
    return "/api/" + "/".join(quote(segment, safe="") for segment in segments)


@dataclass
class ApiErrors:
    """Turns what the API or the network did into our reason codes, masking every known password."""

    where: str
    secrets: set[str] = field(default_factory=set)

    def remember(self, *secrets: str) -> None:
        self.secrets |= {secret for secret in secrets if secret}

    def mask(self, text: str) -> str:
        text = _URI_PASSWORD.sub(rf"\1{MASK}@", text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK).replace(quote(secret, safe=""), MASK)
        return text

    def unreachable(self, exc: httpx.HTTPError, action: str) -> TransportError:
        return TransportError(
            Reason.TRANSPORT_UNAVAILABLE,
            self.mask(f"management API at {self.where}: {action}: {type(exc).__name__}: {exc}"),
        )

    def check(self, response: httpx.Response, action: str, *, user: str) -> None:
        """Raise for anything but 2xx."""
        status = response.status_code
        if status < 300:
            return
        detail = self.mask(_reason_text(response))[:500]  # masked whole: a cut must not halve a password
        said = f"management API at {self.where}: {action}: HTTP {status} {detail}".rstrip()
        if status == 401:
            raise TransportError(
                Reason.TRANSPORT_FORBIDDEN,
                f"{said} (user {user}: wrong password, or not an administrator of the management API)",
            )
        if status == 403:
            raise TransportError(Reason.TRANSPORT_FORBIDDEN, f"{said} (user {user} may not do this)")
        if status in (400, 404, 405, 409, 415):
            raise ConfigError(Reason.CONFIG_INVALID, said)
        raise TransportError(Reason.TRANSPORT_UNAVAILABLE, said)

    def json_of(self, response: httpx.Response, action: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise TransportError(
                Reason.TRANSPORT_UNAVAILABLE,
                f"management API at {self.where}: {action}: the answer is not JSON (is {self.where} "
                "RabbitMQ's management API?)",
            ) from None


def _reason_text(response: httpx.Response) -> str:
    """The API's reason, on one line (RabbitMQ pretty-prints Erlang terms over many)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
    else:
        text = str(body.get("reason") or body.get("error") or "") if isinstance(body, dict) else ""
    return " ".join(text.split())
