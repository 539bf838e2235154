"""`broker keys kit`: the folder an operator hands to a subscriber (a consulate), and nothing more.

The operator runs it beside the country's gateway settings, which name the key store and the secrets
file of RabbitMQ passwords; the kit takes from them only what the subscriber needs
(`broker.state.subscriber_kit` has the layout). The subscriber's RabbitMQ user and its queue are
made by `broker topology apply`; a kit made first gets a password generated into the secrets file,
which the next `topology apply` sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

from broker.cli.common import ConfigOption, JsonOption, exit_with, load_settings
from broker.cli.output import console
from broker.core.agreement import load_agreement
from broker.core.errors import ConfigError, ExchangeError, PolicyError, Reason
from broker.core.pki import authority_country
from broker.exchange.ministries import subscriber_user, subscriptions, vhost_of
from broker.exchange.provisioning import load_passwords
from broker.state.settings import ExchangeSettings
from broker.state.subscriber_kit import KitRequest, make_kit


def kit(
    authority: Annotated[str, typer.Option("--as", help="The subscriber, e.g. TJ-CONSULATE-MOSCOW.")],
    out: Annotated[Path, typer.Option("--out", help="The kit's folder: empty, or this subscriber's kit.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make (or bring up to date) a subscriber's kit: its settings, its RabbitMQ password, the CA
    certificates and CRLs, and its own key-agreement keys. No other secret."""
    try:
        country = authority_country(authority)
    except ExchangeError as error:
        exit_with(error)
    settings = load_settings(country, config)
    try:
        request = _request(authority, country, settings)
        made = make_kit(out, request)
    except ExchangeError as error:
        exit_with(error)
    if as_json:
        listing = {"kit": str(out), "authority": authority, "user": request.user}
        typer.echo(json.dumps({**listing, "files": [str(path) for path in made.files]}))
        return
    console.print(f"kit of {authority} in {out} (RabbitMQ user {request.user}):", markup=False)
    for path in made.files:
        console.print(f"  {path}", markup=False, highlight=False)
    console.print(
        f"Hand the folder over privately; the subscriber runs `broker subscribe --as {authority} "
        f"--kit {out}`.",
        markup=False,
    )


def _request(authority: str, country: str, settings: ExchangeSettings) -> KitRequest:
    agreement = load_agreement(settings.agreement_file)
    if authority not in subscriptions(agreement, country):
        raise PolicyError(
            Reason.POLICY_SUBSCRIBER_NOT_ALLOWED,
            f"{authority} receives nothing under agreement {agreement.id}: only a subscriber gets a kit",
        )
    if settings.secrets_file is None:
        raise ConfigError(
            Reason.CONFIG_INVALID,
            "the settings name no secrets_file: the subscriber's password is kept there "
            "(`broker init` sets it)",
        )
    parts = urlsplit(settings.amqp_url)
    user = subscriber_user(vhost_of(settings.amqp_url), country, authority)
    host = parts.netloc.rpartition("@")[2]
    url = urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, ""))
    password = load_passwords(settings.secrets_file, [user])[user]
    return KitRequest(
        authority_id=authority,
        country=country,
        amqp_url=url,
        user=user,
        password=password,
        keys_dir=settings.keys_dir,
        peers=tuple(c for c in agreement.countries if c != country),
        agreement_file=settings.agreement_file,
        plaintext_hosts=settings.plaintext_hosts,
        crl_grace_s=settings.crl_grace_s,
    )
