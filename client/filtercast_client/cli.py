"""The ``filtercast`` command line."""

import os
import sys
from pathlib import Path

import click

WEIGHTS_HELP = "imagenet (Keras download), random, or a .weights.h5 path [env FILTERCAST_WEIGHTS]"


@click.group()
@click.version_option(package_name="filtercast")
def main() -> None:
    """Show what the filters of a convolutional network have learned."""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the gRPC server (needs the `server` extra); `filtercast serve --help` lists flags."""
    try:
        from filtercast_server.main import main as serve_main
    except ImportError as error:
        raise click.ClickException(
            f"serve needs the server extra ({error}); pip install 'filtercast[server]'"
        ) from error
    serve_main(ctx.args)


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("render-output"),
    show_default=True,
    help="Folder for the PNGs, grid.png and manifest.json.",
)
@click.option(
    "--weights",
    default=lambda: os.environ.get("FILTERCAST_WEIGHTS", "imagenet"),
    show_default="imagenet",
    help=WEIGHTS_HELP,
)
@click.option(
    "--preset",
    type=click.Choice(["classic", "upscale", "keras_io"]),
    default="classic",
    show_default=True,
)
@click.option("--model", help="vgg16, vgg19 or resnet50v2 (default: the preset's).")
@click.option("--layer", help="Layer name (default: the preset's).")
@click.option("--filters", help='Filter indices: ranges and lists, e.g. "0:32,40".')
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "bfloat16"]),
    default="auto",
    show_default=True,
)
@click.option("--seed", type=int, help="Seed of the starting noise (default: random, recorded).")
@click.option("--size", type=int, help="Override the preset's final image size.")
@click.option("--steps", type=int, help="Override the preset's ascent steps (per round).")
@click.option("--step-size", type=float, help="Override the preset's step size.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True
)
@click.option(
    "--max-batch", type=int, default=64, show_default=True, help="Most filters in one batch."
)
def render(
    out: Path,
    weights: str,
    preset: str,
    model: str | None,
    layer: str | None,
    filters: str | None,
    precision: str,
    seed: int | None,
    size: int | None,
    steps: int | None,
    step_size: float | None,
    device: str,
    max_batch: int,
) -> None:
    """Render filters locally, without a server (needs the `server` extra)."""
    try:
        from filtercast_server.errors import InvalidRequestError, ModelLoadError
        from filtercast_server.render import render as run_render
    except ImportError as error:
        raise click.ClickException(
            f"render needs the server extra ({error}); pip install 'filtercast[server]'"
        ) from error
    overrides = {
        k: v
        for k, v in {"size": size, "steps": steps, "step_size": step_size}.items()
        if v is not None
    }

    def progress(outcome, done: int, total: int) -> None:
        state = "dead" if outcome.dead else f"loss {outcome.loss:10.2f}"
        click.echo(
            f"[{done:4d}/{total}] filter {outcome.index:4d}  {state}  {outcome.seconds:6.2f}s",
            err=True,
        )

    try:
        manifest = run_render(
            out,
            weights=weights,
            preset=preset,
            model=model,
            layer=layer,
            filters=filters,
            precision=precision,
            seed=seed,
            overrides=overrides,
            device=device,
            max_batch=max_batch,
            progress=progress,
        )
    except (InvalidRequestError, ModelLoadError) as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        click.echo(f"interrupted: kept the finished filters in {out} (complete: false)", err=True)
        sys.exit(130)
    kept = sum(1 for f in manifest["filters"] if not f["dead"])
    grid = manifest["grid"]
    grid_text = f"{grid['n']}x{grid['n']} grid" if grid else "no grid (no live filter)"
    click.echo(
        f"wrote {kept} filter PNGs, {grid_text} and manifest.json to {out} "
        f"(seed {manifest['seed']}, {manifest['precision']}, {manifest['seconds']}s)"
    )
