"""Robust recipes side by side: the same filters, the quality benchmark's measure, the time.

Each recipe is the robust preset with overrides, run through the engine (as a
request is) on real ImageNet VGG16 block5_conv1, one after the other in this
process. Every picture is scored as bench/quality_bench.py scores it (top-1
and rank over held-out views) and by its filter's own mean activation in the
identity view, against the reference recipe's picture of the same filter:
a faster recipe must keep each filter's activation (min over the filters),
not only its top-1, which saturates early.

    .venv/bin/python bench/robust_recipes.py [--filters 0:32]
        [--recipe NAME=JSON ...] [--grid docs/quality/robust_recipes.png] [--json PATH]

Without --recipe: the recipe before engine version 2 (100 steps, step 0.05,
the reference) and today's default (the preset as it is).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from quality_bench import DEFAULT_WEIGHTS, LAYER, Judge, Pictures, indices, run_preset

import filtercast_native as native
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.models import LoadedModel

# The robust default up to engine version 1: the reference every recipe is held to.
REFERENCE = {"steps": 100, "step_size": 0.05}
TARGETS = {"top1": 0.99, "rank": 0.999, "activation": 0.90, "seconds": 0.50}


def own_activation(judge: Judge, pictures: Pictures) -> dict[int, float]:
    """Each picture's own filter's mean activation, the picture seen as it is."""
    return {
        i: float(judge.activations(p, i)[0, i]) if p is not None else 0.0
        for i, p in pictures.items()
    }


def side_by_side(rows: list[Pictures], path: Path, side: int = 4, tile: int = 64) -> None:
    """A side x side grid of the first filters per recipe, the recipes left to right."""
    chosen = sorted(rows[0])[: side * side]
    grids = []
    for row in rows:
        tiles = [
            np.asarray(Image.fromarray(row[i]).resize((tile, tile), Image.Resampling.LANCZOS))
            if row[i] is not None
            else np.zeros((tile, tile, 3), np.uint8)
            for i in chosen
        ]
        grids.append(native.stitch(np.stack(tiles), n=side, margin=2))
    gap = np.full((grids[0].shape[0], 12, 3), 255, np.uint8)
    joined = np.concatenate([part for grid in grids for part in (grid, gap)][:-1], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(joined).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--filters", default="0:32")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument(
        "--recipe", action="append", default=[], help="NAME=JSON overrides (repeatable)"
    )
    parser.add_argument("--grid", type=Path, help="4x4 of each recipe, side by side")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    filters = indices(args.filters)
    recipes = {"reference": REFERENCE} | (
        {n: json.loads(o) for n, o in (r.split("=", 1) for r in args.recipe)}
        if args.recipe
        else {"default": {}}
    )
    device = select_device("auto")
    model = LoadedModel("vgg16", args.weights, device)
    models = {"vgg16": model}
    engine = AscentEngine(models, *device.batch_limits())  # a server's batches
    judge = Judge(model, args.views)
    run_preset(engine, models, {"steps": 1}, filters[:2], "robust")  # the trace, not timed
    print(f"device: {device.description}; vgg16/{LAYER}, filters {args.filters}")
    print(
        f"{'recipe':<12}{'overrides':<34}{'s/filter':>9}{'time':>7}{'top-1':>7}{'rank':>8}"
        f"{'act min':>8}{'act med':>8}  meets",
        flush=True,
    )
    results, shown = [], []
    reference: dict[int, float] = {}
    seconds_ref = 0.0
    for name, overrides in recipes.items():
        pictures, seconds = run_preset(engine, models, overrides, filters, "robust")
        activation = own_activation(judge, pictures)
        reference = reference or activation
        seconds_ref = seconds_ref or seconds
        scores = [judge.score(i, pictures[i]) for i in filters]
        ratios = [activation[i] / reference[i] if reference[i] > 0 else 1.0 for i in filters]
        row = {
            "recipe": name,
            "overrides": overrides,
            "seconds_per_filter": seconds / len(filters),
            "time_ratio": seconds / seconds_ref,
            "top1": float(np.mean([s[0] for s in scores])),
            "rank": float(np.mean([s[1] for s in scores])),
            "activation_min": min(ratios),
            "activation_median": float(np.median(ratios)),
        }
        row["meets_targets"] = (
            row["top1"] >= TARGETS["top1"]
            and row["rank"] >= TARGETS["rank"]
            and row["activation_min"] >= TARGETS["activation"]
            and row["time_ratio"] <= TARGETS["seconds"]
        )
        results.append(row)
        shown.append(pictures)
        print(
            f"{name:<12}{json.dumps(overrides):<34}{row['seconds_per_filter']:>9.2f}"
            f"{row['time_ratio']:>7.2f}{row['top1']:>7.3f}{row['rank']:>8.4f}"
            f"{row['activation_min']:>8.2f}{row['activation_median']:>8.2f}  "
            f"{'yes' if row['meets_targets'] else 'no'}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"device": device.description, "rows": results}, indent=2))
    if args.grid:
        side_by_side(shown, args.grid)


if __name__ == "__main__":
    main()
