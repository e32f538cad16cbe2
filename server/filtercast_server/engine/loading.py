"""The engine as a server starts it: device, models that fit, each default layer warm.

Once the device is known its batch limits are too, so the engine is built
whole, with its models, after they are loaded and checked. Any failure raises
(ModelLoadError with the reason, InvalidRequestError from a model's own
settings): a server never serves some of its models.
"""

import logging
from pathlib import Path

from filtercast_server.config import Settings
from filtercast_server.engine.ascent import AscentEngine
from filtercast_server.engine.devices import Device, select_device
from filtercast_server.engine.models import LoadedModel
from filtercast_server.errors import ModelLoadError
from filtercast_server.jobs import EngineObserver
from filtercast_server.model_registry import ModelConfig
from filtercast_server.params import Limits
from filtercast_server.planning import make_plan

log = logging.getLogger(__name__)


def start_engine(
    settings: Settings, configs: list[ModelConfig], observer: EngineObserver
) -> AscentEngine:
    """Pick the device, load every model on it, check they fit, trace each default step."""
    device = select_device(settings.device, settings.precision)
    rows, pixels = device.batch_limits()
    max_batch, max_pixels = settings.max_batch or rows, settings.max_batch_pixels or pixels
    log.info("batches of at most %d filters and %d pixels", max_batch, max_pixels)
    models = load_models(configs, settings.weights, settings.seed, device)
    for name, model in models.items():
        observer.on_model(name, model.parameter_bytes())
    check_memory(models, max_pixels, device.kind)
    engine = AscentEngine(models, max_batch, max_pixels, observer=observer)
    warm_up(engine, settings.limits())
    return engine


def load_models(
    configs: list[ModelConfig], weights: str, seed: int, device: Device
) -> dict[str, LoadedModel]:
    """Each configured model, resident on `device` (`weights` and `seed` are the built-ins')."""
    builtins = [c.name for c in configs if c.builtin]
    if len(builtins) > 1 and weights not in ("imagenet", "random"):
        raise ModelLoadError("a weights file fits one built-in model; serve one, or imagenet")
    models = {}
    for config in configs:
        source = config.path.name if config.path else weights
        log.info("loading %s (%s) on %s", config.name, source, device.description)
        models[config.name] = LoadedModel(config.name, weights, device, seed, config)
    return models


def warm_up(engine: AscentEngine, limits: Limits) -> None:
    """Trace one step of every model's default layer, so the first request does not."""
    for name, model in engine.models.items():
        size = model.input_size or max(32, model.smallest_input(model.default_layer))
        warm = make_plan(
            engine.models,
            overrides={"model": name, "layer": model.default_layer, "size": size, "steps": 1},
            filters="0:1",
            seed=0,
            limits=limits,
        )
        list(engine.run(warm))
        log.info(
            "%s ready: %d layers, input %s x %d channels, %s preprocessing, sha256 %s",
            name,
            len(model.layers),
            model.input_size or "any size",
            model.channels,
            model.preprocessing.describe(),
            model.weights_sha256[:16] or "-",
        )


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes the kernel says can be allocated without swapping (None when unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(models: dict[str, LoadedModel], batch_pixels: int, device: str) -> None:
    """Refuse to start when the models' estimated need exceeds the memory left on a CPU host.

    The estimate: every model's weights (resident), plus one batch of the
    largest model's activations (models take turns on the device). GPU memory
    is not checked here: TensorFlow reports no free figure before it allocates.
    """
    weights = sum(model.parameter_bytes() for model in models.values())
    activations = max(model.activation_bytes(batch_pixels) for model in models.values())
    log.info(
        "memory estimate: %.0f MB of weights, %.0f MB of activations per batch",
        weights / 1e6,
        activations / 1e6,
    )
    free = available_memory() if device == "cpu" else None
    if free is not None and activations > free:
        raise ModelLoadError(
            f"the models need about {(weights + activations) / 1e9:.1f} GB ({weights / 1e9:.1f} "
            f"GB of weights, loaded, plus {activations / 1e9:.1f} GB of activations for a batch "
            f"of {batch_pixels} pixels) and {free / 1e9:.1f} GB is left: serve fewer models or "
            "lower --max-batch-pixels"
        )
