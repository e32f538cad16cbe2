"""Operators' own models: built here, saved as .keras/.h5, served through gRPC, or refused."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from filtercast_client import Accepted, Client, FilterImage, GridImage, InvalidRequest, Summary
from filtercast_client.local_server import free_port
from tests.support.processes import ServerProcess

SHORT = {"size": 32, "steps": 2, "filters": "0:4", "keep_dead_filters": True}


def build_models(folder: Path) -> dict[str, Path]:
    """Small models of every shape the registry must handle, saved to `folder`."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    paths = {}

    # A trained classifier with its own Rescaling and BatchNormalization.
    inputs = keras.Input((None, None, 3))
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = layers.BatchNormalization(name="norm")(x)
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    outputs = layers.Dense(2)(layers.GlobalAveragePooling2D()(x))
    small = keras.Model(inputs, outputs)
    small.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    small.fit(rng.random((32, 24, 24, 3)) * 255, rng.integers(0, 2, 32), epochs=2, verbose=0)
    paths["small"] = folder / "small.keras"
    small.save(paths["small"])
    paths["legacy"] = folder / "legacy.h5"
    small.save(paths["legacy"])

    gray = keras.Sequential(
        [
            keras.Input((None, None, 1)),
            layers.Conv2D(4, 3, name="g1"),
            layers.Conv2D(6, 3, name="g2"),
        ]
    )
    paths["gray"] = folder / "gray.keras"
    gray.save(paths["gray"])

    fixed = keras.Sequential(
        [
            keras.Input((48, 48, 3)),
            layers.Conv2D(5, 3, name="f1"),
            layers.Flatten(),
            layers.Dense(1),
        ]
    )
    paths["fixed"] = folder / "fixed.keras"
    fixed.save(paths["fixed"])

    backbone = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            layers.Conv2D(4, 3, activation="relu", name="c1"),
            layers.Conv2D(6, 3, strides=2, name="c2"),
        ],
        name="backbone",
    )
    inputs = keras.Input((None, None, 3))
    outputs = layers.Conv2D(3, 1, name="head")(backbone(layers.Rescaling(1 / 255)(inputs)))
    paths["nested"] = folder / "nested.keras"
    keras.Model(inputs, outputs).save(paths["nested"])

    inputs = keras.Input((None, None, 3))
    doubled = layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    paths["lam"] = folder / "lam.keras"
    keras.Model(inputs, layers.Conv2D(4, 3, name="lc")(doubled)).save(paths["lam"])

    # Names Keras accepts and TensorFlow's graph nodes do not.
    inner = keras.Sequential(
        [keras.Input((None, None, 3)), layers.Conv2D(2, 3, name="a b")], name="inner"
    )
    inputs = keras.Input((None, None, 3))
    odd = layers.Conv2D(4, 3, name="x>y\\z")(inner(inputs))
    paths["oddnames"] = folder / "oddnames.keras"
    keras.Model(inputs, odd).save(paths["oddnames"])

    a, b = keras.Input((None, None, 3)), keras.Input((None, None, 3))
    paths["multi"] = folder / "multi.keras"
    keras.Model([a, b], layers.Conv2D(2, 3)(layers.Add()([a, b]))).save(paths["multi"])
    return paths


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    # In a subprocess: building and training would leave Keras state in the test process.
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
        "from tests.e2e.test_own_models import build_models\n"
        "print(build_models(Path(sys.argv[2])))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def own(model_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    models_file = folder / "models.toml"
    models_file.write_text(
        f"""
[models.small]
path = "{model_files["small"]}"
preprocessing = "none"
default_layer = "conv2"
display_name = "Small classifier"
description = "trained for two epochs on noise"

[models.gray]
path = "{model_files["gray"]}"
mean = [127.5]
std = [127.5]

[models.fixed]
path = "{model_files["fixed"]}"

[models.nested]
path = "{model_files["nested"]}"

[models.legacy]
path = "{model_files["legacy"]}"

[models.lam]
path = "{model_files["lam"]}"
safe_mode = false
"""
    )
    server = ServerProcess(
        "--models-file", str(models_file), "--precision", "float32", log_dir=folder
    ).wait_serving()
    with Client(server.address) as client:
        yield server, client
    assert server.stop() == 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_are_listed_with_their_identity_and_shape(own, model_files) -> None:
    server, client = own
    models = {m.name: m for m in client.list_models()}
    assert set(models) == {"small", "gray", "fixed", "nested", "legacy", "lam"}
    small = models["small"]
    assert (small.kind, small.weights_source) == ("file", "small.keras")
    assert small.weights_sha256 == sha256(model_files["small"])
    assert (small.display_name, small.default_layer) == ("Small classifier", "conv2")
    assert [layer.name for layer in small.layers][:2] == ["rescale", "conv1"]
    conv2 = next(layer for layer in small.layers if layer.name == "conv2")
    assert (conv2.channels, conv2.output_stride, conv2.dtype) == (16, 2, "float32")
    assert (models["gray"].input_channels, models["gray"].preprocessing) == (
        1,
        "custom (mean [127.5], std [127.5])",
    )
    assert models["fixed"].input_size == 48 and models["small"].input_size is None
    assert {"backbone/c1", "backbone/c2"} <= {layer.name for layer in models["nested"].layers}
    assert models["small"].auto_precision == "float32"
    log = server.log_path.read_text()
    assert "safe_mode off: code stored in the file runs" in log
    assert "memory estimate:" in log
    for name in models:  # every resident model's weights are on the gauge
        assert server.metric("filtercast_model_memory_bytes", model=name) > 0


