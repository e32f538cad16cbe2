"""Plans for scheduler tests: one preset's jobs with a chosen layer, filters and steps."""

import dataclasses

from filtercast_server.jobs import Plan, Precision
from filtercast_server.objectives import Group, Objective, Target, Term
from filtercast_server.presets import CATALOG


def plan(layer: str, filters: range, steps: int = 1, step_ms: float = 0.0) -> Plan:
    """The classic preset on `layer`, `steps` steps, a step size the stand-in reads as ms."""
    params = dataclasses.replace(
        CATALOG["classic"].params, layer=layer, steps=steps, step_size=step_ms or 1e-6
    )
    return Plan(params, CATALOG["classic"].grid, Precision.FLOAT32, tuple(filters), seed=0)


def grouped_plan(layer: str, groups: int, size: int, steps: int = 1) -> Plan:
    """`groups` diversity groups of `size` pictures each on `layer` (the channel objective)."""
    base = plan(layer, range(groups * size), steps)
    objective = Objective((Term("channel", layer, 0),))
    targets = tuple(
        Target(
            objective,
            (g, m),
            g,
            Group("diversity", size, f"group {g}", diversity_layer=layer, diversity_weight=1.0),
            m,
        )
        for g in range(groups)
        for m in range(size)
    )
    return dataclasses.replace(base, targets=targets)
