"""Picture quality side by side: classic, classic + revive, robust, and tf-keras-vis.

All four work on the same filters of VGG16 block5_conv1 (real ImageNet
weights, 128 px) in one run, one after the other on the same machine:

- classic: the seed preset through the engine (auto precision);
- classic + revive 3: the same, dead filters restarting from smooth noise;
- robust: the new preset; its method is stepped directly, so one run of
  the longest step count gives every shorter one on the way (Adam has no
  schedule and the views are keyed by step, so a k-step request gives exactly
  the k-th snapshot);
- tf-keras-vis 0.8.7's default recipe (bench/peer_tfkerasvis.py), in its own
  environment (TensorFlow + tf-keras, TF_USE_LEGACY_KERAS=1), float32, one
  batch of all compared filters; created by --install-peer.

Robustness of a delivered picture: the uint8 PNG the user receives is fed to
the network as it expects (VGG's caffe preprocessing), in the identity view
and in --views - 1 random held-out views (shift up to 16 px, scale 0.75..1.25,
rotation up to 20 degrees, gray fill; wider than any recipe trains with, and
drawn from their own seed). In each view the layer's real (post-ReLU) mean
activation of every filter is taken. A view scores 1 when the picture's own
filter is the most excited of all 512 ("top-1"); the rank score is the
fraction of the other filters it beats. A picture shows its filter when its
own activation is above 0 in the identity view. A missing picture (a dead
filter) scores 0 everywhere. The question this answers: does what the user
sees still drive its filter, above the rest of the layer, when it moves?

    .venv/bin/python bench/quality_bench.py [--install-peer] [--filters 0:32]
        [--dead-filters 0:64] [--robust-steps 25,50,100,200]
        [--peer-steps 25,50,100,200] [--grids docs/quality] [--json PATH]
"""

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

import filtercast_native as native
from filtercast.contract import parse_filter_spec
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.fourier import view_transform
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.rows import Row
from filtercast_server.jobs import Precision
from filtercast_server.params import Limits
from filtercast_server.planning import make_plan
from filtercast_server.presets import CATALOG

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = ROOT.parent / "shared/models/vgg16_imagenet_notop.weights.h5"
PEER_VENV = ROOT / "build/peer-venv"
PEER_PACKAGES = ["tensorflow==2.21.0", "tf-keras==2.21.*", "tf-keras-vis==0.8.7"]
LAYER = "block5_conv1"
EVAL_SEED = 20261126  # the held-out views' own generator
# Held-out views: wider than any recipe's own transforms.
EVAL_VIEWS = dataclasses.replace(
    CATALOG["robust"].params, pad=0, jitter=16, scale_jitter=0.25, rotate_degrees=20.0
)

Pictures = dict[int, np.ndarray | None]  # filter -> uint8 picture, None when dead


def indices(spec: str) -> list[int]:
    """The filters of a spec like 0:32 (no open ranges)."""
    out: list[int] = []
    for span in parse_filter_spec(spec):
        assert span.stop is not None, "give closed ranges"
        out.extend(range(span.start, span.stop))
    return out


def install_peer(venv: Path) -> None:
    """The peer's own environment: TensorFlow with tf-keras and tf-keras-vis."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *PEER_PACKAGES, "pillow"], check=True)


def run_peer(
    python: Path, model: LoadedModel, filters: list[int], steps: list[int], work: Path
) -> tuple[dict[int, Pictures], dict[int, float]]:
    """The peer's pictures and seconds at each snapshot step."""
    weights = work / "vgg16.npz"
    model_weights = model._variant(Precision.FLOAT32).get_weights()
    np.savez(weights, **{f"w{i}": w for i, w in enumerate(model_weights)})
    command = [
        str(python),
        str(ROOT / "bench/peer_tfkerasvis.py"),
        "--weights-npz",
        str(weights),
        "--filters",
        ",".join(map(str, filters)),
        "--snapshots",
        ",".join(map(str, steps)),
        "--out",
        str(work),
    ]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    stored = np.load(work / "peer.npz")
    timings = json.loads((work / "peer.json").read_text())["seconds"]
    pictures = {s: dict(zip(filters, stored[f"step{s}"], strict=True)) for s in steps}
    return pictures, {s: timings[str(s)] for s in steps}


