"""Model settings: --model flags, the models file and their refusals (no TensorFlow)."""

import re
from pathlib import Path

import pytest

from filtercast_server.model_registry import (
    PREPROCESSING,
    RegistryError,
    model_configs,
    parse_models_file,
)


def model_file(folder: Path, name: str = "net.keras") -> Path:
    path = folder / name
    path.write_bytes(b"stand-in")
    return path


def test_flags_name_builtins_and_files(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    configs = model_configs(["vgg16,vgg19", f"mine={path}"])
    assert [(c.name, c.builtin) for c in configs] == [
        ("vgg16", True),
        ("vgg19", True),
        ("mine", False),
    ]
    assert configs[2].path == path and configs[2].safe_mode


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["vgg99"], "unknown built-in model 'vgg99'"),
        (["Bad Name=x.keras"], "use lower-case letters"),
        (["a=missing.keras"], "model file not found"),
        (["a=model.onnx"], "is not a .keras or .h5 model file"),
        (["vgg16", "vgg16"], "named twice: vgg16"),
        ([], "no model to serve"),
    ],
)
def test_bad_flags_say_what_to_change(flags: list[str], words: str) -> None:
    with pytest.raises(RegistryError, match=words):
        model_configs(flags)


def test_unsafe_and_custom_objects_are_explicit(tmp_path: Path) -> None:
    path = model_file(tmp_path)
    (config,) = model_configs([f"mine={path}"], unsafe=["mine"], custom_objects=["math:sqrt"])
    assert not config.safe_mode and "sqrt" in config.custom_objects
    with pytest.raises(RegistryError, match="names no configured model: other"):
        model_configs([f"mine={path}"], unsafe=["other"])
    with pytest.raises(RegistryError, match="use module:attribute"):
        model_configs([f"mine={path}"], custom_objects=["math"])


def test_a_models_file(tmp_path: Path) -> None:
    model_file(tmp_path)
    document = tmp_path / "models.toml"
    document.write_text(
        '[models.retina]\npath = "net.keras"\npreprocessing = "caffe"\n'
        'default_layer = "b/c"\nsafe_mode = false\n\n'
        '[models.gray]\npath = "net.keras"\nmean = [0.5]\nstd = [0.25]\n\n'
        "[models.vgg16]\n"
    )
    retina, gray, vgg = parse_models_file(document)
    assert retina.preprocessing == PREPROCESSING["caffe"] and retina.default_layer == "b/c"
    assert not retina.safe_mode and retina.path == tmp_path / "net.keras"
    assert (gray.preprocessing.mean, gray.preprocessing.std) == ((0.5,), (0.25,))
    assert vgg.builtin


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[models.a]\npath = "net.keras"\ncolour = 1\n', "unknown key(s) colour"),
        ('[models.a]\npath = "net.keras"\npreprocessing = "magic"\n', "unknown preprocessing"),
        ('[models.a]\npath = "net.keras"\nstd = [0]\n', "std above 0"),
        ('[models.a]\npath = "net.keras"\ndefault_preset = "x"\n', "unknown default_preset 'x'"),
        ("[models.a]\n", "give a path, or name a built-in"),
        (
            '[models.a]\npath = "net.keras"\nsafe_mode = "false"\n',
            "safe_mode must be true or false",
        ),
        ('[models.a]\npath = "net.keras"\nmean = "128"\n', "mean must be a list of numbers"),
        ('[models.a]\npath = "net.keras"\ndisplay_name = 2024\n', "display_name must be a string"),
        ("title = 1\n", "no [models.NAME] tables"),
        ("[models\n", "cannot read the models file"),
    ],
)
def test_bad_models_files_say_what_to_change(tmp_path: Path, text: str, words: str) -> None:
    model_file(tmp_path)
    document = tmp_path / "models.toml"
    document.write_text(text)
    with pytest.raises(RegistryError, match=re.escape(words)):
        parse_models_file(document)


def test_preprocessing_must_fit_the_input() -> None:
    assert PREPROCESSING["tf"].fits(1) and PREPROCESSING["tf"].fits(3)
    assert not PREPROCESSING["caffe"].fits(1) and PREPROCESSING["caffe"].fits(3)
    assert PREPROCESSING["none"].identity and not PREPROCESSING["unit"].identity
