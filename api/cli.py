"""The `coin` command: the library's commands, the science's and the service's, in one flat CLI."""

import typer

from auditor.cli import app as protocol_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="CoIn Audit: audit hidden reasoning tokens."
)
for sub in (protocol_app,):
    app.registered_commands.extend(sub.registered_commands)
