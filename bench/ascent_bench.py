"""Seed loop vs engine (float32) vs engine (auto precision), side by side in one run.

(a) the classic seed's loop, faithfully: one filter at a time, batch 1,
    float32, one compiled call per step returning (loss, normalised gradient),
    the update in numpy, early exit on a dead filter;
(b) the engine, float32, batched with continuous refill;
(c) the engine, auto precision (bfloat16 where the hardware has it).

    .venv/bin/python bench/ascent_bench.py [--weights PATH] [--filters 0:32]
        [--preset classic] [--max-batch 64] [--json PATH]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.pixels import initial_image
from filtercast_server.jobs import Plan, Precision
from filtercast_server.planning import make_plan

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)


def seed_loop(model: LoadedModel, plan: Plan) -> dict[int, tuple[float, bool]]:
    """The seed's per-filter loop; returns {filter: (final loss, dead)}."""
    params = plan.params
    extractor = model.extractor(params.layer, Precision.FLOAT32)

    @tf.function
    def iterate(image: tf.Tensor, index: tf.Tensor):
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(extractor(image, training=False)[:, :, :, index])
        grads = tape.gradient(loss, image)
        return loss, grads / (tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-7)

    results = {}
    for index in plan.filters:
        image = initial_image(params, plan.seed, (index,))[None]
        loss_value = 0.0
        for _ in range(params.steps):
            loss, grads = iterate(tf.constant(image), tf.constant(index))
            loss_value = float(loss)
            image += grads.numpy() * params.step_size
            if loss_value <= 0.0:
                break
        results[index] = (loss_value, loss_value <= 0.0)
    return results


def engine_run(engine: AscentEngine, plan: Plan) -> dict[int, tuple[float, bool]]:
    return {o.index: (o.loss, o.dead) for o in engine.run(plan)}


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--filters", default="0:32")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--skip-seed", action="store_true", help="only the engine rows")
    parser.add_argument("--json")
    args = parser.parse_args()

    device = select_device("auto")
    model = LoadedModel("vgg16", args.weights, device)
    models = {"vgg16": model}
    # The pixel budget follows --max-batch at the preset's 128 px.
    engine = AscentEngine(
        models, max_batch=args.max_batch, max_batch_pixels=args.max_batch * 128**2
    )
    plans = {
        p: make_plan(
            models, preset="classic", overrides={}, filters=args.filters, precision=p, seed=0
        )
        for p in ("float32", "auto")
    }
    auto_precision = plans["auto"].precision.value
    # Warm-up: trace every compiled step once, outside the timings.
    for plan in plans.values():
        warm = make_plan(
            models,
            preset="classic",
            overrides={"steps": 1},
            filters="0:2",
            precision=plan.precision,
            seed=0,
        )
        engine_run(engine, warm)
    if not args.skip_seed:
        seed_loop(
            model,
            make_plan(
                models,
                preset="classic",
                overrides={"steps": 1},
                filters="0:1",
                precision="float32",
                seed=0,
            ),
        )

    rows = []
    if not args.skip_seed:
        rows.append(("seed loop (batch 1, float32)", *timed(seed_loop, model, plans["float32"])))
    rows.append(("engine float32", *timed(engine_run, engine, plans["float32"])))
    rows.append((f"engine auto ({auto_precision})", *timed(engine_run, engine, plans["auto"])))

    count = len(plans["float32"].filters)
    base_seconds, base = rows[0][1], rows[0][2]
    base_dead = {i for i, (_, dead) in base.items() if dead}
    print(
        f"device: {device.description}; classic preset, vgg16/block5_conv1, "
        f"filters {args.filters} ({count}), 128 px, 20 steps, max batch {args.max_batch}"
    )
    print(
        f"{'variant':<32}{'s/filter':>10}{'ratio':>8}{'dead':>6}{'same dead':>11}"
        f"{'mean loss':>11}{'loss vs base':>14}"
    )
    report = []
    for name, seconds, result in rows:
        dead = {i for i, (_, d) in result.items() if d}
        mean_loss = float(np.mean([loss for loss, d in result.values() if not d]))
        base_loss = float(np.mean([loss for loss, d in base.values() if not d]))
        print(
            f"{name:<32}{seconds / count:>10.3f}{base_seconds / seconds:>7.2f}x{len(dead):>6}"
            f"{dead == base_dead!s:>11}{mean_loss:>11.1f}{mean_loss / base_loss - 1:>+13.1%}"
        )
        report.append(
            {
                "variant": name,
                "seconds": seconds,
                "seconds_per_filter": seconds / count,
                "ratio": base_seconds / seconds,
                "dead": sorted(dead),
                "mean_live_loss": mean_loss,
            }
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
