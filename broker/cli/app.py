"""`broker`: one command for setting up a country, keys, topology, gateways, sending, subscribing, status, quarantine, the HTTP API, demo.

Every failure of every command leaves through `main`: one line `error [reason.code] what is wrong` on
standard error and a non-zero exit status; `--debug` (anywhere on the line) adds the traceback.
Exit status: 0 done, 1 the exchange refused or failed (the reason code says why), 2 the command was
called wrongly, 70 a bug, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated, Any

import typer

from broker.cli.adapt import adapt_app
from broker.cli.api import api_app
from broker.cli.audit import audit_app
from broker.cli.country import init
from broker.cli.demo import demo
from broker.cli.gateway import gateway, send, status
from broker.cli.keys import keys_app
from broker.cli.output import error_line, print_error, set_debug
from broker.cli.quarantine import quarantine_app
from broker.cli.subscribe import subscribe
from broker.cli.topology import topology_app
from broker.core.errors import ExchangeError, Reason

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
# Typer vendors click privately in some releases: find its usage-error base through a public class.
_USAGE_ERROR: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)

app = typer.Typer(
    help=__doc__.split("\n", 1)[0],
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(init)
app.add_typer(
    keys_app, name="keys", help="Country CAs, authority certificates, rotation, revocation, trust bundles"
)
app.add_typer(topology_app, name="topology", help="RabbitMQ vhosts, users, queues and shovel links")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(audit_app, name="audit")
app.add_typer(adapt_app, name="adapt")
app.add_typer(api_app, name="api")
for command in (gateway, send, subscribe, status, demo):
    app.command()(command)


def version() -> str:
    try:
        return metadata.version("labour-exchange")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"broker {version()}")
        raise typer.Exit(0)


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit."),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(DEBUG_FLAG, help="Print the traceback of a failure (accepted anywhere on the line)."),
    ] = False,
) -> None:
    """A signed, audited exchange of labour-migration notices between two countries' gateways."""


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run one command and turn every failure into one line and an exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get("BROKER_DEBUG") == "1"
    args = [arg for arg in args if arg != DEBUG_FLAG]
    set_debug(debug)
    try:
        # Not standalone: failures come back here as exceptions, and an Exit as its status.
        status = typer.main.get_command(app).main(args=args, prog_name="broker", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print_error(f"[{Reason.CLI_USAGE}] interrupted")
        return EXIT_INTERRUPTED
    except _USAGE_ERROR as wrong:
        _traceback_if(debug)
        hint = f" (see `{' '.join(['broker', *_command_path(args)])} --help`)"
        message = getattr(wrong, "format_message", wrong.__str__)()
        print_error(f"[{Reason.CLI_USAGE}] {message}{hint}")
        return EXIT_USAGE
    except ExchangeError as error:
        _traceback_if(debug)
        print_error(error_line(error))
        return EXIT_REFUSED
    except Exception as bug:
        _traceback_if(debug)
        print_error(
            f"[{Reason.INTERNAL_ERROR}] {type(bug).__name__}: {bug} (run again with --debug for the traceback)"
        )
        return EXIT_BUG
    return status if isinstance(status, int) else 0


def _traceback_if(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


def _command_path(args: Sequence[str]) -> list[str]:
    """The command and sub-command names the user typed: for the help hint."""
    path: list[str] = []
    command: Any = typer.main.get_command(app)
    for arg in args:
        commands = getattr(command, "commands", {})
        if arg not in commands:
            break
        path.append(arg)
        command = commands[arg]
    return path


__all__ = ["app", "main"]