@pytest.mark.parametrize(
    ("model", "layer", "size", "channels"),
    [
        ("small", None, 32, 3),
        ("legacy", "conv1", 32, 3),
        ("gray", "g2", 32, 1),
        ("fixed", "f1", 48, 3),
        ("nested", "backbone/c2", 32, 3),
        ("lam", "lc", 32, 3),
    ],
)
def test_each_model_streams_pictures(own, model_files, model, layer, size, channels) -> None:
    _, client = own
    request = {**SHORT, "size": size}
    events = list(client.visualize(model=model, layer=layer or "", seed=1, **request))
    accepted, *filters, last = events
    assert isinstance(accepted, Accepted) and isinstance(last, Summary)
    assert accepted.params["layer"] == (layer or "conv2")
    assert accepted.weights_sha256 == sha256(model_files[model])
    pictures = [e for e in filters if isinstance(e, FilterImage)]
    assert sorted(p.index for p in pictures) == [0, 1, 2, 3]
    for picture in pictures:
        assert picture.image.shape == (size, size, channels)
        assert picture.pil.mode == ("L" if channels == 1 else "RGB")
    grids = [e for e in filters if isinstance(e, GridImage)]
    assert grids and grids[0].image.shape[-1] == channels
    assert any(p.image.std() > 0 for p in pictures), "every picture is flat"


def test_requests_a_model_cannot_serve_are_refused(own) -> None:
    _, client = own
    with pytest.raises(InvalidRequest) as fixed:
        list(client.visualize(model="fixed", size=32, steps=1, filters=[0]))
    assert fixed.value.field == "overrides.size" and "48 px inputs only" in fixed.value.message
    with pytest.raises(InvalidRequest) as precision:
        list(client.visualize(model="small", precision="bfloat16", size=32, steps=1, filters=[0]))
    assert precision.value.field == "precision" and "float32 only" in precision.value.message
    with pytest.raises(InvalidRequest) as layer:
        list(client.visualize(model="nested", layer="c2", size=32, steps=1, filters=[0]))
    assert "backbone/c2" in layer.value.message
    with pytest.raises(InvalidRequest) as nested:
        list(
            client.visualize(
                model="nested", layer="backbone/c1", preset="robust", size=32, filters=[0]
            )
        )
    assert nested.value.field == "overrides.objective"
    assert "an activation inside a nested model" in nested.value.message
    with pytest.raises(InvalidRequest) as padded:
        list(client.visualize(model="fixed", preset="robust", size=48, steps=1, filters=[0]))
    assert "use size=24 (with pad=12" in padded.value.message


