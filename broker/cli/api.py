"""`broker api serve|openapi|token`: the HTTP API for ministry systems, its contract, its bearer tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from broker.cli.common import ConfigOption, CountryOption, exit_with, load_settings, run, stop_on_signals
from broker.cli.output import console, err_console, print_table
from broker.core.errors import LocalError, PolicyError, Reason
from broker.state.api_tokens import TokenFile

api_app = typer.Typer(
    help="The HTTP API for ministry systems (docs/http-api.md): serve it, print its contract, issue tokens.",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="Bearer tokens: one per calling system, acting as one authority.", no_args_is_help=True
)
api_app.add_typer(token_app, name="token")


@api_app.command()
def serve(country: CountryOption, config: ConfigOption = None) -> None:
    """Serve the API beside this country's running gateway (api_address:api_port) until interrupted."""
    from broker.api.server import serving  # noqa: PLC0415 - keeps other commands free of uvicorn start-up
    from broker.exchange import runtime  # noqa: PLC0415

    settings = load_settings(country, config, service=True)
    runtime.use_fast_event_loop()

    async def go() -> None:
        stop = stop_on_signals()
        async with serving(settings) as port:
            console.print(
                f"HTTP API of {settings.country} on http://{settings.api_address}:{port}/v1 "
                f"(contract: /v1/openapi.json). Ctrl-C stops."
            )
            await stop.wait()

    run(go)


@api_app.command()
def openapi() -> None:
    """Print the OpenAPI document (what schemas/openapi.json holds)."""
    from broker.api.app import openapi_document  # noqa: PLC0415

    typer.echo(openapi_document(), nl=False)


@token_app.command("issue")
def issue_token(
    authority: Annotated[
        str, typer.Option("--authority", help="The authority the token acts as, e.g. TJ-MOL.")
    ],
    country: CountryOption,
    config: ConfigOption = None,
) -> None:
    """Issue a bearer token for a calling system; it is printed once and only its hash is kept."""
    settings = load_settings(country, config)
    try:
        found = settings.agreement_set().authority(authority)
    except PolicyError as error:
        exit_with(error)
    if found.country != settings.country:
        exit_with(
            LocalError(
                Reason.CONFIG_INVALID,
                f"{authority} is an authority of {found.country}; {settings.country}'s API serves only its own",
            )
        )
    tokens = TokenFile(settings.api_tokens_path)
    token, record = tokens.issue(authority, now=datetime.now(UTC))
    typer.echo(token)
    err_console.print(
        f"token {record.token_id} for {authority}; only its hash is kept in {tokens.path}. "
        "Store it now: it is not shown again."
    )


@token_app.command("list")
def list_tokens(country: CountryOption, config: ConfigOption = None) -> None:
    """The tokens issued (id, authority, when), never the tokens themselves."""
    settings = load_settings(country, config)
    rows = [
        {"id": r.token_id, "authority": r.authority, "issued_at": r.issued_at.isoformat()}
        for r in TokenFile(settings.api_tokens_path).records()
    ]
    print_table(("id", "authority", "issued_at"), rows)


@token_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (`broker api token list`).")],
    country: CountryOption,
    config: ConfigOption = None,
) -> None:
    """Revoke a token; a running API refuses it from its next request on."""
    settings = load_settings(country, config)
    record = TokenFile(settings.api_tokens_path).revoke(token_id)
    if record is None:
        exit_with(LocalError(Reason.CONFIG_INVALID, f"no API token {token_id} (see `broker api token list`)"))
    console.print(f"revoked token {token_id} of {record.authority}")
