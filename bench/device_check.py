"""The device check: what the engine does on this machine's accelerator, in one JSON file.

Whoever is lent a GPU machine runs one command (under 8 minutes in all on an
H100-class card; --budget-s bounds the timed runs):

    .venv/bin/python bench/device_check.py --out device-check.json

It records the device (name, compute capability or CPU flags, memory), the
batch limits a server would choose there, where robust's view warp
(ImageProjectiveTransformV3) runs and whether robust's whole step places on
the device without soft placement, then classic and robust over every filter
of VGG16 block5_conv1 (512) in bfloat16 and in float32: seconds per filter,
rows per batch, the median step, and the peak accelerator memory of each run.
Each run gets an equal share of what is left of the budget and stops taking
new filters when its share is spent, so the file is always written and says
how many filters each figure covers.

On the CPU path, tiny (what tests/ops/test_device_check.py runs):

    .venv/bin/python bench/device_check.py --device cpu --weights random \
        --filters 0:4 --size 32 --steps 2 --out /tmp/device-check.json
"""

import argparse
import dataclasses
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import (
    Device,
    cpu_flags,
    memory_in_use,
    reset_memory_peak,
    select_device,
)
from filtercast_server.engine.fourier import through
from filtercast_server.engine.loading import available_memory
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.tf import tf
from filtercast_server.jobs import EngineObserver, Job, Precision
from filtercast_server.params import AscentParams
from filtercast_server.planning import Plan, make_plan

DEFAULT_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared/models/vgg16_imagenet_notop.weights.h5"
)
PRESETS = ("classic", "robust")


class StepTimes(EngineObserver):
    """Collects the seconds of every compiled step and the rows it carried."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []

    def on_step(
        self, params: AscentParams, precision: Precision, rows: int, seconds: float
    ) -> None:
        """Keep one step's rows and seconds."""
        self.steps.append((rows, seconds))


def device_report(device: Device) -> dict:
    """What the machine is: the device as the server sees it, its memory, the software."""
    report: dict = {
        "name": device.name,
        "kind": device.kind,
        "description": device.description,
        "native_bf16": device.native_bf16,
        "batch_limits": dict(zip(("rows", "pixels"), device.batch_limits(), strict=True)),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "host_memory_available_bytes": available_memory(),
    }
    if device.kind == "gpu":
        build = tf.sysconfig.get_build_info()
        report["cuda"] = build.get("cuda_version")
        report["cudnn"] = build.get("cudnn_version")
        report["gpu_memory"] = nvidia_smi()
    else:
        report["cpu_flags"] = sorted(
            flag for flag in cpu_flags() if flag.startswith(("avx", "amx", "fma"))
        )
    return report


