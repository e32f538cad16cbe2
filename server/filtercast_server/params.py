"""What one picture depends on, and what a request may ask for: plain frozen values.

:class:`AscentParams` is the complete recipe for one filter's picture (two
plans with equal params share batches, and the cache key hashes them);
:class:`GridParams` how the best pictures are stitched; :class:`Preset` one
published version of the algorithm; :class:`Limits` an operator's bounds.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

GradientNorm = Literal["rms", "l2"]
GridOrder = Literal["loss", "index"]
Parameterization = Literal["pixels", "fourier"]
Objective = Literal["activation", "pre_activation"]
InputPreprocessing = Literal["raw", "model"]


@dataclass(frozen=True)
class AscentParams:
    """Everything that decides one filter's picture (plans with equal params share batches)."""

    model: str
    layer: str
    size: int  # final image side in pixels
    steps: int  # ascent steps per round
    step_size: float
    init_scale: float  # start = (uniform[0,1) - 0.5) * init_scale + init_offset
    init_offset: float
    gradient_norm: GradientNorm  # rms: g / (sqrt(mean g²) + 1e-7); l2: g / ||g||
    border: int  # activation pixels left out of the loss on each side
    dead_threshold: float | None  # a filter whose loss falls to <= this is dead
    upscale_rounds: int  # 0: one ascent at `size`; k: k rounds growing to `size`
    upscale_factor: float
    deprocess_std: float
    deprocess_eps: float
    crop: int  # pixels removed from each side of the final picture
    # pixels: the seeds' plain image and normalized-gradient step. fourier: the
    # image as a 1/f-scaled spectrum with decorrelated colours and a sigmoid,
    # climbed with Adam (step_size is its learning rate) through random views.
    parameterization: Parameterization = "pixels"
    # pre_activation: a layer's output before its fused or separate activation
    # (ReLU), which never has a zero gradient everywhere.
    objective: Objective = "activation"
    # raw: 0..255 RGB as the seeds fed it; model: the network's training
    # preprocessing (caffe for VGG, tf for ResNet50V2; a registered model's own).
    preprocessing: InputPreprocessing = "raw"
    # Random view of the image at each step (fourier): gray padding on each
    # side, a shift of up to `jitter` px, a scale in 1 ± scale_jitter, and a
    # rotation of up to ± rotate_degrees.
    pad: int = 0
    jitter: int = 0
    scale_jitter: float = 0.0
    rotate_degrees: float = 0.0
    revive: int = 0  # restarts from fresh noise for a filter that dies (pixels)

    def round_sizes(self) -> list[int]:
        """Image side during each ascent round."""
        if self.upscale_rounds == 0:
            return [self.size]
        k, f = self.upscale_rounds, self.upscale_factor
        return [int(self.size / f ** (k - i)) for i in range(k)]

    def resize_targets(self) -> list[int | None]:
        """Side to resize to after each round (None: no resize)."""
        if self.upscale_rounds == 0:
            return [None]
        k, f = self.upscale_rounds, self.upscale_factor
        return [int(self.size / f ** (k - 1 - i)) for i in range(k)]

    def view_size(self, size: int) -> int:
        """Side of what the network sees for an image of `size` px (padding included)."""
        return size + 2 * self.pad

    def max_steps(self) -> int:
        """The most steps a filter can count: every round's, plus one per restart (revive)."""
        return len(self.round_sizes()) * self.steps + self.revive

    def pixel_steps(self) -> int:
        """Pixels the network sees times steps over every round: one filter's cost."""
        return sum(self.view_size(size) ** 2 * self.steps for size in self.round_sizes())

    @property
    def output_size(self) -> int:
        """Side of the delivered picture (after the crop)."""
        return self.size - 2 * self.crop

    def to_dict(self) -> dict[str, Any]:
        """The resolved values, for manifests and the wire."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GridParams:
    """How a request's best pictures are stitched into one grid."""

    n: int | None  # pictures per side; None: floor(sqrt(kept))
    margin: int  # pixels between pictures
    order: GridOrder  # loss: best first; index: filter order

    def to_dict(self) -> dict[str, Any]:
        """The grid's values under their request names (grid_n, grid_margin, grid_order)."""
        return {f"grid_{name}": value for name, value in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Preset:
    """One published version of the algorithm: its ascent, its grid, its own filter count."""

    params: AscentParams
    grid: GridParams
    default_filters: int | None  # the seed's own filter count (None: all)


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; operators set these per deployment."""

    min_size: int = 16
    max_size: int = 512
    max_steps: int = 200
    max_step_size: float = 1000.0
    max_upscale_rounds: int = 12
    max_filters: int = 2048  # ResNet50V2's widest layers have 2048 channels
    max_grid_n: int = 32
    max_margin: int = 64
    # Filters x pixels x steps over every round: 3e9 admits each preset's own
    # default on VGG16 (upscale, all 512 filters: 2.84e9) and bounds the rest.
    max_cost: int = 3_000_000_000
