"""`filtercast serve` and `python -m filtercast_server`: the server's command line.

Building and parsing it imports no TensorFlow, so `--help` and a bad flag
answer at once; TensorFlow is imported when the server starts.
"""

from typing import Any

import click

from filtercast_server.config import HELP, Settings, settings_from, settings_options


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


@click.command("clear-cache")
@click.option(
    "--cache",
    default=Settings.cache,
    envvar="FILTERCAST_CACHE",
    show_default=True,
    show_envvar=True,
    help=HELP["cache"],
)
def clear_cache(cache: str) -> None:
    """Empty a result cache: a directory or the filtercast entries of a Redis database.

    Safe while servers use it; they compute what they no longer find.
    """
    from filtercast_server.cache.backends import empty_cache

    if cache == "off":
        raise click.UsageError("--cache off names no cache to clear")
    try:
        where, removed = empty_cache(cache)
    except Exception as error:
        raise click.ClickException(f"could not clear the cache {cache}: {error}") from error
    click.echo(f"removed {removed} cached filters from {where}")
