"""Which models a server serves, and how: built-in architectures and operators' own files.

    --model vgg16                    a built-in (keras.applications), weights from --weights
    --model mynet=/models/my.keras   a Keras 3 .keras file or a legacy full-model .h5
    --models-file models.toml        many models, each with its own options

A models file (TOML, read with the standard library)::

    [models.retina]
    path = "/models/retina.keras"
    preprocessing = "unit"          # none | caffe | tf | torch | unit
    # mean = [0.5] ; std = [0.25]   # or explicit per-channel values, in 0..255 units
    default_layer = "backbone/block3_conv2"
    default_preset = "classic"
    display_name = "Retina classifier"
    description = "fine-tuned on fundus images"
    safe_mode = true                # false runs the file's code (Lambda layers): trust it first

    [models.retina.datasets]        # image folders whose examples the server can show
    fundus = "/data/fundus"         # relative paths are from the models file's folder

`--dataset NAME=DIR` registers a folder for every model served.

Nothing here imports TensorFlow: settings are checked before anything loads.
"""

import importlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filtercast.contract import PRESETS

BUILTIN_MODELS = {
    "vgg16": "block5_conv1",
    "vgg19": "block5_conv1",
    "resnet50v2": "conv3_block4_out",
}
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")


class RegistryError(ValueError):
    """The model settings are wrong: the server does not start, and says why."""


@dataclass(frozen=True)
class Preprocessing:
    """How the optimised image (0..255 pixel units, RGB) is turned into the network's input.

    input = (x[..., ::-1] if bgr else x - mean) / std, per channel.
    """

    name: str
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bgr: bool = False

    @property
    def identity(self) -> bool:
        """Whether the image reaches the network unchanged."""
        return not self.bgr and set(self.mean) == {0.0} and set(self.std) == {1.0}

    def fits(self, channels: int) -> bool:
        """Whether its per-channel values fit an input of `channels` channels."""
        lengths = {len(self.mean), len(self.std)}
        return lengths <= {1, channels} and not (self.bgr and channels != 3)

    def describe(self) -> str:
        """One line for DescribeModel and logs."""
        if self.name != "custom":
            return self.name
        return f"custom (mean {list(self.mean)}, std {list(self.std)})"


PREPROCESSING = {
    # The seeds feed raw 0..255 RGB.
    "none": Preprocessing("none"),
    # keras.applications "caffe" (VGG16/19, ResNet50): BGR, ImageNet mean subtracted.
    "caffe": Preprocessing("caffe", mean=(103.939, 116.779, 123.68), bgr=True),
    # "tf" (ResNet50V2, MobileNet, Inception): [-1, 1].
    "tf": Preprocessing("tf", mean=(127.5,), std=(127.5,)),
    # "torch" (DenseNet, EfficientNet ports): [0, 1], ImageNet mean and std.
    "torch": Preprocessing(
        "torch",
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    ),
    # [0, 1]: models that rescale their input themselves expect this or "none".
    "unit": Preprocessing("unit", std=(255.0,)),
}


@dataclass(frozen=True)
class ModelConfig:
    """One model to serve."""

    name: str
    path: Path | None = None  # None: the built-in architecture called `name`
    preprocessing: Preprocessing = PREPROCESSING["none"]
    default_layer: str | None = None  # None: the built-in's, else the deepest (H, W, C) layer
    default_preset: str = "classic"
    display_name: str = ""
    description: str = ""
    safe_mode: bool = True
    custom_objects: dict[str, Any] = field(default_factory=dict, compare=False)
    datasets: tuple[tuple[str, Path], ...] = ()  # (name, folder) of its image folders

    @property
    def builtin(self) -> bool:
        """Whether it is one of keras.applications' architectures."""
        return self.path is None


def check_name(name: str) -> str:
    """A model name requests can use: lower-case letters, digits, _ - ."""
    if not name or not set(name) <= NAME_CHARACTERS:
        raise RegistryError(
            f"model name {name!r}: use lower-case letters, digits, '_', '-' and '.'"
        )
    return name