def nvidia_smi() -> str | None:
    """nvidia-smi's name, total and used memory of each GPU (None where it is not installed)."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,memory.total,memory.used"
    result = subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip() or result.stderr.strip()


def placement(engine: AscentEngine, models: dict, device: Device, size: int) -> dict:
    """Where robust's view warp runs, and whether its whole step runs without soft placement.

    TensorFlow silently moves an op without a kernel for the device to the
    CPU; with soft placement off that is an error instead, so a step that
    runs shows every op of it has a kernel here. The step is traced afresh
    (its own engine) so the setting applies to it.
    """
    images = tf.zeros([1, size, size, 3])
    identity = tf.constant([[1, 0, 0, 0, 1, 0, 0, 0]], tf.float32)
    with tf.device(device.name):
        warp = through(images, identity, tf.constant(size)).device
    tf.config.set_soft_device_placement(False)
    try:
        probe = AscentEngine(models, *device.batch_limits())
        plan = make_plan(
            models, preset="robust", overrides={"steps": 1, "size": size}, filters="0:1", seed=0
        )
        list(probe.run(plan))
        hard = "every op of robust's step has a kernel on the device"
    except (tf.errors.OpError, ValueError, RuntimeError) as error:
        hard = f"failed: {type(error).__name__}: {str(error).splitlines()[0]}"
    finally:
        tf.config.set_soft_device_placement(True)
    return {"view_warp_device": warp, "hard_placement": hard}


def timed_run(
    engine: AscentEngine, times: StepTimes, preset: str, plan: Plan, seconds: float
) -> dict:
    """One plan's figures, taking new filters only while its `seconds` last.

    The first batch always runs, so every run has a figure.
    """
    device = engine.models[plan.params.model].device
    rows = engine.batch_size(plan.params)
    warm = dataclasses.replace(
        plan, params=dataclasses.replace(plan.params, steps=1), filters=plan.filters[:rows]
    )
    list(engine.run(warm))  # the trace, for a full batch, outside the timing
    times.steps.clear()
    reset_memory_peak(device)
    pending = deque(plan.jobs(unit) for unit in plan.units(plan.filters))
    asked = sum(len(jobs) for jobs in pending)
    started = time.perf_counter()

    def source(n: int) -> list[Job]:
        taken: list[Job] = []
        spent = bool(times.steps) and time.perf_counter() - started > seconds
        while pending and not spent and len(taken) + len(pending[0]) <= n:
            taken.extend(pending.popleft())
        return taken

    outcomes = [
        outcome
        for ended in engine.run_jobs(plan.params, plan.precision, plan.structure, source)
        for _, outcome in ended
        if outcome is not None
    ]
    elapsed = time.perf_counter() - started
    step_seconds = [s for _, s in times.steps]
    return {
        "preset": preset,
        "precision": plan.precision.value,
        "size": plan.params.size,
        "view_size": plan.params.view_size(plan.params.size),
        "steps": plan.params.steps,
        "rows_per_batch": rows,
        "filters_asked": asked,
        "filters_done": len(outcomes),
        "dead": sum(o.dead for o in outcomes),
        "seconds": round(elapsed, 3),
        "seconds_per_filter": round(elapsed / len(outcomes), 4) if outcomes else None,
        "median_step_seconds": round(statistics.median(step_seconds), 4) if step_seconds else None,
        "peak_memory_bytes": memory_in_use(device, peak=True),
        "stopped_by_budget": len(outcomes) < asked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="a file, or random")
    parser.add_argument("--filters", default="0:512")
    parser.add_argument("--precisions", default="bfloat16,float32")
    parser.add_argument("--size", type=int, help="override both presets' picture size")
    parser.add_argument("--steps", type=int, help="override both presets' step count")
    parser.add_argument("--budget-s", type=float, default=420.0, help="for all timed runs")
    parser.add_argument("--out", type=Path, default=Path("device-check.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    weights = args.weights if args.weights == "random" or Path(args.weights).is_file() else "random"
    device = select_device(args.device)
    models = {"vgg16": LoadedModel("vgg16", weights, device, seed=0)}
    times = StepTimes()
    engine = AscentEngine(models, *device.batch_limits(), observer=times)
    overrides = {k: v for k, v in (("size", args.size), ("steps", args.steps)) if v is not None}
    report = {
        "command": " ".join(sys.argv),
        "weights": Path(weights).name if weights != "random" else "random (seed 0)",
        "device": device_report(device),
        "placement": placement(engine, models, device, args.size or 64),
        "runs": [],
    }
    runs = [(p, precision) for precision in args.precisions.split(",") for p in PRESETS]
    budget_end = time.perf_counter() + args.budget_s
    for position, (preset, precision) in enumerate(runs):
        plan = make_plan(
            models, preset=preset, overrides=overrides, filters=args.filters,
            precision=precision, seed=0,
        )  # fmt: skip
        share = max(0.0, budget_end - time.perf_counter()) / (len(runs) - position)
        run = timed_run(engine, times, preset, plan, share)
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} after {report['total_seconds']} s")


if __name__ == "__main__":
    main()