@pytest.mark.parametrize(
    ("model", "layer", "overrides", "channels"),
    [
        ("gray", "g2", {"size": 32, "pad": 2}, 1),
        ("fixed", "f1", {"size": 40, "pad": 4}, 3),  # the network sees 48 px
        ("nested", "backbone/c2", {"size": 32, "pad": 2}, 3),
    ],
)
def test_the_robust_preset_serves_registered_models(own, model, layer, overrides, channels) -> None:
    _, client = own
    events = list(
        client.visualize(
            model=model, layer=layer, preset="robust", filters="0:2", steps=2, overrides=overrides
        )
    )
    pictures = [e for e in events if isinstance(e, FilterImage)]
    assert [p.dead for p in pictures] == [False, False]
    assert all(p.image.shape == (overrides["size"],) * 2 + (channels,) for p in pictures)


def start_failure(*args: str) -> subprocess.CompletedProcess:
    """Run a server that must refuse to start; its exit code and output."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "filtercast_server",
            "--port",
            str(free_port()),
            "--metrics-port",
            "0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("lam",), "Keras safe mode refused it"),
        (("multi",), "takes 2 inputs"),
        (("oddnames",), "cannot trace layers named 'inner/a b', 'x>y"),
    ],
)
def test_unservable_models_stop_the_start_with_their_reason(model_files, args, words) -> None:
    name = args[0]
    done = start_failure("--model", f"{name}={model_files[name]}")
    assert done.returncode == 1, done.stderr[-2000:]
    assert words in done.stderr and "cannot join thread" not in done.stderr
    if name == "lam":
        assert f"--allow-unsafe {name}" in done.stderr


def test_bad_model_settings_are_a_one_line_refusal(tmp_path) -> None:
    missing = start_failure("--model", f"ghost={tmp_path / 'ghost.keras'}")
    assert missing.returncode == 2 and "model file not found" in missing.stderr
    unknown = start_failure("--model", "vgg99")
    assert unknown.returncode == 2 and "built-ins: vgg16, vgg19, resnet50v2" in unknown.stderr
    bad = tmp_path / "models.toml"
    bad.write_text('[models.x]\npath = "x.keras"\ncolour = "red"\n')
    (tmp_path / "x.keras").write_bytes(b"")
    wrong = start_failure("--models-file", str(bad))
    assert wrong.returncode == 2 and "unknown key(s) colour" in wrong.stderr


def test_a_model_the_tests_never_saw_is_served_with_one_flag(tmp_path) -> None:
    """keras.applications.MobileNetV2, untrained, saved to .keras: its layers and a deep one."""
    path = tmp_path / "mobilenet.keras"
    code = (
        "import keras, sys\n"
        "keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,"
        " input_shape=(None, None, 3)).save(sys.argv[1])\n"
    )
    assert subprocess.run([sys.executable, "-c", code, str(path)], timeout=300).returncode == 0
    server = ServerProcess("--model", f"mobilenet={path}", log_dir=tmp_path).wait_serving()
    try:
        with Client(server.address) as client:
            (info,) = client.list_models()
            names = [layer.name for layer in info.layers]
            assert "block_13_expand_relu" in names and len(names) > 100
            events = list(
                client.visualize(
                    model="mobilenet",
                    layer="block_13_expand_relu",
                    size=64,
                    steps=3,
                    filters="0:2",
                    keep_dead_filters=True,
                )
            )
        assert isinstance(events[-1], Summary) and events[-1].kept + events[-1].dead == 2
    finally:
        assert server.stop() == 0