def check_dataset(name: str, directory: str, where: str) -> tuple[str, Path]:
    """(name, folder) when both can be used, else RegistryError saying what to change."""
    if not name or not set(name) <= NAME_CHARACTERS:
        raise RegistryError(f"{where}: dataset name {name!r}: use a-z, 0-9, '_', '-' and '.'")
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise RegistryError(f"{where}: dataset folder {path} is not a folder")
    return name, path


def parse_dataset_flag(value: str) -> tuple[str, Path]:
    """`--dataset NAME=DIR`: a dataset name requests can use and a folder that exists."""
    name, equals, directory = value.partition("=")
    if not equals or not directory.strip():
        raise RegistryError(f"--dataset {value!r}: use NAME=DIR")
    return check_dataset(name.strip().lower(), directory.strip(), f"--dataset {value}")


def datasets_of(spec: object, base: Path, where: str) -> tuple[tuple[str, Path], ...]:
    """A models-file entry's [models.NAME.datasets] table: NAME = "DIR" (relative to `base`)."""
    if not isinstance(spec, dict):
        raise RegistryError(f'{where}: datasets must be a table of NAME = "DIR"')
    found = []
    for name, directory in spec.items():
        if not isinstance(directory, str):
            raise RegistryError(f"{where}: dataset {name} must be a folder's path (a string)")
        found.append(check_dataset(name, str(base / Path(directory).expanduser()), where))
    return tuple(found)


def preprocessing_of(spec: dict[str, Any], where: str) -> Preprocessing:
    """The preprocessing a models-file entry asks for (a name, or mean and std)."""
    if "mean" in spec or "std" in spec:
        try:
            mean = tuple(float(v) for v in spec.get("mean", [0.0]))
            std = tuple(float(v) for v in spec.get("std", [1.0]))
        except (TypeError, ValueError) as error:
            raise RegistryError(f"{where}: mean and std must be lists of numbers") from error
        if not mean or not std or any(s <= 0 for s in std):
            raise RegistryError(f"{where}: mean and std need values, std above 0")
        return Preprocessing("custom", mean, std)
    name = spec.get("preprocessing", "none")
    if name not in PREPROCESSING:
        raise RegistryError(
            f"{where}: unknown preprocessing {name!r}; valid: {', '.join(PREPROCESSING)}, "
            "or mean = [...] and std = [...]"
        )
    return PREPROCESSING[name]


def parse_model_flag(value: str) -> ModelConfig:
    """`--model vgg16` (a built-in) or `--model NAME=PATH` (a .keras or .h5 file)."""
    name, equals, path = value.partition("=")
    name = check_name(name.strip().lower())
    if not equals:
        if name not in BUILTIN_MODELS:
            raise RegistryError(
                f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}, "
                "or register a file with --model NAME=PATH"
            )
        return ModelConfig(name)
    return ModelConfig(name, file_path(path.strip(), f"--model {value}"))


def file_path(text: str, where: str) -> Path:
    """A model file that exists and is a .keras or .h5 file."""
    path = Path(text).expanduser()
    if path.suffix not in (".keras", ".h5"):
        raise RegistryError(f"{where}: {path.name} is not a .keras or .h5 model file")
    if not path.is_file():
        raise RegistryError(f"{where}: model file not found: {path}")
    return path


# Every key a [models.NAME] table may hold, with the TOML type it must have.
KEY_TYPES: dict[str, type] = {
    "path": str,
    "preprocessing": str,
    "mean": list,
    "std": list,
    "default_layer": str,
    "default_preset": str,
    "display_name": str,
    "description": str,
    "safe_mode": bool,
    "datasets": dict,
}
KNOWN_KEYS = set(KEY_TYPES)


