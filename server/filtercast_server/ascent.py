"""Batched gradient ascent: many filters, one compiled TensorFlow step.

Each row of a batch maximises the mean activation of its own filter. Rows are
independent (inference mode, no cross-row terms), so the gradient of the sum
of the rows' losses is every row's own gradient. Rows leave the batch as soon
as they finish or die, and in single-round presets new filters take their
place at once (continuous batching), so a dead filter never slows the others.
A filter that dies at its first step may restart from fresh noise (revive).

Two methods share this engine: the seeds' plain pixels (here) and the robust
preset's Fourier parameterization (fourier.py).
"""

import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

import filtercast_native as native
from filtercast_server.fourier import FourierAscent, build_fourier_step
from filtercast_server.models import LoadedModel
from filtercast_server.presets import AscentParams
from filtercast_server.rows import Method, Row, State, filter_losses
from filtercast_server.tf import tf
from filtercast_server.work import (
    Ended,
    EngineObserver,
    FilterOutcome,
    Job,
    JobSource,
    Plan,
    Precision,
)

RMS_EPS = 1e-7  # the seeds' K.epsilon() in g / (sqrt(mean(g²)) + eps)
L2_EPS_SQUARED = 1e-12  # tf.math.l2_normalize's floor on sum(g²)

StepFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

Slices = Iterator[Ended]


def initial_image(
    params: AscentParams, seed: int, index: int, channels: int = 3, attempt: int = 0
) -> np.ndarray:
    """A filter's starting noise; depends only on (seed, filter, attempt) and its channels.

    The first attempt is the seeds' uniform noise. A restart (revive) draws
    smooth noise instead: the seeds' noise is the same texture every time, and
    a deep filter that sees nothing in one draw sees nothing in the next (13
    of VGG16 block5_conv1's first 64 filters stay dead through 8 draws of it;
    after 3 draws of smooth noise, 2 do).
    """
    size = params.round_sizes()[0]
    if attempt:
        return smooth_noise(np.random.default_rng([seed, index, attempt]), size, channels, params)
    uniform = np.random.default_rng([seed, index]).random((size, size, channels))
    return ((uniform - 0.5) * params.init_scale + params.init_offset).astype(np.float32)


def smooth_noise(
    rng: np.random.Generator, size: int, channels: int, params: AscentParams
) -> np.ndarray:
    """Noise over every scale, with std init_scale around init_offset.

    Uniform grids of 2, 4, 8... px, bicubic-upsampled, each weighted by 1/its side, summed.
    """
    total = np.zeros((size, size, channels), np.float32)
    side = 2
    while side <= size:
        grid = (rng.random((side, side, channels)) - 0.5).astype(np.float32)
        for c in range(channels):
            layer = Image.fromarray(np.ascontiguousarray(grid[..., c]))  # mode F
            total[..., c] += np.asarray(layer.resize((size, size), Image.Resampling.BICUBIC)) / side
        side *= 2
    total *= params.init_scale / max(float(total.std()), 1e-12)
    return total + np.float32(params.init_offset)


def build_step(
    extractor: tf.keras.Model, border: int, gradient_norm: str, channels: int = 3
) -> StepFn:
    """One compiled ascent step for a whole batch.

    Takes (images float32 (B,H,W,C), filters int32 (B,), step_size) and returns
    the updated images and each row's loss before the update. The input
    signature has free batch and spatial sizes: one trace serves every batch.
    """

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, channels], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def step(images: tf.Tensor, filters: tf.Tensor, step_size: tf.Tensor):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            losses = filter_losses(extractor(images, training=False), filters, border)
            total = tf.reduce_sum(losses)
        grads = tape.gradient(total, images)
        if gradient_norm == "rms":
            scale = tf.sqrt(tf.reduce_mean(tf.square(grads), axis=[1, 2, 3], keepdims=True))
            grads = grads / (scale + RMS_EPS)
        else:
            grads = grads * tf.math.rsqrt(
                tf.maximum(
                    tf.reduce_sum(tf.square(grads), axis=[1, 2, 3], keepdims=True), L2_EPS_SQUARED
                )
            )
        return images + step_size * grads, losses

    return step


def rescale(images: np.ndarray, params: AscentParams, target: int) -> np.ndarray:
    """The upscale preset's step between rounds: deprocess, bicubic resize, map back."""
    axes = (1, 2, 3)
    mean = images.mean(axis=axes, dtype=np.float64)
    std = images.std(axis=axes, dtype=np.float64)
    pictures = native.deprocess(images, std=params.deprocess_std, eps=params.deprocess_eps)
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(p.squeeze(-1) if p.shape[-1] == 1 else p).resize(
                    (target, target), Image.Resampling.BICUBIC
                )
            ).reshape(target, target, p.shape[-1])
            for p in pictures
        ]
    )
    return native.process(resized, mean, std, target_std=params.deprocess_std)


