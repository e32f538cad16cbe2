"""The classic preset with the real ImageNet VGG16 weights (skipped when absent)."""

import numpy as np
import pytest

from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.planning import make_plan


@pytest.fixture(scope="module")
def real_vgg(vgg16_weights) -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", str(vgg16_weights), select_device("auto"))}


def test_classic_block5_conv1_looks_like_the_seed(real_vgg) -> None:
    engine = AscentEngine(real_vgg)
    plan = make_plan(
        real_vgg, preset="classic", overrides={}, filters="0:32", precision="auto", seed=0
    )
    outcomes = {o.index: o for o in engine.run(plan)}
    start_plan = make_plan(
        real_vgg,
        preset="classic",
        overrides={"steps": 1, "dead_threshold": None},
        filters="0:32",
        precision="auto",
        seed=0,
    )
    start = {o.index: o.loss for o in engine.run(start_plan)}

    dead = [i for i, o in outcomes.items() if o.dead]
    live = [o for o in outcomes.values() if not o.dead]
    assert dead, "the classic seed finds dead filters among 0..31 of block5_conv1"
    assert len(live) >= 16
    for outcome in live:
        assert outcome.image.shape == (128, 128, 3)
        # deprocess scales to std 0.1 of the [0, 1] range: about 25 levels of 255.
        assert 20 <= outcome.image.std() <= 27, (outcome.index, outcome.image.std())
        assert outcome.loss > 100 and outcome.loss > 5 * max(start[outcome.index], 1.0)
    assert np.mean([o.loss for o in live]) > 10 * max(np.mean(list(start.values())), 1.0)


def test_a_weights_file_is_known_by_its_name_and_hash_never_its_path(
    real_vgg, vgg16_weights
) -> None:
    from filtercast_server.engine.models import sha256_of

    model = real_vgg["vgg16"]
    assert model.weights_source == vgg16_weights.name
    assert str(vgg16_weights.parent) not in model.weights_source
    assert model.weights_sha256 == sha256_of(vgg16_weights)
