"""`bench spec ...`: the JSON Schema editors use to validate specs."""

import json

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a spec file."""
    from benchsuite.spec import Spec

    typer.echo(json.dumps(Spec.model_json_schema(), indent=2))