def run_preset(
    engine: AscentEngine,
    models: dict,
    overrides: dict,
    filters: list[int],
    preset: str = "classic",
) -> tuple[Pictures, float]:
    """Pictures of one engine run (the preset with `overrides`, seed 0) and its seconds."""
    plan = make_plan(
        models, preset=preset, overrides=overrides, filters=filters, precision="auto", seed=0
    )
    started = time.perf_counter()
    outcomes = list(engine.run(plan))
    seconds = time.perf_counter() - started
    return {o.index: o.image for o in outcomes}, seconds


def run_robust(
    engine: AscentEngine, models: dict, filters: list[int], steps: list[int]
) -> tuple[dict[int, Pictures], dict[int, float], str]:
    """The robust preset's pictures and seconds at each step count, from one run."""
    limits = dataclasses.replace(Limits(), max_steps=max(steps))
    plan = make_plan(
        models,
        preset="robust",
        overrides={"steps": max(steps)},
        filters=filters,
        precision="auto",
        seed=0,
        limits=limits,
    )
    method = engine.method(plan.params, plan.precision)
    rows = [Row(job) for job in plan.jobs(filters)]
    warm_rows = rows[:2]
    method.step(tuple(tf.constant(a) for a in method.initial(warm_rows)), warm_rows)  # trace
    started = time.perf_counter()
    state = tuple(tf.constant(a) for a in method.initial(rows))
    pictures: dict[int, Pictures] = {}
    seconds: dict[int, float] = {}
    for step in range(1, max(steps) + 1):
        state, losses = method.step(state, rows)
        losses.numpy()
        for row in rows:
            row.steps += 1
        if step in steps:
            finished = method.pictures(state)
            seconds[step] = time.perf_counter() - started
            pictures[step] = dict(zip(filters, finished, strict=True))
    return pictures, seconds, plan.precision.value


