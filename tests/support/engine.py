"""The real engine on this machine's CPU, for the engine tier (imports TensorFlow)."""

from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import Device
from filtercast_server.jobs import FilterOutcome, Plan

CPU = Device(name="/CPU:0", kind="cpu", description="test CPU", native_bf16=False)


def run(models, plan: Plan, max_batch: int = 64) -> dict[int, FilterOutcome]:
    """Every filter of `plan`, each exactly once, by index."""
    outcomes = list(AscentEngine(models, max_batch=max_batch).run(plan))
    assert sorted(o.index for o in outcomes) == sorted(plan.filters), "each filter exactly once"
    return {o.index: o for o in outcomes}
