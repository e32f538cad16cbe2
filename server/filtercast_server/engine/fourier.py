"""The robust preset's image: a decorrelated Fourier parameterization climbed with Adam.

Olah, Mordvintsev and Schubert, "Feature Visualization" (Distill, 2017), and
the Lucid library that goes with it, found that plain pixel ascent gives
high-frequency patterns the network reacts to but a person cannot read. Their
remedies, all here:

- The image is a spectrum: each channel an rfft2 whose coefficients are
  scaled by 1/frequency, so every frequency moves equally fast under the
  optimizer and low ones are not starved (``frequency_scale``).
- Colours are decorrelated: the three channels are mixed by the square root of
  ImageNet's colour covariance (``COLOR_MIX``), then a sigmoid maps them to
  [0, 1] — no clipping, so no gradient is lost at the edges.
- Transformation robustness: at every step the network sees a random view of
  the image (gray padding, a shift, a scale, a small rotation), so the picture
  must excite the filter wherever and however large it appears. The view is
  one affine warp per row, drawn from a generator seeded by (seed, filter,
  step): a request is reproducible whatever batch its filters share.
- Adam on the spectrum, with per-row step counts for its bias correction, so
  rows that joined a batch at different times each follow their own schedule.

The host's part (colour mix, sigmoid, uint8) runs in the native module.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np

import filtercast_native as native
from filtercast_server.engine.losses import SHARED_BELOW, Loss, share_within_groups
from filtercast_server.engine.rows import Row, State
from filtercast_server.engine.tf import tf
from filtercast_server.params import AscentParams

# Square root of ImageNet's RGB colour covariance (Lucid's
# color_correlation_svd_sqrt), scaled so its largest column has norm 1.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MIX = (_COLOR_SQRT / np.linalg.norm(_COLOR_SQRT, axis=0).max()).astype(np.float32)
SPECTRUM_DIVISOR = 4.0  # keeps the start image's values near 0 (Lucid's fft_image)
GRAY = 0.5  # the padding's value, in [0, 1]
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
TRANSFORM_STREAM = 0x7472  # tags the views' generator apart from the start's

FourierStep = Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]]


def color_mix(channels: int) -> np.ndarray:
    """The (C, C) colour matrix: decorrelated RGB, or 1x1 identity for grayscale."""
    return COLOR_MIX if channels == 3 else np.ones((1, 1), np.float32)


def frequency_scale(size: int | tf.Tensor) -> tf.Tensor:
    """Per-coefficient scale of a size x size rfft2 spectrum: 1 / frequency, times size.

    Frequencies as numpy's fftfreq (rows) and rfftfreq (columns); the zero
    frequency is floored at 1/size so it stays finite. Built from `size` in the
    graph, so one compiled step serves every image size.
    """
    n = tf.cast(size, tf.float32)
    rows = tf.range(size)
    fy = tf.cast(tf.where(rows < (size + 1) // 2, rows, rows - size), tf.float32) / n
    fx = tf.cast(tf.range(size // 2 + 1), tf.float32) / n
    frequencies = tf.sqrt(fx[None, :] ** 2 + fy[:, None] ** 2)
    return n / tf.maximum(frequencies, 1.0 / n)


def initial_spectrum(
    params: AscentParams, seed: int, noise: tuple[int, ...], channels: int, attempt: int = 0
) -> np.ndarray:
    """A picture's starting spectrum (C, H, W//2+1, 2): normal(0, init_scale), keyed by seed."""
    size = params.size
    key = [seed, *noise] if attempt == 0 else [seed, *noise, attempt]
    shape = (channels, size, size // 2 + 1, 2)
    return np.random.default_rng(key).normal(0.0, params.init_scale, shape).astype(np.float32)


def spectrum_of(image: np.ndarray, channels: int) -> np.ndarray:
    """The spectrum (C, S, S//2+1, 2) whose picture is `image` (S, S, C) in 0..1: the inverse.

    Undoes the sigmoid (values kept off 0 and 1 by half a level of uint8),
    the colour mix and the 1/f scale: pictures() of it gives `image` back.
    """
    size = image.shape[0]
    level = 0.5 / 255.0
    clipped = np.clip(image.astype(np.float64), level, 1.0 - level)
    mixed = np.log(clipped / (1.0 - clipped))  # the sigmoid's inverse
    linear = mixed @ np.linalg.inv(color_mix(channels).astype(np.float64)).T
    coefficients = np.fft.rfft2(np.moveaxis(linear, -1, 0) * SPECTRUM_DIVISOR)
    coefficients /= frequency_scale(size).numpy()
    return np.stack([coefficients.real, coefficients.imag], axis=-1).astype(np.float32)


def view_transform(
    params: AscentParams, seed: int, noise: tuple[int, ...], step: int
) -> np.ndarray:
    """One step's random view as an 8-value projective transform (output -> input pixel).

    The view is `pad` px larger on each side than the image; it is shifted by
    an integer of up to `jitter` px, scaled by 1 ± scale_jitter and rotated by
    up to ± rotate_degrees about the centre.
    """
    rng = np.random.default_rng([seed, *noise, step, TRANSFORM_STREAM])
    dx, dy = rng.integers(-params.jitter, params.jitter, size=2, endpoint=True)
    scale = rng.uniform(1.0 - params.scale_jitter, 1.0 + params.scale_jitter)
    angle = math.radians(rng.uniform(-params.rotate_degrees, params.rotate_degrees))
    inner = (params.size - 1) / 2
    outer = (params.view_size(params.size) - 1) / 2
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # input = R(-angle) / scale @ (output - outer - shift) + inner
    x0, y0 = outer + dx, outer + dy
    return np.array(
        [cos, sin, inner - cos * x0 - sin * y0, -sin, cos, inner + sin * x0 - cos * y0, 0, 0],
        np.float32,
    )


def spatial(spectra: tf.Tensor) -> tf.Tensor:
    """(B, C, S, S//2+1, 2) spectra -> (B, S, S, C) images before colour mixing and sigmoid."""
    size = tf.shape(spectra)[2]
    scale = frequency_scale(size)
    spectrum = tf.complex(spectra[..., 0] * scale, spectra[..., 1] * scale)
    images = tf.signal.irfft2d(spectrum, fft_length=tf.stack([size, size])) / SPECTRUM_DIVISOR
    return tf.transpose(images, [0, 2, 3, 1])


def through(images: tf.Tensor, views: tf.Tensor, side: tf.Tensor) -> tf.Tensor:
    """Each image (0..1) seen through its row's view (view_transform), `side` px, gray outside."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=views,
        output_shape=tf.stack([side, side]),
        fill_value=GRAY,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def build_fourier_step(extractor: tf.keras.Model, loss: Loss, channels: int) -> FourierStep:
    """One compiled Adam step for a whole batch of spectra.

    Takes (spectra, m, v, row steps t (B,), the rows' objective data (see
    Loss), views (B, 8), learning rate, pad) and returns the updated spectra,
    m, v and each row's objective (of the view it saw) before the update.
    Rows are independent outside their groups: the gradient of the summed
    loss is each row's own. Sizes and padding are inputs, not constants: one
    trace serves every request of the loss's structure.
    """
    mix = tf.constant(color_mix(channels))
    spectrum_spec = tf.TensorSpec([None, channels, None, None, 2], tf.float32)

    @tf.function(
        input_signature=[
            spectrum_spec,
            spectrum_spec,
            spectrum_spec,
            tf.TensorSpec([None], tf.float32),
            loss.specs(),
            tf.TensorSpec([None, 8], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def step(spectra, m, v, t, data, views, learning_rate, pad):
        view = tf.shape(spectra)[2] + 2 * pad
        start_outputs = None
        if loss.structure.pull == "features":  # the start, seen through the same views
            start_outputs = extractor(through(data["anchor"], views, view) * 255.0, training=False)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(spectra)
            images = tf.sigmoid(tf.einsum("ij,bhwj->bhwi", mix, spatial(spectra)))
            outputs = extractor(through(images, views, view) * 255.0, training=False)
            losses = loss(outputs, data)
            total = tf.reduce_sum(losses)
            penalty = loss.penalty(outputs, data, losses)
            if penalty is not None:
                total += tf.reduce_sum(penalty)
            if loss.structure.pull:
                total -= tf.reduce_sum(loss.pull(images, outputs, start_outputs, data, losses))
        grads = tape.gradient(total, spectra)
        if loss.structure.shared_low_frequencies:
            size = tf.shape(spectra)[2]
            low = frequency_scale(size) >= tf.cast(size, tf.float32) * (1.0 / SHARED_BELOW)
            grads = share_within_groups(grads, data, low[None, None, :, :, None])
        m = ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * grads
        v = ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * tf.square(grads)
        t = tf.reshape(t, [-1, 1, 1, 1, 1])
        m_hat = m / (1.0 - tf.pow(ADAM_BETA1, t))
        v_hat = v / (1.0 - tf.pow(ADAM_BETA2, t))
        return spectra + learning_rate * m_hat / (tf.sqrt(v_hat) + ADAM_EPS), m, v, losses

    return step


class FourierAscent:
    """The robust preset's method: spectra and their Adam moments, stepped through random views."""

    def __init__(self, params: AscentParams, step: FourierStep, channels: int, loss: Loss) -> None:
        self.params, self.channels, self._step, self._loss = params, channels, step, loss
        self._learning_rate = tf.constant(params.step_size, tf.float32)
        self._pad = tf.constant(params.pad, tf.int32)

    def initial(self, rows: Sequence[Row]) -> tuple[np.ndarray, ...]:
        """Each row's start spectrum (its start image's, or noise), and zero Adam moments."""
        spectra = np.stack(
            [
                spectrum_of(r.job.start.at(self.params.size), self.channels)
                if r.job.start is not None
                else initial_spectrum(self.params, r.job.seed, r.noise, self.channels, r.attempt)
                for r in rows
            ]
        )
        return spectra, np.zeros_like(spectra), np.zeros_like(spectra)

    def step(self, state: State, rows: Sequence[Row]) -> tuple[State, tf.Tensor]:
        """One Adam step per row, each through its own view for (seed, noise, step)."""
        views = np.stack([view_transform(self.params, r.job.seed, r.noise, r.steps) for r in rows])
        spectra, m, v, losses = self._step(
            *state,
            tf.constant([r.steps + 1 for r in rows], tf.float32),
            self._loss.data(rows, self.params.size),
            tf.constant(views),
            self._learning_rate,
            self._pad,
        )
        return (spectra, m, v), losses

    def pictures(self, state: State) -> np.ndarray:
        """The spectra as uint8 pictures (colour mix and sigmoid in the native module)."""
        linear = spatial(state[0]).numpy()
        return native.sigmoid_pixels(linear, color_mix(self.channels), crop=self.params.crop)