class Judge:
    """Scores delivered pictures by how robustly they drive their own filter."""

    def __init__(self, model: LoadedModel, views: int, cell: tuple[int, int] | None = None) -> None:
        self.extractor = model.extractor(LAYER, Precision.FLOAT32, training_preprocessing=True)
        self.views = views
        self.cell = cell  # score one position of the layer's output (a neuron), not the mean

    def activations(self, picture: np.ndarray, index: int) -> np.ndarray:
        """(views, filters) activations of the layer (its mean, or at `cell`) in each view."""
        size = picture.shape[0]
        params = dataclasses.replace(EVAL_VIEWS, size=size)
        transforms = [np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)] + [
            view_transform(params, EVAL_SEED, (index,), v) for v in range(1, self.views)
        ]
        batch = tf.constant(np.repeat(picture[None].astype(np.float32), self.views, axis=0))
        seen = tf.raw_ops.ImageProjectiveTransformV3(
            images=batch,
            transforms=tf.constant(np.stack(transforms)),
            output_shape=tf.constant([size, size], tf.int32),
            fill_value=127.5,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        maps = self.extractor(seen, training=False).numpy()
        return maps.mean(axis=(1, 2)) if self.cell is None else maps[:, self.cell[0], self.cell[1]]

    def score(self, index: int, picture: np.ndarray | None) -> tuple[float, float, bool]:
        """(top-1 share of views, rank score, shows its filter) of one filter's picture."""
        if picture is None:
            return 0.0, 0.0, False
        acts = self.activations(picture, index)
        own = acts[:, index : index + 1]
        others = np.delete(acts, index, axis=1)
        return (
            float(np.mean(own[:, 0] > others.max(axis=1))),
            float(np.mean(own > others)),
            bool(acts[0, index] > 0),
        )


def save_grid(pictures: Pictures, path: Path, count: int = 16, tile: int = 80) -> None:
    """The first `count` filters in index order, `tile` px each, black where dead.

    Saved with a 256-colour palette: small enough for docs/.
    """
    chosen = sorted(pictures)[:count]
    tiles = []
    for index in chosen:
        picture = pictures[index]
        if picture is None:
            tiles.append(np.zeros((tile, tile, 3), np.uint8))
        else:
            resized = Image.fromarray(picture).resize((tile, tile), Image.Resampling.LANCZOS)
            tiles.append(np.asarray(resized))
    n = int(np.sqrt(len(tiles)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = Image.fromarray(native.stitch(np.stack(tiles), n=n, margin=3))
    grid.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--filters", default="0:32", help="compared with the peer")
    parser.add_argument("--dead-filters", default="0:64", help="dead counts (ours)")
    parser.add_argument("--robust-steps", default="25,50,100,200")
    parser.add_argument("--peer-steps", default="25,50,100,200")
    parser.add_argument("--revive", type=int, default=3)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--peer-python", type=Path, default=PEER_VENV / "bin/python")
    parser.add_argument("--install-peer", action="store_true", help="create build/peer-venv")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--grids", type=Path, help="write 4x4 grids of each method here")
    parser.add_argument("--json")
    args = parser.parse_args()

    compared, counted = indices(args.filters), indices(args.dead_filters)
    every = sorted(set(compared) | set(counted))
    robust_steps = sorted(int(s) for s in args.robust_steps.split(","))
    peer_steps = sorted(int(s) for s in args.peer_steps.split(","))
    device = select_device("auto")
    model = LoadedModel("vgg16", args.weights, device)
    models = {"vgg16": model}
    engine = AscentEngine(models)
    judge = Judge(model, args.views)
    run_preset(engine, models, {"steps": 1}, every[:2])  # trace outside the timings

    rows: list[dict] = []

    def record(name: str, pictures: Pictures, seconds: float, filters: int, steps: int) -> None:
        scores = {i: judge.score(i, picture) for i, picture in pictures.items()}
        counts = all(i in pictures for i in counted)
        row = {
            "method": name,
            "steps": steps,
            "seconds_per_filter": seconds / filters,
            # Of --dead-filters (ours only): filters without a picture.
            "dead_counted": sum(pictures[i] is None for i in counted) if counts else None,
            # Of the compared filters: no picture, or one that leaves its filter at 0.
            "dead": sum(pictures[i] is None for i in compared),
            "blank": sum(not scores[i][2] for i in compared),
            "top1": float(np.mean([scores[i][0] for i in compared])),
            "rank": float(np.mean([scores[i][1] for i in compared])),
        }
        rows.append(row)
        print(
            f"{name:<26}{steps:>6}{row['seconds_per_filter']:>10.2f}"
            + (f"{row['dead_counted']:>8}" if counts else f"{'-':>8}")
            + f"{row['dead']:>6}{row['blank']:>7}{row['top1']:>8.3f}{row['rank']:>8.3f}",
            flush=True,
        )

    print(
        f"device: {device.description}; vgg16/{LAYER}, 128 px; compared filters "
        f"{args.filters}, dead counted on {args.dead_filters}; {args.views} views each"
    )
    print(
        f"{'method':<26}{'steps':>6}{'s/filter':>10}{'dead/' + str(len(counted)):>8}"
        f"{'dead':>6}{'blank':>7}{'top-1':>8}{'rank':>8}",
        flush=True,
    )
    classic, seconds = run_preset(engine, models, {}, every)
    record("classic", classic, seconds, len(every), 20)
    revived, seconds = run_preset(engine, models, {"revive": args.revive}, every)
    record(f"classic + revive {args.revive}", revived, seconds, len(every), 20)
    robust, robust_seconds, precision = run_robust(engine, models, every, robust_steps)
    for steps in robust_steps:
        record(f"robust ({precision})", robust[steps], robust_seconds[steps], len(every), steps)
    if precision != "float32":  # the peer runs in float32: the same precision, through the engine
        default = CATALOG["robust"].params.steps
        plan = make_plan(
            models, preset="robust", overrides={}, filters=compared, precision="float32", seed=0
        )
        started = time.perf_counter()
        outcomes = list(engine.run(plan))
        seconds = time.perf_counter() - started
        pictures = {o.index: o.image for o in outcomes}
        record("robust (float32, engine)", pictures, seconds, len(compared), default)
    peer = None
    if not args.skip_peer:
        if args.install_peer and not args.peer_python.exists():
            install_peer(PEER_VENV)
        if not args.peer_python.exists():
            sys.exit(f"{args.peer_python} not found: run with --install-peer, or --skip-peer")
        with tempfile.TemporaryDirectory() as work:
            peer, peer_seconds = run_peer(args.peer_python, model, compared, peer_steps, Path(work))
        for steps in peer_steps:
            record("tf-keras-vis (float32)", peer[steps], peer_seconds[steps], len(compared), steps)
    if args.grids:
        save_grid(classic, args.grids / "classic.png")
        save_grid(revived, args.grids / "classic_revive.png")
        default = CATALOG["robust"].params.steps
        save_grid(robust[default if default in robust else max(robust)], args.grids / "robust.png")
        if peer is not None:
            save_grid(peer[max(peer_steps)], args.grids / "tf_keras_vis.png")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
