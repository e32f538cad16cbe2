"""Accentuation: the pull in pixels against the pull in features, on real photographs.

The robust preset on real ImageNet VGG16 block5_conv1 at 128 px, started from
three of scikit-image's photographs; for each, two channels (the photo's
strongest by mean activation, and the one at its median). For no pull, the
pixel pull and the feature pull (their defaults unless given), side by side
in one process: the channel's mean activation on the delivered picture over
the start's (the objective's factor), SSIM against the start, and seconds per
picture.

    .venv/bin/python bench/accentuation_bench.py [--weights PATH] [--pixels 100]
        [--features 8] [--strip docs/quality/accentuation.png]
"""

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as photographs
from skimage.metrics import structural_similarity

from filtercast_server.accentuation import DEFAULT_PULL, Accentuate
from filtercast_server.engine.analysis import LayerMaps
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.images import square_view
from filtercast_server.planning import make_plan

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)
PHOTOS = ("chelsea", "astronaut", "coffee")
LAYER, SIZE = "block5_conv1", 128


def jpeg(pixels: np.ndarray) -> bytes:
    """The photo as a user sends it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def chosen_channels(maps: LayerMaps, photo: np.ndarray) -> list[int]:
    """The photo's strongest channel of LAYER by mean, and the one at its median."""
    means = maps("vgg16", LAYER, square_view(photo, SIZE)).mean(axis=(0, 1))
    order = np.argsort(-means, kind="stable")
    return [int(order[0]), int(order[len(order) // 2])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--pixels", type=float, default=DEFAULT_PULL["pixels"])
    parser.add_argument("--features", type=float, default=DEFAULT_PULL["features"])
    parser.add_argument("--strip", type=Path, help="Also write the first photo's pictures here.")
    args = parser.parse_args()
    models = {"vgg16": LoadedModel("vgg16", args.weights, select_device("auto"))}
    maps, engine = LayerMaps(models), AscentEngine(models)
    settings = {
        "no pull": ("pixels", 0.0),
        f"pixels {args.pixels:g}": ("pixels", args.pixels),
        f"features {args.features:g}": ("features", args.features),
    }
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in settings}
    strip: list[np.ndarray] = []
    print(f"device: {models['vgg16'].device.description}")
    for photo_name in PHOTOS:
        photo = getattr(photographs, photo_name)()
        channels = chosen_channels(maps, photo)
        for name, (space, pull) in settings.items():
            plan = make_plan(
                models,
                preset="robust",
                filters=",".join(map(str, channels)),
                seed=0,
                accentuate=Accentuate(jpeg(photo), pull, space),
            )
            assert plan.start is not None
            start = plan.start.pixels
            before = maps("vgg16", LAYER, start).mean(axis=(0, 1))
            started = time.perf_counter()
            outcomes = sorted(engine.run(plan), key=lambda o: channels.index(o.index))
            seconds = (time.perf_counter() - started) / len(outcomes)
            if photo_name == PHOTOS[0] and args.strip:
                strip.extend([start] * (not strip) + [o.image for o in outcomes])
            for outcome in outcomes:
                after = maps("vgg16", LAYER, outcome.image).mean(axis=(0, 1))
                factor = float(after[outcome.index] / max(before[outcome.index], 1e-6))
                similarity = structural_similarity(
                    outcome.image, start, channel_axis=2, data_range=255
                )
                rows[name].append((factor, float(similarity), seconds))
                print(
                    f"{photo_name:9s} channel {outcome.index:3d}  {name:12s}  "
                    f"objective x{factor:7.1f}  SSIM {similarity:.2f}  {seconds:5.1f} s/picture"
                )
    print(f"\nrobust, {LAYER}, {SIZE} px, {len(PHOTOS)} photos x 2 channels:")
    print(f"{'pull':12s}  objective factor (min, median)  SSIM (min, median)  s/picture")
    for name, values in rows.items():
        factors, similarities, seconds = (np.array(column) for column in zip(*values, strict=True))
        print(
            f"{name:12s}  x{factors.min():6.1f}, x{np.median(factors):6.1f}"
            f"{'':14s}{similarities.min():.2f}, {np.median(similarities):.2f}"
            f"{'':10s}{seconds.mean():.1f}"
        )
    if args.strip:
        args.strip.parent.mkdir(parents=True, exist_ok=True)
        gap = np.full((SIZE, 4, 3), 255, np.uint8)
        row = np.concatenate([part for image in strip for part in (image, gap)][:-1], axis=1)
        Image.fromarray(row).save(args.strip)
        print(f"wrote {args.strip}: the start, then each pull's two pictures")


if __name__ == "__main__":
    main()
