"""Which connections may leave this host, and how they must check the server (pure, no I/O).

A connection to a host other than this one crosses a network someone else may sit on. It must then
use TLS and verify the server: its certificate chain against a CA we name and its host name. The
clients differ in what they do by default, so each gets its own rule:

- aio-pika (`amqps://`): verifies chain and host name unless the URL says `no_verify_ssl`.
- the shovel (Erlang's amqp client, `amqps://`): verifies nothing unless the URI carries
  `verify=verify_peer`, `cacertfile` and `server_name_indication`; `shovel_query` adds them.
- httpx (the management API, `https://`): always verifies chain and host name.
- asyncpg (`postgresql://`): `sslmode` defaults to `prefer`, which checks neither certificate nor
  host name and falls back to plaintext; only `verify-full` does both.

Plaintext (`amqp://`, `http://`, PostgreSQL `sslmode=disable`) to a non-local host is refused too, unless the
host is listed in `plaintext_hosts` (a private container network, say). Diagnostics name the
scheme and host, never the URL: it may carry a password.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from urllib.parse import parse_qsl, quote, urlsplit

from broker.core.errors import ConfigError, Reason

PG_VERIFYING_MODE = "verify-full"
_PLAINTEXT_OPTIONS = "settings plaintext_hosts, `broker topology --plaintext-host`"


def is_local_host(host: str | None) -> bool:
    """`localhost`, a loopback address, a Unix socket directory, or no host (the client's default)."""
    if not host or host.startswith("/"):
        return True
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _insecure(what: str) -> ConfigError:
    return ConfigError(Reason.CONFIG_INSECURE_TLS, what)


def _allowed_plaintext(host: str, plaintext_hosts: Collection[str]) -> bool:
    return host.lower() in {name.lower() for name in plaintext_hosts}


def check_amqp_url(url: str, *, plaintext_hosts: Collection[str] = ()) -> None:
    """An AMQP URL aio-pika will connect to: TLS with verification to any non-local host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_local_host(host):
        return
    if parts.scheme == "amqp":
        if _allowed_plaintext(host, plaintext_hosts):
            return
        raise _insecure(
            f"amqp://{host}: plaintext AMQP to a non-local host; use amqps:// (verified TLS), or allow "
            f"{host} explicitly ({_PLAINTEXT_OPTIONS}) if it is on a private network"
        )
    query = dict(parse_qsl(parts.query))
    if query.get("no_verify_ssl", "0") != "0":
        raise _insecure(f"amqps://{host}: no_verify_ssl turns off certificate verification")


def check_http_url(url: str, *, plaintext_hosts: Collection[str] = ()) -> None:
    """A management API URL: `https://` to any non-local host (httpx always verifies chain and host
    name, there is no switch to turn it off), plain `http://` only locally or to an allowed host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"management API URL must be http(s)://host:port, not {url!r}"
        )
    if parts.username or parts.password:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            "management API URL must not carry credentials (give user and password apart)",
        )
    host = parts.hostname
    if parts.scheme == "http" and not is_local_host(host) and not _allowed_plaintext(host, plaintext_hosts):
        raise _insecure(
            f"http://{host}: the management API's password would cross the network in clear; use "
            f"https:// (verified TLS), or allow {host} explicitly ({_PLAINTEXT_OPTIONS}) if it is on a "
            "private network"
        )


def shovel_query(url: str, *, plaintext_hosts: Collection[str] = ()) -> str:
    """The query string of a shovel URI for `url`: the checks Erlang's TLS client must make.

    For `amqps://` with a `cacertfile` (or `cafile`) it pins `verify=verify_peer` and
    `server_name_indication=<host>` (which makes Erlang check the host name) and gives the CA under
    both spellings, so the same URI serves the shovel and aio-pika. A non-local `amqps://` without a
    CA file, or with verification or SNI turned off, is refused; so is non-local plaintext.
    """
    check_amqp_url(url, plaintext_hosts=plaintext_hosts)
    parts = urlsplit(url)
    host = parts.hostname or ""
    pairs = parse_qsl(parts.query)
    if parts.scheme != "amqps":
        return parts.query
    query = dict(pairs)
    cafile = query.get("cacertfile") or query.get("cafile")
    local = is_local_host(host)
    if not local:
        if not cafile:
            raise _insecure(
                f"amqps://{host}: give the CA that signed the broker's certificate as "
                f"?cacertfile=<path on the broker host>; without it the shovel verifies nothing"
            )
        if query.get("verify", "verify_peer") != "verify_peer":
            raise _insecure(f"amqps://{host}: verify={query['verify']} turns off certificate verification")
        if query.get("server_name_indication", host) != host:
            raise _insecure(
                f"amqps://{host}: server_name_indication must be the host itself, or the host name "
                "is not checked"
            )
    if not cafile:
        return parts.query
    pinned = {"cacertfile": cafile, "cafile": cafile, "verify": "verify_peer"}
    pinned["server_name_indication"] = query.get("server_name_indication", host)
    rest = [(key, value) for key, value in pairs if key not in pinned]
    return "&".join(f"{key}={quote(value, safe='/:')}" for key, value in [*pinned.items(), *rest])


def _pg_hosts(netloc: str, query: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """The hosts asyncpg would connect to (`host1:port,host2` or `?host=`, else PGHOST)."""
    hostlist = netloc.rpartition("@")[2]
    hosts = []
    for item in hostlist.split(","):
        if item.startswith("["):
            hosts.append(item[1:].partition("]")[0])
        else:
            hosts.append(item.partition(":")[0])
    hosts = [host for host in hosts if host]
    if not hosts:
        hosts = [host for host in (query.get("host") or environ.get("PGHOST", "")).split(",") if host]
    return hosts


def check_postgres_dsn(
    dsn: str, *, plaintext_hosts: Collection[str] = (), environ: Mapping[str, str] | None = None
) -> None:
    """A PostgreSQL URI asyncpg will connect to: `sslmode=verify-full` to any non-local host.

    `environ` is where asyncpg would read PGHOST and PGSSLMODE from (the process environment).
    """
    environ = {} if environ is None else environ
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(Reason.CONFIG_INVALID, "a PostgreSQL DSN must start with postgresql://")
    query = dict(parse_qsl(parts.query))
    mode = query.get("sslmode") or environ.get("PGSSLMODE") or "prefer"
    for host in _pg_hosts(parts.netloc, query, environ):
        if is_local_host(host) or mode == PG_VERIFYING_MODE:
            continue
        if _allowed_plaintext(host, plaintext_hosts):
            continue
        raise _insecure(
            f"PostgreSQL at {host}: sslmode={mode} does not verify the server's certificate and host "
            f"name; use sslmode={PG_VERIFYING_MODE} (with sslrootcert=<CA file>), or allow {host} "
            f"explicitly ({_PLAINTEXT_OPTIONS}) if it is on a private network"
        )
