"""Batched gradient ascent: many filters, one compiled TensorFlow step.

Each row of a batch maximises the mean activation of its own filter. Rows are
independent (inference mode, no cross-row terms), so the gradient of the sum
of the rows' losses is every row's own gradient. Rows leave the batch as soon
as they finish or die, and in single-round presets new filters take their
place at once (continuous batching), so a dead filter never slows the others.
"""

import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

import filtercast_native as native
from filtercast_server.models import LoadedModel
from filtercast_server.presets import AscentParams
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


@dataclass(eq=False)
class _Row:
    job: Job
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    end: int = 0  # the step at which this row's current round ends
    loss: float = float("nan")

    @property
    def index(self) -> int:
        return self.job.index

    def age(self) -> float:
        return time.perf_counter() - self.started


def initial_image(params: AscentParams, seed: int, index: int, channels: int = 3) -> np.ndarray:
    """A filter's starting noise; depends only on (seed, filter index) and the input's channels."""
    size = params.round_sizes()[0]
    uniform = np.random.default_rng([seed, index]).random((size, size, channels))
    return ((uniform - 0.5) * params.init_scale + params.init_offset).astype(np.float32)


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
            activations = extractor(images, training=False)
            if border:
                activations = activations[:, border:-border, border:-border, :]
            chosen = tf.gather(activations, filters, axis=3, batch_dims=1)
            losses = tf.reduce_mean(tf.cast(chosen, tf.float32), axis=[1, 2])
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
        self._steps: dict[tuple, StepFn] = {}

    def batch_size(self, params: AscentParams) -> int:
        """Rows per batch: bounded by max_batch and by pixels at the largest round."""
        largest = max(params.round_sizes())
        return max(1, min(self.max_batch, self.max_batch_pixels // (largest * largest)))

    def step_fn(self, params: AscentParams, precision: Precision) -> StepFn:
        """The compiled step for this model, layer, precision and loss (cached)."""
        key = (params.model, params.layer, precision, params.border, params.gradient_norm)
        if key not in self._steps:
            model = self.models[params.model]
            extractor = model.extractor(params.layer, precision)
            self._steps[key] = build_step(
                extractor, params.border, params.gradient_norm, model.channels
            )
        return self._steps[key]

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
        step = self.step_fn(params, precision)
        capacity = self.batch_size(params)
        # Single-round presets refill freed rows at once; multi-round presets
        # run in cohorts, since rows of one batch must share an image size.
        refill = source if params.upscale_rounds == 0 else None
        while rows := [_Row(job) for job in source(capacity)]:
            images = self._initial_batch(params, [r.job for r in rows])
            for target in params.resize_targets():
                rows, images = yield from self._ascend_round(
                    params, step, precision, rows, images, capacity, refill
                )
                if not rows:
                    break
                if target is not None:
                    images = rescale(images, params, target)
            if rows:
                yield self._finish(params, rows, images)

    def _initial_batch(self, params: AscentParams, jobs: Sequence[Job]) -> np.ndarray:
        channels = self.models[params.model].channels
        return np.stack([initial_image(params, job.seed, job.index, channels) for job in jobs])

    def _ascend_round(
        self,
        params: AscentParams,
        step: StepFn,
        precision: Precision,
        rows: list[_Row],
        images: np.ndarray,
        capacity: int,
        refill: JobSource | None,
    ) -> Generator[Ended, None, tuple[list[_Row], np.ndarray]]:
        """Run one round of `steps` steps for every row; each step gives the jobs that ended.

        With `refill`, finished rows end too and new jobs take their places;
        the round ends when nothing is left. Without, rows move in lockstep
        and the survivors and their float images are returned. Dead rows end
        at once; rows whose job was cancelled leave at the next step.
        """
        threshold = params.dead_threshold
        # Device scopes are a thread-local stack: they are entered and left
        # between yields, never held open while the caller runs.
        device = self.models[params.model].device.name
        for row in rows:
            row.end = row.steps + params.steps
        with tf.device(device):
            step_size = tf.constant(params.step_size, tf.float32)
            batch = tf.constant(images)
        while rows:
            started = time.perf_counter()
            with tf.device(device):
                filters = tf.constant([r.index for r in rows], tf.int32)
                batch, losses = step(batch, filters, step_size)
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
                    ended.append((row.job, self._outcome(row, None)))
                elif row.steps >= row.end:
                    done.append(position)
                else:
                    keep.append(position)
            finished = [rows[p] for p in done]
            free = capacity - len(keep)
            fresh = [_Row(job, end=params.steps) for job in refill(free)] if refill and free else []
            with tf.device(device):
                finished_images = _take(batch, done).numpy() if done else None
                if len(keep) < len(rows):  # the common step keeps every row: no copy
                    batch = _take(batch, keep)
                if fresh:
                    new_images = self._initial_batch(params, [r.job for r in fresh])
                    batch = tf.concat([batch, new_images], axis=0)
            rows = [rows[p] for p in keep] + fresh
            if finished and refill is None:  # lockstep: every surviving row finished now
                assert finished_images is not None
                yield ended
                return finished, finished_images
            if finished:
                assert finished_images is not None
                ended.extend(self._finish(params, finished, finished_images))
            yield ended
        return [], images[:0]

    def _finish(self, params: AscentParams, rows: Sequence[_Row], images: np.ndarray) -> Ended:
        started = time.perf_counter()
        pictures = native.deprocess(
            images, std=params.deprocess_std, crop=params.crop, eps=params.deprocess_eps
        )
        self.observer.on_deprocess(len(rows), time.perf_counter() - started)
        return [
            (row.job, self._outcome(row, picture))
            for row, picture in zip(rows, pictures, strict=True)
        ]

    @staticmethod
    def _outcome(row: _Row, picture: np.ndarray | None) -> FilterOutcome:
        return FilterOutcome(row.index, row.loss, picture is None, picture, row.steps, row.age())


def _take(batch: tf.Tensor, positions: list[int]) -> tf.Tensor:
    """Rows `positions` of a batch (an empty list gives an empty batch)."""
    return tf.gather(batch, tf.constant(positions, tf.int32))
