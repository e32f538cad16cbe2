"""Batched gradient ascent: many filters, one compiled TensorFlow step.

Each row of a batch maximises the mean activation of its own filter. Rows are
independent (inference mode, no cross-row terms), so the gradient of the sum
of the rows' losses is every row's own gradient. Rows leave the batch as soon
as they finish or die, and in single-round presets new filters take their
place at once (continuous batching), so a dead filter never slows the others.
A filter that dies at its first step may restart from fresh noise (revive).

Two methods share this engine: the seeds' plain pixels (pixels.py) and the
robust preset's Fourier parameterization (fourier.py).
"""

import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import numpy as np

from filtercast_server.engine.fourier import FourierAscent, build_fourier_step
from filtercast_server.engine.losses import Loss
from filtercast_server.engine.models import LoadedModel
from filtercast_server.engine.pixels import PixelAscent, build_step, rescale, start_units
from filtercast_server.engine.rows import Method, Row, State
from filtercast_server.engine.tf import tf
from filtercast_server.jobs import (
    Ended,
    EngineObserver,
    FilterOutcome,
    FilterPreview,
    Job,
    JobSource,
    Plan,
    Precision,
)
from filtercast_server.objectives import Structure, plain_structure
from filtercast_server.params import AscentParams
from filtercast_server.planning import check_groups_fit

Slices = Iterator[Ended]
# Compiled steps kept (one per model, loss structure, precision...): each new
# objective structure traces one, and an old one is dropped past this many.
MAX_COMPILED_STEPS = 32


