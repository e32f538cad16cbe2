"""Previews through the real servicer, scheduler, stream, gateway and client (stand-in engine).

The stand-in engine makes a preview of a row in flight every preview_every
steps, its picture flat at the step's value, its loss the step.
"""

import json
import urllib.request

import pytest

from filtercast_client import Client, FilterImage, FilterPreview, InvalidRequest
from filtercast_server.cache.backends import DiskBackend
from tests.support.standin import Engine, StandIn

FILTERS, STEPS, EVERY = 6, 20, 5


def run(server: StandIn, **fields) -> list:
    with Client(server.address) as client:
        return list(
            client.visualize(layer="block5_conv1", filters=f"0:{FILTERS}", steps=STEPS, **fields)
        )


def test_previews_come_in_step_order_before_their_final() -> None:
    with StandIn(engine=Engine(step_seconds=0.002)) as server:
        events = run(server, preview_every=EVERY, seed=1)
    finals = {e.index: n for n, e in enumerate(events) if isinstance(e, FilterImage)}
    assert sorted(finals) == list(range(FILTERS))
    for index in range(FILTERS):
        previews = [
            (n, e)
            for n, e in enumerate(events)
            if isinstance(e, FilterPreview) and e.index == index
        ]
        assert [e.step for _, e in previews] == [1, 5, 10, 15]  # the last step is the final
        assert all(n < finals[index] for n, _ in previews)
        assert all(int(e.image[0, 0, 0]) == e.step for _, e in previews)  # the step's picture
    final = next(e for e in events if isinstance(e, FilterImage) and not e.dead)
    assert final.loss_curve is not None and len(final.loss_curve) == STEPS


def test_without_preview_every_there_are_none() -> None:
    with StandIn() as server:
        events = run(server, seed=1)
    assert not [e for e in events if isinstance(e, FilterPreview)]


def test_a_picture_from_the_cache_has_no_previews_and_no_curve(tmp_path) -> None:
    backend = DiskBackend(tmp_path, 1 << 30, None)
    with StandIn(cache_backend=backend) as server:
        run(server, preview_every=EVERY, seed=2)
        server.cache.flush()
        again = run(server, preview_every=EVERY, seed=2)
    finals = [e for e in again if isinstance(e, FilterImage)]
    assert finals and all(e.cached and e.loss_curve is None for e in finals)
    assert not [e for e in again if isinstance(e, FilterPreview)]


@pytest.mark.parametrize("every", [1, 4, -5])
def test_too_frequent_previews_are_refused_naming_the_field(every: int) -> None:
    with StandIn() as server, pytest.raises(InvalidRequest) as refused:
        run(server, preview_every=every)
    assert refused.value.field == "preview_every" and "5..100000" in str(refused.value)


def test_the_gateway_streams_previews_as_ndjson_lines() -> None:
    with StandIn(gateway=True, engine=Engine(step_seconds=0.002)) as server:
        body = {"layer": "block5_conv1", "filters": {"list": {"indices": [1]}}, "seed": "3"}
        body |= {"overrides": {"steps": STEPS}, "previewEvery": EVERY}
        request = urllib.request.Request(
            f"{server.http_url}/v1/visualize",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            kinds = [
                next(iter(json.loads(line)["result"]))
                for line in response.read().splitlines()
                if line.strip()
            ]
    assert kinds[:1] == ["accepted"] and kinds.count("preview") == 4  # steps 1, 5, 10, 15
    assert kinds.index("filter") > max(i for i, k in enumerate(kinds) if k == "preview")


def test_the_cli_writes_frames_and_an_animation_per_filter(tmp_path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from filtercast_client.cli import main

    with StandIn(engine=Engine(step_seconds=0.002)) as server:
        args = ["visualize", "--server", server.address, "--filters", "0:3", "--steps", "20"]
        args += ["--out", str(tmp_path / "out"), "--previews", str(tmp_path / "frames")]
        result = CliRunner().invoke(main, [*args, "--preview-every", "5", "--animate"])
    assert result.exit_code == 0, result.output
    for index in (0, 1, 2):
        steps = sorted(p.name for p in (tmp_path / "frames" / f"filter_{index:04d}").iterdir())
        assert steps == [f"step_{step:04d}.png" for step in (1, 5, 10, 15)]
        animation = Image.open(tmp_path / "frames" / f"filter_{index:04d}.webp")
        assert animation.n_frames == 5  # four previews, then the final picture
    assert (tmp_path / "out" / "manifest.json").exists()
    refused = CliRunner().invoke(main, ["visualize", "--animate"])
    assert refused.exit_code == 2 and "give --previews DIR" in refused.output
