"""`filtercast serve` and `python -m filtercast_server`: the server's command line.

Building and parsing it imports no TensorFlow, so `--help` and a bad flag
answer at once; TensorFlow is imported when the server starts.
"""

from typing import Any

import click

from filtercast_server.config import settings_from, settings_options


@click.command(context_settings={"max_content_width": 110})
@settings_options
def serve(**values: Any) -> None:
    """Run the gRPC server: load the models, then stream filter visualizations.

    Every flag has a FILTERCAST_<NAME> environment twin (the flag wins).
    TensorFlow's own start-up logging is silenced; FILTERCAST_TF_LOG=1 shows it.
    """
    try:
        from filtercast_server.main import run  # imports TensorFlow
    except ImportError as error:  # a client-only install: the package is there, its extra not
        raise click.ClickException(
            f"serve needs the server extra ({error}); pip install 'filtercast[server]'"
        ) from error
    raise SystemExit(run(settings_from(values)))