class AscentEngine:
    """Runs plans on one resident model, batching filters up to a memory budget."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        max_batch: int = 64,
        max_batch_pixels: int = 64 * 128 * 128,
        observer: EngineObserver | None = None,
    ) -> None:
        self.models = models
        self.max_batch = max_batch
        self.max_batch_pixels = max_batch_pixels
        self.observer = observer or EngineObserver()
        self._steps: dict[tuple, tuple[Callable[..., Any], Loss]] = {}

    def batch_size(self, params: AscentParams) -> int:
        """Rows per batch: bounded by max_batch and by the pixels the network sees."""
        largest = max(params.view_size(size) for size in params.round_sizes())
        return max(1, min(self.max_batch, self.max_batch_pixels // (largest * largest)))

    @staticmethod
    def _step_key(params: AscentParams, precision: Precision, structure: Structure) -> tuple:
        """What one compiled step serves: everything its trace depends on."""
        return (
            params.model,
            structure,
            precision,
            params.border,
            params.objective,
            params.preprocessing,
            params.parameterization,
            None if params.parameterization == "fourier" else params.gradient_norm,
            params.init_offset if structure.pull else None,  # a start image's units
        )

    def compiled(self, params: AscentParams, precision: Precision, structure: Structure) -> bool:
        """Whether the step of this work is compiled now (any thread may ask: a dict lookup)."""
        return self._step_key(params, precision, structure) in self._steps

    def method(
        self, params: AscentParams, precision: Precision, structure: Structure | None = None
    ) -> Method:
        """The ascent method of `params`, its compiled step built once per shape of work.

        `structure` is the loss its rows share (None: the plain filters of params.layer).
        """
        model = self.models[params.model]
        structure = structure or plain_structure(params.layer)
        fourier = params.parameterization == "fourier"
        key = self._step_key(params, precision, structure)
        units = start_units(params, float(np.mean(model.training_preprocessing.std)))
        if key not in self._steps:
            with tf.device(model.device.name):  # the extractor's own weights (pre-activation)
                extractor = model.extractor(
                    structure.layers,
                    precision,
                    training_preprocessing=params.preprocessing == "model",
                    pre_activation=params.objective == "pre_activation",
                )
                widths = model.widths(structure.layers)
                loss = Loss(structure, params.border, widths, model.channels)
                if len(self._steps) >= MAX_COMPILED_STEPS:  # the oldest goes: bounded memory
                    del self._steps[next(iter(self._steps))]
                step = (
                    build_fourier_step(extractor, loss, model.channels)
                    if fourier
                    else build_step(extractor, loss, params.gradient_norm, model.channels, units)
                )
                self._steps[key] = (step, loss)
        step, loss = self._steps[key]
        with tf.device(model.device.name):
            if fourier:
                return FourierAscent(params, step, model.channels, loss)
            return PixelAscent(params, step, model.channels, loss, units)

    def run(self, plan: Plan) -> Iterator[FilterOutcome]:
        """Yield each filter's outcome of one plan as soon as it is known."""
        check_groups_fit(plan, self.batch_size(plan.params))
        pending = deque(plan.jobs(unit) for unit in plan.units(plan.filters))

        def source(n: int) -> list[Job]:
            taken: list[Job] = []
            while pending and len(taken) + len(pending[0]) <= n:
                taken.extend(pending.popleft())
            return taken

        for ended in self.run_jobs(plan.params, plan.precision, plan.structure, source):
            yield from (outcome for _, outcome in ended if isinstance(outcome, FilterOutcome))

    def run_jobs(
        self,
        params: AscentParams,
        precision: Precision,
        structure: Structure,
        source: JobSource,
    ) -> Slices:
        """Run jobs pulled from `source` until it has none.

        Each iteration runs at most one compiled step for the whole batch and
        gives the (job, outcome) pairs that ended in it (often none), so a
        caller can interleave several batches step by step. The outcome is
        None for a job dropped because it was cancelled. Every job shares
        `params` and `precision` (they decide the compiled step); seeds and
        owners may differ, so jobs of many requests share batches.
        """
        method = self.method(params, precision, structure)
        capacity = self.batch_size(params)
        revived: deque[Row] = deque()  # restarts, taken before new jobs

        def rows_from(n: int) -> list[Row]:
            taken = [revived.popleft() for _ in range(min(n, len(revived)))]
            return taken + [Row(job) for job in source(n - len(taken))] if n > len(taken) else taken

        # Single-round presets refill freed rows at once; multi-round presets
        # run in cohorts, since rows of one batch must share an image size.
        refill = rows_from if params.upscale_rounds == 0 else None
        while rows := rows_from(capacity):
            state = self._start(params, method, rows)
            for target in params.resize_targets():
                rows, state = yield from self._ascend_round(
                    params, method, precision, rows, state, capacity, refill, revived
                )
                if not rows:
                    break
                if target is not None:
                    assert isinstance(method, PixelAscent)  # resolve() refuses fourier rounds
                    state = (rescale(np.asarray(state[0]), params, target),)
            if rows:
                yield self._finish(params, method, rows, state)

    def _start(self, params: AscentParams, method: Method, rows: Sequence[Row]) -> State:
        with tf.device(self.models[params.model].device.name):
            return tuple(tf.constant(a) for a in method.initial(rows))

    def _ascend_round(
        self,
        params: AscentParams,
        method: Method,
        precision: Precision,
        rows: list[Row],
        state: State,
        capacity: int,
        refill: Callable[[int], list[Row]] | None,
        revived: deque[Row],
    ) -> Generator[Ended, None, tuple[list[Row], State]]:
        """Run one round of `steps` steps for every row; each step gives the jobs that ended.

        With `refill`, finished rows end too and new rows take their places;
        the round ends when nothing is left. Without, rows move in lockstep
        and the survivors and their state are returned. Dead and cancelled
        rows leave at the step that shows it (see _sort_rows).
        """
        # Device scopes are a thread-local stack: they are entered and left
        # between yields, never held open while the caller runs.
        device = self.models[params.model].device.name
        for row in rows:
            row.end = row.steps + params.steps
        while rows:
            started = time.perf_counter()
            with tf.device(device):
                state, losses = method.step(state, rows)
                losses = losses.numpy()
            self.observer.on_step(params, precision, len(rows), time.perf_counter() - started)
            ended, keep, done = self._sort_rows(params, rows, losses, revived)
            due = [position for position in keep if rows[position].preview_due()]
            if due:
                with tf.device(device):
                    ended.extend(_previews(method, rows, state, due))
            finished = [rows[p] for p in done]
            free = capacity - len(keep)
            fresh = refill(free) if refill and free else []
            for row in fresh:
                row.end = params.steps
            with tf.device(device):
                state, finished_state = _regroup(method, state, len(rows), keep, done, fresh)
            rows = [rows[p] for p in keep] + fresh
            if finished and refill is None:  # lockstep: every surviving row finished now
                yield ended
                return finished, finished_state
            if finished:
                ended.extend(self._finish(params, method, finished, finished_state))
            yield ended
        return [], ()

    def _sort_rows(
        self, params: AscentParams, rows: list[Row], losses: np.ndarray, revived: deque[Row]
    ) -> tuple[Ended, list[int], list[int]]:
        """After a step: the jobs that ended, the positions that go on and those done.

        A cancelled job leaves; a dead row ends, or restarts (into `revived`)
        when it died at its first step and has restarts left.
        """
        threshold = params.dead_threshold
        ended: Ended = []
        keep, done = [], []
        for position, (row, loss) in enumerate(zip(rows, losses, strict=True)):
            row.steps += 1
            row.loss = float(loss)
            row.curve.append(row.loss)
            if row.job.is_cancelled():
                ended.append((row.job, None))
            elif threshold is not None and row.loss <= threshold:
                if row.steps == 1 and row.attempt < params.revive:
                    revived.append(Row(row.job, row.attempt + 1, row.started))
                    self.observer.on_restart(params)
                else:
                    ended.append((row.job, self._outcome(row, None)))
            elif row.steps >= row.end:
                done.append(position)
            else:
                keep.append(position)
        return ended, keep, done

    def _finish(
        self, params: AscentParams, method: Method, rows: Sequence[Row], state: State
    ) -> Ended:
        started = time.perf_counter()
        with tf.device(self.models[params.model].device.name):
            pictures = method.pictures(state)
        self.observer.on_deprocess(len(rows), time.perf_counter() - started)
        return [
            (row.job, self._outcome(row, picture))
            for row, picture in zip(rows, pictures, strict=True)
        ]

    @staticmethod
    def _outcome(row: Row, picture: np.ndarray | None) -> FilterOutcome:
        # Every restart cost one step (a row restarts only after dying at its first).
        return FilterOutcome(
            row.index,
            row.loss,
            picture is None,
            picture,
            row.steps + row.attempt,
            row.age(),
            revived=row.attempt,
            curve=tuple(row.curve),
        )


def _previews(method: Method, rows: list[Row], state: State, due: list[int]) -> Ended:
    """The pictures of the rows at `due` as they are now (the finals' deprocessing)."""
    pictures = method.pictures(tuple(_take(t, due) for t in state))
    return [
        (rows[p].job, FilterPreview(rows[p].index, rows[p].steps, rows[p].loss, picture))
        for p, picture in zip(due, pictures, strict=True)
    ]


def _regroup(
    method: Method, state: State, size: int, keep: list[int], done: list[int], fresh: list[Row]
) -> tuple[State, State]:
    """The batch's state for the rows kept plus `fresh` ones, and the state of those done."""
    finished_state = tuple(_take(t, done) for t in state) if done else ()
    if len(keep) < size:  # the common step keeps every row: no copy
        state = tuple(_take(t, keep) for t in state)
    if fresh:
        state = tuple(
            tf.concat([t, new], axis=0) for t, new in zip(state, method.initial(fresh), strict=True)
        )
    return state, finished_state


def _take(batch: tf.Tensor, positions: list[int]) -> tf.Tensor:
    """Rows `positions` of a batch (an empty list gives an empty batch)."""
    return tf.gather(batch, tf.constant(positions, tf.int32))