def parse_models_file(path: Path) -> list[ModelConfig]:
    """Every model of a TOML models file ([models.NAME] tables)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RegistryError(f"cannot read the models file {path}: {error}") from error
    tables = document.get("models")
    if not isinstance(tables, dict) or not tables:
        raise RegistryError(f"{path}: no [models.NAME] tables")
    configs = []
    for name, spec in tables.items():
        where = f"{path.name} [models.{name}]"
        if not isinstance(spec, dict):
            raise RegistryError(f"{where}: expected a table")
        unknown = set(spec) - KNOWN_KEYS
        if unknown:
            raise RegistryError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                + ", ".join(sorted(KNOWN_KEYS))
            )
        check_name(name)
        for key, value in spec.items():
            if not isinstance(value, KEY_TYPES[key]):
                kind = {
                    str: "a string",
                    list: "a list of numbers",
                    bool: "true or false",
                    dict: "a table",
                }
                raise RegistryError(f"{where}: {key} must be {kind[KEY_TYPES[key]]}")
        preset = spec.get("default_preset", "classic")
        if preset not in PRESETS:
            raise RegistryError(
                f"{where}: unknown default_preset {preset!r}; valid: {', '.join(PRESETS)}"
            )
        if "path" in spec:
            given = Path(spec["path"]).expanduser()
            model_path: Path | None = file_path(str(path.parent / given), where)
        elif name in BUILTIN_MODELS:
            model_path = None
        else:
            raise RegistryError(f"{where}: give a path, or name a built-in model")
        configs.append(
            ModelConfig(
                name,
                model_path,
                preprocessing_of(spec, where),
                spec.get("default_layer"),
                preset,
                spec.get("display_name", ""),
                spec.get("description", ""),
                bool(spec.get("safe_mode", True)),
                datasets=datasets_of(spec.get("datasets", {}), path.parent, where),
            )
        )
    return configs


def load_custom_objects(specs: Iterable[str]) -> dict[str, Any]:
    """`module:attr` -> {name: object}; a dict attribute is merged whole."""
    objects: dict[str, Any] = {}
    for spec in specs:
        module_name, colon, attribute = spec.partition(":")
        if not colon or not module_name or not attribute:
            raise RegistryError(f"--custom-objects {spec!r}: use module:attribute")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise RegistryError(f"--custom-objects {spec!r}: {error}") from error
        objects.update(found if isinstance(found, dict) else {attribute: found})
    return objects


def model_configs(
    flags: Iterable[str],
    models_file: str = "",
    unsafe: Iterable[str] = (),
    custom_objects: Iterable[str] = (),
    datasets: Iterable[str] = (),
) -> list[ModelConfig]:
    """Every model to serve, from --model values (comma lists allowed) and the models file.

    `unsafe` names the models that may load with safe_mode off (their code runs);
    `custom_objects` are importable classes/functions every file model may use;
    `datasets` (--dataset NAME=DIR) are image folders of every model.
    """
    configs = [parse_model_flag(item) for flag in flags for item in flag.split(",") if item.strip()]
    if models_file:
        configs.extend(parse_models_file(Path(models_file)))
    names = [c.name for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RegistryError(f"model(s) named twice: {', '.join(repeated)}")
    if not configs:
        raise RegistryError("no model to serve: give --model or --models-file")
    unsafe = set(unsafe)
    strangers = unsafe - set(names)
    if strangers:
        raise RegistryError(f"--allow-unsafe names no configured model: {', '.join(strangers)}")
    objects = load_custom_objects(custom_objects)
    shared = tuple(parse_dataset_flag(value) for value in datasets)
    for config in configs:
        names = [name for name, _ in (*config.datasets, *shared)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise RegistryError(f"model {config.name}: dataset(s) named twice: {', '.join(twice)}")
    return [
        ModelConfig(
            c.name,
            c.path,
            c.preprocessing,
            c.default_layer,
            c.default_preset,
            c.display_name,
            c.description,
            c.safe_mode and c.name not in unsafe,
            objects,
            (*c.datasets, *shared),
        )
        for c in configs
    ]
