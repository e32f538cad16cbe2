"""Cache keys: everything a picture depends on is in its key, and the engine version
moves whenever the ascent's numbers do."""

import dataclasses
import hashlib
import json

import pytest

from filtercast_server.cache.keys import ENGINE_VERSION, filter_keys, is_key
from filtercast_server.jobs import Plan, Precision
from filtercast_server.presets import CATALOG

# What ENGINE_VERSION promises: the presets' numbers, and what a tiny run of each
# kind of ascent gives on the real VGG16 weights. A change to either without a
# new version would serve stale pictures from every cache; record the new
# values under a new ENGINE_VERSION (server/filtercast_server/cache/keys.py).
GOLDEN = {
    1: {
        "presets": "0053d2adef81fa5152ae58bf8b572b919005a946fff9f4cabde376934d9c7360",
        # Final losses of filters 0..3, then their restart counts.
        "losses": {
            "classic": [151.813, 344.7156, 2560.1006, 1340.6345, 0, 0, 0, 0],
            "classic+revive": [163.8993, 621.0533, 172.8791, 241.2318, 0, 1, 0, 0],
            "upscale": [214.1906, 402.2339, 2107.2688, 1177.682, 0, 0, 0, 0],
            "keras_io": [0.0, 0.0, 19.3636, 75.1224, 0, 0, 0, 0],
            "robust": [138.4379, -130.0191, 287.4553, 149.0666, 0, 0, 0, 0],
        },
    },
    2: {  # robust: 45 steps of 0.2 (the tiny run's steps are its own: the step size moved)
        "presets": "880791975b967694faeb3caabcdad6f41888eccd06d215ef00d25861ec86836b",
        "losses": {
            "classic": [151.813, 344.7156, 2560.1006, 1340.6345, 0, 0, 0, 0],
            "classic+revive": [163.8993, 621.0533, 172.8791, 241.2318, 0, 1, 0, 0],
            "upscale": [214.1906, 402.2339, 2107.2688, 1177.682, 0, 0, 0, 0],
            "keras_io": [0.0, 0.0, 19.3636, 75.1224, 0, 0, 0, 0],
            "robust": [325.1255, -494.9629, 368.5801, 308.3105, 0, 0, 0, 0],
        },
    },
}
# The tiny runs: preset and overrides (VGG16 block3_conv1 unless named, filters 0..3,
# float32, seed 11). Revive runs where filters die: block5_conv1.
RUNS = {
    "classic": ("classic", {"size": 32, "steps": 3}),
    "classic+revive": ("classic", {"layer": "block5_conv1", "size": 32, "steps": 3, "revive": 2}),
    "upscale": ("upscale", {"size": 48, "steps": 2, "upscale_rounds": 2}),
    "keras_io": ("keras_io", {"model": "vgg16", "size": 48, "steps": 3, "crop": 4}),
    "robust": ("robust", {"size": 32, "steps": 3, "pad": 4, "jitter": 2}),
}


def plan(**changes) -> Plan:
    recipe = CATALOG["classic"]
    base = Plan(recipe.params, recipe.grid, Precision.FLOAT32, (0, 1, 2), seed=5)
    return dataclasses.replace(base, **changes)


def presets_fingerprint() -> str:
    table = {
        name: {"params": p.params.to_dict(), "grid": p.grid.to_dict(), "n": p.default_filters}
        for name, p in CATALOG.items()
    }
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def test_keys_are_stable_distinct_per_filter_and_shaped_for_urls() -> None:
    keys = filter_keys(plan(), "model-a")
    assert keys == filter_keys(plan(), "model-a")
    assert len(set(keys.values())) == 3
    assert all(is_key(key) for key in keys.values())
    assert not is_key("../" + "0" * 29) and not is_key("A" * 32)


def test_every_parameter_the_picture_depends_on_is_in_the_key() -> None:
    base = filter_keys(plan(), "model-a")[1]
    params = CATALOG["classic"].params
    changed = {
        "model identity": filter_keys(plan(), "model-b")[1],
        "seed": filter_keys(plan(seed=6), "model-a")[1],
        "precision": filter_keys(
            dataclasses.replace(plan(), precision=Precision.BFLOAT16), "model-a"
        )[1],
    }
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        other = {
            bool: lambda v: not v,
            int: lambda v: v + 1,
            float: lambda v: v * 2 + 1,
            str: lambda v: v + "x",
            type(None): lambda v: 0.5,
        }[type(value)](value)
        moved = dataclasses.replace(params, **{field.name: other})
        changed[field.name] = filter_keys(dataclasses.replace(plan(), params=moved), "model-a")[1]
    same = [name for name, key in changed.items() if key == base]
    assert not same, f"the key ignores {same}"
    # The grid is stitched again from the pictures: it is not part of a filter's key.
    regrid = dataclasses.replace(plan(), grid=dataclasses.replace(plan().grid, n=3, margin=1))
    assert filter_keys(regrid, "model-a")[1] == base


def test_the_engine_version_covers_the_presets_numbers() -> None:
    assert ENGINE_VERSION in GOLDEN, f"record GOLDEN[{ENGINE_VERSION}] in this test"
    assert presets_fingerprint() == GOLDEN[ENGINE_VERSION]["presets"], (
        "a preset's numbers changed: bump ENGINE_VERSION in filtercast_server/cache/keys.py "
        f"and record GOLDEN[{ENGINE_VERSION + 1}] here (presets: {presets_fingerprint()})"
    )


def tiny_losses(weights) -> dict[str, list[float]]:
    from filtercast_server.engine.ascent import AscentEngine
    from filtercast_server.engine.devices import Device
    from filtercast_server.engine.models import LoadedModel
    from filtercast_server.planning import make_plan

    cpu = Device(name="/CPU:0", kind="cpu", description="test CPU", native_bf16=False)
    models = {"vgg16": LoadedModel("vgg16", str(weights), cpu)}
    losses = {}
    for name, (preset, overrides) in RUNS.items():
        overrides = {"layer": "block3_conv1", **overrides}
        work = make_plan(
            models, preset=preset, overrides=overrides, filters="0:4", precision="float32", seed=11
        )
        outcomes = sorted(AscentEngine(models, max_batch=8).run(work), key=lambda o: o.index)
        losses[name] = [round(o.loss, 4) for o in outcomes] + [o.revived for o in outcomes]
    return losses


def test_the_engine_version_covers_the_ascents_numbers(vgg16_weights) -> None:
    expected = GOLDEN[ENGINE_VERSION]["losses"]
    got = tiny_losses(vgg16_weights)
    assert set(got) == set(expected), f"record the losses of every run: {got}"
    for name, losses in got.items():
        assert losses == pytest.approx(expected[name], rel=2e-3, abs=1e-3), (
            f"the {name} ascent's numbers moved ({losses} != {expected[name]}): if the change "
            "is meant, bump ENGINE_VERSION in filtercast_server/cache/keys.py and record "
            f"GOLDEN[{ENGINE_VERSION + 1}] here: {got}"
        )
