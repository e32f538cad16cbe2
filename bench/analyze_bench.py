"""AnalyzeImage end to end: a 512 px photograph on VGG16 block5_conv1, through gRPC.

A real server (real ImageNet weights) and the real client on this machine:
the seconds from the client's call to its typed answer (encode, send, check,
decode, resize, forward pass, ranking, heatmap PNGs, receive, decode), first
call (its trace) and then the median of warm calls; and the forward pass
alone in this process, for the share the service adds.

    .venv/bin/python bench/analyze_bench.py [--weights PATH] [--repeats 10] [--top-k 8]
"""

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as photographs

from filtercast_client import Client
from filtercast_client.local_server import LocalServer

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)


def forward_alone(weights: str, photo: np.ndarray, repeats: int) -> float:
    """Median seconds of the forward pass alone (LayerMaps), warm, in this process."""
    from filtercast_server.engine.analysis import LayerMaps
    from filtercast_server.engine.devices import select_device
    from filtercast_server.engine.models import LoadedModel

    maps = LayerMaps({"vgg16": LoadedModel("vgg16", weights, select_device("auto"))})
    maps("vgg16", "block5_conv1", photo)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        maps("vgg16", "block5_conv1", photo)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=8)
    args = parser.parse_args()
    photo = photographs.astronaut()  # 512 x 512 RGB
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=90)
    image = buffer.getvalue()
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = LocalServer("--weights", args.weights, log_path=log, metrics=False).wait_serving()
    try:
        with Client(server.address) as client:

            def call() -> float:
                started = time.perf_counter()
                client.analyze(image, layer="block5_conv1", size=512, top_k=args.top_k)
                return time.perf_counter() - started

            first = call()
            warm = statistics.median(call() for _ in range(args.repeats))
    finally:
        server.stop()
    alone = forward_alone(args.weights, photo, args.repeats)
    print(f"JPEG of {len(image)} bytes, 512 px, VGG16 block5_conv1, top {args.top_k} with heatmaps")
    print(f"first call (traces the layer): {first:.3f} s")
    print(f"warm call, median of {args.repeats}: {warm:.3f} s")
    print(f"forward pass alone, median: {alone:.3f} s ({alone / warm:.0%} of a warm call)")


if __name__ == "__main__":
    main()
