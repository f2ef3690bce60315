"""The `coin` command: the protocol library's commands, the science's and the service's, in one flat
CLI (each group lives beside the code it drives)."""

import typer

from api.service_cli import app as service_app
from auditor.cli import app as protocol_app
from auditor.science_cli import app as science_app

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="CoIn Audit: audit hidden reasoning tokens."
)
for group in (protocol_app, science_app, service_app):
    app.registered_commands.extend(group.registered_commands)
