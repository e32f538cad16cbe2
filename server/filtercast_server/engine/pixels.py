"""The seeds' method: a plain float image moved along the normalized gradient.

Start noise from (seed, filter, attempt) alone, one compiled step for the
whole batch (RMS or L2 gradient normalization, as each seed does it), the
upscale preset's resize between rounds, and the seeds' deprocessing.
"""

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

import filtercast_native as native
from filtercast_server.engine.losses import Data, Loss
from filtercast_server.engine.rows import Row, State
from filtercast_server.engine.tf import tf
from filtercast_server.params import AscentParams

RMS_EPS = 1e-7  # the seeds' K.epsilon() in g / (sqrt(mean(g²)) + eps)
L2_EPS_SQUARED = 1e-12  # tf.math.l2_normalize's floor on sum(g²)

StepFn = Callable[[tf.Tensor, Data, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def initial_image(
    params: AscentParams, seed: int, noise: tuple[int, ...], channels: int = 3, attempt: int = 0
) -> np.ndarray:
    """A picture's starting noise; depends only on (seed, noise, attempt) and its channels.

    `noise` is a plain filter's (index,), or what an objective's target draws from.

    The first attempt is the seeds' uniform noise. A restart (revive) draws
    smooth noise instead: the seeds' noise is the same texture every time, and
    a deep filter that sees nothing in one draw sees nothing in the next (13
    of VGG16 block5_conv1's first 64 filters stay dead through 8 draws of it;
    after 3 draws of smooth noise, 2 do).
    """
    size = params.round_sizes()[0]
    if attempt:
        return smooth_noise(np.random.default_rng([seed, *noise, attempt]), size, channels, params)
    uniform = np.random.default_rng([seed, *noise]).random((size, size, channels))
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


def start_units(params: AscentParams, training_std: float) -> tuple[float, float]:
    """(offset, span): a start image x in 0..1 becomes offset + (x - 0.5) * span pixel units.

    With the model's preprocessing the image is in 0..255 pixel units; fed
    raw (the seeds), it is centred where the preset's own start noise is, at
    the scale of the network's training input (a span of 255 for caffe's
    0..255, 2 for tf's -1..1).
    """
    if params.preprocessing == "model":
        return 127.5, 255.0
    return params.init_offset, 255.0 / training_std


def start_pixels(image: np.ndarray, units: tuple[float, float]) -> np.ndarray:
    """A start image (0..1) in pixel units (see start_units)."""
    offset, span = units
    return (offset + (image - 0.5) * span).astype(np.float32)


def build_step(
    extractor: tf.keras.Model,
    loss: Loss,
    gradient_norm: str,
    channels: int = 3,
    units: tuple[float, float] = (0.5, 1.0),
) -> StepFn:
    """One compiled ascent step for a whole batch.

    Takes (images float32 (B,H,W,C), the rows' objective data (see Loss),
    step_size) and returns the updated images and each row's objective
    before the update. The input signature has free batch and spatial sizes:
    one trace serves every batch of the loss's structure. An accentuated
    structure subtracts the pull to each row's start image, whose 0..1 values
    are `units` = (offset, span) in these pixel units (start_units).
    """
    offset, span = units

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, channels], tf.float32),
            loss.specs(),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def step(images: tf.Tensor, data: Data, step_size: tf.Tensor):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            outputs = extractor(images, training=False)
            losses = loss(outputs, data)
            total = tf.reduce_sum(losses)
            penalty = loss.penalty(outputs, data, losses)
            if penalty is not None:
                total += tf.reduce_sum(penalty)
            if loss.structure.pull:
                anchor = offset + (data["anchor"] - 0.5) * span
                # the start's features need no gradient: computed off the tape
                with tape.stop_recording():
                    start_outputs = (
                        extractor(anchor, training=False)
                        if loss.structure.pull == "features"
                        else None
                    )
                unit = (images - offset) / span + 0.5
                total -= tf.reduce_sum(loss.pull(unit, outputs, start_outputs, data, losses))
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

    def __init__(
        self,
        params: AscentParams,
        step: StepFn,
        channels: int,
        loss: Loss,
        units: tuple[float, float],
    ) -> None:
        self.params, self.channels, self._step, self._loss = params, channels, step, loss
        self._step_size = tf.constant(params.step_size, tf.float32)
        self._units = units  # of a start image (start_units)

    def initial(self, rows: Sequence[Row]) -> tuple[np.ndarray, ...]:
        """Each row's start: its start image (accentuation), else its start noise."""
        size = self.params.round_sizes()[0]
        return (
            np.stack(
                [
                    start_pixels(r.job.start.at(size), self._units)
                    if r.job.start is not None
                    else initial_image(self.params, r.job.seed, r.noise, self.channels, r.attempt)
                    for r in rows
                ]
            ),
        )

    def step(self, state: State, rows: Sequence[Row]) -> tuple[State, tf.Tensor]:
        """Img += step_size * normalized gradient, for every row."""
        data = self._loss.data(rows, int(state[0].shape[1]))
        images, losses = self._step(state[0], data, self._step_size)
        return (images,), losses

    def pictures(self, state: State) -> np.ndarray:
        """The seeds' deprocessing."""
        p = self.params
        return native.deprocess(
            np.asarray(state[0]), std=p.deprocess_std, crop=p.crop, eps=p.deprocess_eps
        )
