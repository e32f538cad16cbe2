"""Accentuation: a picture that starts from the user's image and stays close to it.

Feature accentuation (Hamblin et al., 2024) asks what an image would look
like with one feature made stronger: the ascent starts from the image (the
pixel presets take it as their start; robust inverts it into its Fourier
parameterization) and a pull keeps the result near it. The pull is a
weighted distance to the start, in pixels or in the objective's layers'
features, relative to the row's own objective (held constant in the
gradient) as the diversity term is: one weight means the same on every
layer and model. docs/benchmarks.md measures the two spaces side by side.

The image is checked and decoded once (images.py), brought to the request's
size, and hashed: the hash of what the network starts from is part of every
picture's cache key.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from filtercast import contract
from filtercast.v1 import filtercast_pb2 as pb
from filtercast_server.errors import InvalidRequestError
from filtercast_server.images import decode_image, square_view, to_channels
from filtercast_server.objectives import decimal

PullSpace = Literal["pixels", "features"]
PULL_SPACES: tuple[PullSpace, ...] = ("pixels", "features")
DEFAULT_PULL_SPACE: PullSpace = "pixels"
# Relative weights (see the module): measured in bench/accentuation_bench.py.
DEFAULT_PULL: dict[PullSpace, float] = {"pixels": 100.0, "features": 8.0}
MAX_PULL = 1000.0


@dataclass(frozen=True)
class Accentuate:
    """What a request asks: a start image (PNG or JPEG bytes) and its pull (None: the default)."""

    image: bytes
    pull: float | None = None
    space: str = ""


@dataclass(frozen=True, eq=False)
class StartImage:
    """The user's image at the request's size, and the pull towards it."""

    pixels: np.ndarray  # uint8 (size, size, channels): what the first step sees
    pull: float  # relative weight of the distance to it; 0: only a start
    space: PullSpace
    sha256: str = field(init=False)
    _sizes: dict[int, np.ndarray] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes())
        object.__setattr__(self, "sha256", digest.hexdigest())

    @property
    def size(self) -> int:
        """Its side in pixels."""
        return int(self.pixels.shape[0])

    def identity(self) -> str:
        """What a picture's cache key takes of it: the pixels' hash, the pull and its space."""
        return f"{self.sha256}:{self.pull!r}:{self.space}"

    def fields(self) -> dict[str, str | float]:
        """What a manifest and Accepted's ResolvedParams record of it."""
        return {"start_image_sha256": self.sha256, "pull": self.pull, "pull_space": self.space}

    def at(self, size: int) -> np.ndarray:
        """float32 (size, size, C) in 0..1: the image resized (Lanczos) for a round of `size` px.

        Kept per size for the life of the start (every step of every row asks for it).
        """
        found = self._sizes.get(size)
        if found is None:
            pixels = self.pixels
            if size != self.size:
                channels = pixels.shape[-1]
                image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
                resized = image.resize((size, size), Image.Resampling.LANCZOS)
                pixels = np.asarray(resized, dtype=np.uint8).reshape(size, size, channels)
            found = pixels.astype(np.float32) / 255.0
            found.flags.writeable = False  # shared by every step of every row
            self._sizes[size] = found
        return found


def accentuate_of(request: pb.VisualizeFiltersRequest) -> Accentuate | None:
    """The request's start image and pull, or None (start_image decodes and checks the image)."""
    if not request.HasField("accentuate"):
        return None
    wanted = request.accentuate
    if not wanted.image:
        raise InvalidRequestError(
            "accentuate.image is empty; send the PNG or JPEG bytes to start from",
            "accentuate.image",
        )
    space = contract.name_of(contract.PULL_SPACES, wanted.pull_space, contract.PULL_SPACE_DEFAULT)
    if space is None:
        valid = ", ".join(name.upper() for name in contract.PULL_SPACES)
        raise InvalidRequestError(
            f"unknown accentuate.pull_space {wanted.pull_space}; valid: {valid}",
            "accentuate.pull_space",
        )
    pull = decimal(wanted.pull) if wanted.HasField("pull") else None
    return Accentuate(wanted.image, pull, space)


def start_image(
    data: bytes,
    size: int,
    channels: int,
    pull: float | None = None,
    space: str = "",
) -> StartImage:
    """The request's start image, checked, decoded and squared (InvalidRequestError naming it)."""
    space = space or DEFAULT_PULL_SPACE
    if space not in PULL_SPACES:
        raise InvalidRequestError(
            f"unknown pull space {space!r}; valid: {', '.join(PULL_SPACES)}",
            "accentuate.pull_space",
        )
    weight = DEFAULT_PULL[space] if pull is None else pull
    if not 0.0 <= weight <= MAX_PULL:  # NaN fails both
        raise InvalidRequestError(
            f"accentuate.pull={weight} is out of range: 0..{MAX_PULL:g} (0: the image is "
            "only the start)",
            "accentuate.pull",
        )
    decoded = decode_image(data, "accentuate.image", shrink_to=size)
    pixels = to_channels(square_view(decoded.pixels, size), channels)
    return StartImage(pixels, float(weight), space)