class PixelAscent:
    """The seeds' method: a plain float image moved along the normalized gradient."""

    def __init__(self, params: AscentParams, step: StepFn, channels: int) -> None:
        self.params, self.channels, self._step = params, channels, step
        self._step_size = tf.constant(params.step_size, tf.float32)

    def initial(self, rows: Sequence[Row]) -> tuple[np.ndarray, ...]:
        """Each row's start noise."""
        return (
            np.stack(
                [
                    initial_image(self.params, r.job.seed, r.index, self.channels, r.attempt)
                    for r in rows
                ]
            ),
        )

    def step(self, state: State, rows: Sequence[Row]) -> tuple[State, tf.Tensor]:
        """Img += step_size * normalized gradient, for every row."""
        filters = tf.constant([r.index for r in rows], tf.int32)
        images, losses = self._step(state[0], filters, self._step_size)
        return (images,), losses

    def pictures(self, state: State) -> np.ndarray:
        """The seeds' deprocessing."""
        p = self.params
        return native.deprocess(
            np.asarray(state[0]), std=p.deprocess_std, crop=p.crop, eps=p.deprocess_eps
        )


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
        self._steps: dict[tuple, Callable[..., Any]] = {}

    def batch_size(self, params: AscentParams) -> int:
        """Rows per batch: bounded by max_batch and by the pixels the network sees."""
        largest = max(params.view_size(size) for size in params.round_sizes())
        return max(1, min(self.max_batch, self.max_batch_pixels // (largest * largest)))

    def method(self, params: AscentParams, precision: Precision) -> Method:
        """The ascent method of `params`, its compiled step built once per shape of work."""
        model = self.models[params.model]
        fourier = params.parameterization == "fourier"
        key = (
            params.model,
            params.layer,
            precision,
            params.border,
            params.objective,
            params.preprocessing,
            params.parameterization,
            None if fourier else params.gradient_norm,
        )
        if key not in self._steps:
            with tf.device(model.device.name):  # the extractor's own weights (pre-activation)
                extractor = model.extractor(
                    params.layer,
                    precision,
                    training_preprocessing=params.preprocessing == "model",
                    pre_activation=params.objective == "pre_activation",
                )
                self._steps[key] = (
                    build_fourier_step(extractor, params.border, model.channels)
                    if fourier
                    else build_step(extractor, params.border, params.gradient_norm, model.channels)
                )
        with tf.device(model.device.name):
            if fourier:
                return FourierAscent(params, self._steps[key], model.channels)
            return PixelAscent(params, self._steps[key], model.channels)

    def run(self, plan: Plan) -> Iterator[FilterOutcome]:
        """Yield each filter's outcome of one plan as soon as it is known."""
        pending = deque(Job(index, plan.seed) for index in plan.filters)

        def source(n: int) -> list[Job]:
            return [pending.popleft() for _ in range(min(n, len(pending)))]

        for ended in self.run_jobs(plan.params, plan.precision, source):
            yield from (outcome for _, outcome in ended if outcome is not None)

    def run_jobs(self, params: AscentParams, precision: Precision, source: JobSource) -> Slices:
        """Run jobs pulled from `source` until it has none.

        Each iteration runs at most one compiled step for the whole batch and
        gives the (job, outcome) pairs that ended in it (often none), so a
        caller can interleave several batches step by step. The outcome is
        None for a job dropped because it was cancelled. Every job shares
        `params` and `precision` (they decide the compiled step); seeds and
        owners may differ, so jobs of many requests share batches.
        """
        method = self.method(params, precision)
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
        and the survivors and their state are returned. Dead rows end at once,
        or restart (into `revived`) when they died at their first step and
        have restarts left; rows whose job was cancelled leave at the next step.
        """
        threshold = params.dead_threshold
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
            ended: Ended = []
            keep, done = [], []
            for position, (row, loss) in enumerate(zip(rows, losses, strict=True)):
                row.steps += 1
                row.loss = float(loss)
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
            finished = [rows[p] for p in done]
            free = capacity - len(keep)
            fresh = refill(free) if refill and free else []
            for row in fresh:
                row.end = params.steps
            with tf.device(device):
                finished_state = tuple(_take(t, done) for t in state) if done else ()
                if len(keep) < len(rows):  # the common step keeps every row: no copy
                    state = tuple(_take(t, keep) for t in state)
                if fresh:
                    state = tuple(
                        tf.concat([t, new], axis=0)
                        for t, new in zip(state, method.initial(fresh), strict=True)
                    )
            rows = [rows[p] for p in keep] + fresh
            if finished and refill is None:  # lockstep: every surviving row finished now
                yield ended
                return finished, finished_state
            if finished:
                ended.extend(self._finish(params, method, finished, finished_state))
            yield ended
        return [], ()

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
        )


def _take(batch: tf.Tensor, positions: list[int]) -> tf.Tensor:
    """Rows `positions` of a batch (an empty list gives an empty batch)."""
    return tf.gather(batch, tf.constant(positions, tf.int32))
