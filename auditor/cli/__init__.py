"""The `coin` command: the protocol's commands (`commit`, `respond`, `verify-openings`), the science's
(`train-heads`, `eval`) and those of every installed plugin.

A plugin is an entry point in the group `coin.commands` naming a `typer.Typer` whose commands join the
flat `coin` CLI: the service registers its own (`coin api`, `coin worker`, `coin migrate`, …) that way,
so this package never imports the service, and a bare install (the provider SDK and the offline
verifier) has a working `coin` without it.
"""

from importlib.metadata import entry_points

import typer

from auditor.cli.protocol import app as protocol_app
from auditor.cli.science import app as science_app

PLUGIN_GROUP = "coin.commands"


def build_app() -> typer.Typer:
    app = typer.Typer(
        no_args_is_help=True, add_completion=False, help="CoIn Audit: audit hidden reasoning tokens."
    )
    groups = [protocol_app, science_app]
    missing = []
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            groups.append(plugin.load())
        except ImportError as exc:
            missing.append(f"{plugin.name} ({exc.name or exc})")
    for group in groups:
        app.registered_commands.extend(group.registered_commands)
    if missing:
        app.info.epilog = (
            f"Not available: the {', '.join(missing)} commands; install `coin-audit[service]` for them."
        )
    return app


def main() -> None:
    build_app()()
