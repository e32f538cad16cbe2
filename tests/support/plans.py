"""Plans for scheduler tests: one preset's jobs with a chosen layer, filters and steps."""

import dataclasses

from filtercast_server.jobs import Plan, Precision
from filtercast_server.presets import CATALOG


def plan(layer: str, filters: range, steps: int = 1, step_ms: float = 0.0) -> Plan:
    """The classic preset on `layer`, `steps` steps, a step size the stand-in reads as ms."""
    params = dataclasses.replace(
        CATALOG["classic"].params, layer=layer, steps=steps, step_size=step_ms or 1e-6
    )
    return Plan(params, CATALOG["classic"].grid, Precision.FLOAT32, tuple(filters), seed=0)
