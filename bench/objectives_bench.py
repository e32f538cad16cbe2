"""What objectives cost and reach, side by side in one run (robust preset, ImageNet VGG16).

Seconds per picture of: one channel picture alone; four channel objectives in
one request; a diversity group of k = 4 (its rows share one batch, plus the
Gram term); neurons at the centre; an interpolation of 4 frames. The ratio
that matters: the diversity group against one picture (target <= 4.4x), and
against four independent pictures (the Gram term's own cost). Class units
on the trained digits classifier: the share of class pictures classified as
their class by the model itself and by a second one trained independently
(transferability).

    .venv/bin/python bench/objectives_bench.py [--weights PATH] [--steps 100]
        [--peer-venv build/peer-venv] [--json PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from filtercast import contract
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import keras
from filtercast_server.model_registry import PREPROCESSING, ModelConfig
from filtercast_server.objectives import Diversity, Interpolation, objective_of
from filtercast_server.planning import make_plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = ROOT.parent / "shared/models/vgg16_imagenet_notop.weights.h5"


def objectives(*texts: str):
    """Wire-free Objectives from the grammar."""
    return [objective_of(contract.parse_objective(t), "objectives") for t in texts]


def timed(engine: AscentEngine, models, steps: int, **what) -> tuple[float, int]:
    """(seconds, pictures) of one robust request on VGG16."""
    plan = make_plan(models, preset="robust", overrides={"steps": steps}, seed=1, **what)
    started = time.perf_counter()
    count = len(list(engine.run(plan)))
    return time.perf_counter() - started, count


def vgg16_rows(weights: str, steps: int) -> list[dict]:
    """Seconds per picture of each kind of request, warm, in one process."""
    device = select_device("auto")
    models = {"vgg16": LoadedModel("vgg16", weights, device)}
    engine = AscentEngine(models)
    cases = {
        "one channel": {"objectives": objectives("block5_conv1:7")},
        "4 channels": {"objectives": objectives(*(f"block5_conv1:{i}" for i in range(4)))},
        "diversity k=4": {"objectives": objectives("block5_conv1:7"), "diversity": Diversity(4)},
        "4 neurons": {"objectives": objectives(*(f"block5_conv1:{i}@center" for i in range(4)))},
        "interpolation 4 frames": {
            "interpolation": Interpolation(*objectives("block5_conv1:1", "block5_conv1:2"), 4)
        },
    }
    for what in cases.values():  # warm: every structure traced once
        timed(engine, models, 2, **what)
    rows = []
    for name, what in cases.items():
        seconds, count = timed(engine, models, steps, **what)
        rows.append({"request": name, "seconds": seconds, "pictures": count})
    return rows


def digits_rows(steps: int, peer: Path | None) -> dict:
    """Class pictures of the digits classifier: its own verdict, a second model's, the peer's."""
    sys.path.insert(0, str(ROOT))  # the classifier the tests train: tests/support/digits.py
    from tests.support.digits import classify, train_classifier

    folder = Path(tempfile.mkdtemp())
    own, other = folder / "own.keras", folder / "other.keras"
    accuracy = [train_classifier(own, seed=1), train_classifier(other, seed=2)]
    config = ModelConfig("digits", path=own, preprocessing=PREPROCESSING["unit"])
    models = {"digits": LoadedModel("digits", "", select_device("auto"), config=config)}
    engine = AscentEngine(models)
    pictures, seconds = [], 0.0
    for seed in range(5):
        plan = make_plan(
            models,
            preset="robust",
            overrides={"model": "digits", "size": 32, "pad": 0, "jitter": 2, "steps": steps},
            seed=seed,
            objectives=objectives(*(f"logits:{k}" for k in range(10))),
        )
        started = time.perf_counter()
        outcomes = {o.index: o for o in engine.run(plan)}
        seconds += time.perf_counter() - started
        pictures += [outcomes[k].image for k in range(10)]
    wanted = np.tile(np.arange(10), 5)
    stack = np.stack(pictures)
    found = {
        "classifier_accuracy": accuracy,
        "own_model": float((classify(own, stack) == wanted).mean()),
        "second_model": float((classify(other, stack) == wanted).mean()),
        "seconds_per_picture": seconds / len(pictures),
    }
    if peer is not None:
        weights = keras.saving.load_model(own, compile=False).get_weights()
        np.savez(folder / "weights.npz", **{f"w{i}": w for i, w in enumerate(weights)})
        script = ROOT / "bench/peer_tfkerasvis_classes.py"
        out = folder / "peer.npz"
        command = [
            str(peer / "bin/python"),
            str(script),
            "--weights-npz",
            str(folder / "weights.npz"),
        ]
        subprocess.run(
            [*command, "--out", str(out)], check=True, env={**os.environ, "PYTHONPATH": ""}
        )
        made = np.load(out)
        found["peer"] = {
            "own_model": float((classify(own, made["pictures"]) == wanted).mean()),
            "second_model": float((classify(other, made["pictures"]) == wanted).mean()),
            "seconds_per_picture": float(made["seconds"]) / len(wanted),
        }
    return found


def neuron_rows(weights: str, steps: int, channels: int, peer: Path | None) -> dict:
    """Neurons at the centre of block5_conv1 (128 px): how robustly each picture drives its own.

    Scored as bench/quality_bench.py scores channels, at the centre cell of
    the layer's output instead of its mean: top-1 (the neuron's channel is
    the most excited of all 512 there) in the identity view and in held-out
    views, and the rank score. Beside Xplique 2.0.2's neuron objective.
    """
    sys.path.insert(0, str(ROOT / "bench"))
    from quality_bench import Judge  # type: ignore[import-not-found]

    device = select_device("auto")
    models = {"vgg16": LoadedModel("vgg16", weights, device)}
    engine = AscentEngine(models)
    texts = [f"block5_conv1:{k}@center" for k in range(channels)]
    make = {"objectives": objectives(*texts)}
    timed(engine, models, 1, **make)  # traced before timing
    plan = make_plan(
        models, preset="robust", overrides={"size": 128, "steps": steps}, seed=1, **make
    )
    started = time.perf_counter()
    outcomes = {o.index: o.image for o in engine.run(plan)}
    ours = [outcomes[k] for k in range(channels)]
    found = {"filtercast robust": (ours, (time.perf_counter() - started) / channels)}
    if peer is not None:
        out = Path(tempfile.mkdtemp()) / "xplique.npz"
        command = [str(peer / "bin/python"), str(ROOT / "bench/peer_xplique_neurons.py")]
        command += ["--weights", weights, "--channels", str(channels), "--out", str(out)]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})
        made = np.load(out)
        found["xplique 2.0.2"] = (list(made["pictures"]), float(made["seconds"]) / channels)
    judge = Judge(models["vgg16"], views=16, cell=(4, 4))
    rows = {}
    for name, (pictures, seconds) in found.items():
        scores = [judge.score(k, picture) for k, picture in enumerate(pictures)]
        rows[name] = {
            "top1_identity": float(
                np.mean([judge.activations(p, k)[0].argmax() == k for k, p in enumerate(pictures)])
            ),
            "top1_views": float(np.mean([s[0] for s in scores])),
            "rank": float(np.mean([s[1] for s in scores])),
            "seconds_per_picture": seconds,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--peer-venv", type=Path, help="tf-keras-vis's own environment")
    parser.add_argument("--xplique-venv", type=Path, help="Xplique's own environment")
    parser.add_argument(
        "--neurons", type=int, default=16, help="neurons compared (channels 0..N-1)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    neurons = neuron_rows(args.weights, args.steps, args.neurons, args.xplique_venv)
    for name, row in neurons.items():
        print(
            f"neurons at the centre, {name}: top-1 {row['top1_identity']:.0%} as delivered, "
            f"{row['top1_views']:.0%} of held-out views, rank {row['rank']:.3f}; "
            f"{row['seconds_per_picture']:.2f} s per picture"
        )
    rows = vgg16_rows(args.weights, args.steps)
    one = rows[0]["seconds"]
    print(f"{'request':26s} {'pictures':>8s} {'seconds':>8s} {'per picture':>11s} {'vs one':>7s}")
    for row in rows:
        row["vs_one_picture"] = row["seconds"] / one
        print(
            f"{row['request']:26s} {row['pictures']:8d} {row['seconds']:8.2f} "
            f"{row['seconds'] / row['pictures']:11.2f} {row['vs_one_picture']:6.2f}x"
        )
    digits = digits_rows(args.steps, args.peer_venv)
    for name, found in [("filtercast robust", digits), ("tf-keras-vis", digits.get("peer"))]:
        if found:
            print(
                f"digits class pictures, {name}: {found['own_model']:.0%} classified as their "
                f"class by the model, {found['second_model']:.0%} by a second model; "
                f"{found['seconds_per_picture']:.3f} s per picture"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"vgg16": rows, "digits": digits, "neurons": neurons}, indent=2)
        )


if __name__ == "__main__":
    main()
