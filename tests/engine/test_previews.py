"""Previews in the real engine: a preview at step k is the picture k steps make, as a final."""

import dataclasses

import numpy as np
import pytest

from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.models import LoadedModel
from filtercast_server.jobs import FilterOutcome, FilterPreview
from filtercast_server.planning import make_plan
from tests.support.engine import CPU


@pytest.fixture(scope="module")
def vgg() -> dict[str, LoadedModel]:
    return {"vgg16": LoadedModel("vgg16", "random", CPU, seed=3)}


def events_of(engine: AscentEngine, plan) -> list:  # type: ignore[no-untyped-def]
    jobs = plan.jobs(plan.filters)
    taken = iter([jobs])
    ended = engine.run_jobs(plan.params, plan.precision, plan.structure, lambda n: next(taken, []))
    return [item for step in ended for item in step]


@pytest.mark.parametrize("preset", ["classic", "robust"])
def test_a_preview_is_the_final_picture_of_that_many_steps(vgg, preset: str) -> None:
    overrides = {"layer": "block2_conv1", "size": 32, "steps": 10}
    plan = make_plan(
        vgg, preset=preset, overrides=overrides, filters="0:3", seed=5, precision="float32"
    )
    engine = AscentEngine(vgg)
    events = events_of(engine, dataclasses.replace(plan, preview_every=5))
    previews = [o for _, o in events if isinstance(o, FilterPreview)]
    finals = {o.index: o for _, o in events if isinstance(o, FilterOutcome)}
    shorter = {
        steps: {
            o.index: o
            for o in engine.run(
                dataclasses.replace(plan, params=dataclasses.replace(plan.params, steps=steps))
            )
        }
        for steps in (1, 5)
    }
    at_five = shorter[5]
    expected = [
        (index, steps)
        for steps, outcomes in shorter.items()
        for index, outcome in outcomes.items()
        if not outcome.dead
    ]
    assert expected, "at least one filter lives to show its previews"
    assert sorted((p.index, p.step) for p in previews) == sorted(expected)  # after steps 1 and 5
    for preview in previews:
        np.testing.assert_array_equal(preview.image, shorter[preview.step][preview.index].image)
        assert preview.loss == pytest.approx(shorter[preview.step][preview.index].loss)
    for final in (f for f in finals.values() if not f.dead):
        assert len(final.curve) == 10 and final.curve[-1] == final.loss
        assert final.curve[:5] == pytest.approx(at_five[final.index].curve)
    plain = {o.index: o for o in engine.run(plan)}  # previews change nothing of the finals
    for index, final in finals.items():
        np.testing.assert_array_equal(final.image, plain[index].image)
