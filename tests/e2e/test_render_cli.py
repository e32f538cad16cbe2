"""`filtercast render` end to end, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.outputs import MANIFEST_KEYS

FILTERCAST = str(Path(sys.executable).parent / "filtercast")
SMALL = ["--weights", "random", "--size", "32", "--steps", "2", "--precision", "float32"]


def render(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FILTERCAST, "render", *args], capture_output=True, text=True, timeout=300
    )


def test_render_writes_pngs_grid_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = render(*SMALL, "--filters", "0:4,9", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and set(manifest) == MANIFEST_KEYS
    assert manifest["weights"]["source"] == "random" and manifest["device"]
    assert (manifest["model"], manifest["layer"], manifest["preset"]) == (
        "vgg16",
        "block5_conv1",
        "classic",
    )
    assert manifest["precision"] == "float32" and manifest["seed"] == 3
    assert manifest["params"]["size"] == 32 and manifest["params"]["steps"] == 2
    assert sorted(f["index"] for f in manifest["filters"]) == [0, 1, 2, 3, 9]
    for record in manifest["filters"]:
        assert set(record) >= {"index", "loss", "dead", "seconds", "file"}
        if not record["dead"]:
            assert np.asarray(Image.open(out / record["file"])).shape == (32, 32, 3)
    grid = manifest["grid"]
    n = grid["n"]
    assert Image.open(out / grid["file"]).size == (n * 32 + (n - 1) * 5,) * 2
    assert len(grid["order"]) == n * n
    assert "wrote" in result.stdout


def test_render_rejects_a_bad_layer_listing_valid_ones(tmp_path: Path) -> None:
    result = render(*SMALL, "--layer", "block9_conv1", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "layer 'block9_conv1' not found in vgg16; valid layers: block1_conv1" in result.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_render_the_robust_preset_with_set_overrides(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = render(
        *SMALL,
        "--preset",
        "robust",
        "--filters",
        "0:2",
        "--set",
        "pad=2",
        "--set",
        "scale_jitter=0.05",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    params = manifest["params"]
    assert (params["parameterization"], params["pad"], params["scale_jitter"]) == (
        "fourier",
        2,
        0.05,
    )
    assert [f["dead"] for f in manifest["filters"]] == [False, False]


def test_set_refuses_a_value_given_twice_and_a_malformed_pair(tmp_path: Path) -> None:
    twice = render(*SMALL, "--set", "steps=3", "--out", str(tmp_path))
    assert twice.returncode == 2 and "steps given twice" in twice.stderr
    malformed = render(*SMALL, "--set", "revive", "--out", str(tmp_path))
    assert malformed.returncode == 2 and "'revive' is not NAME=VALUE" in malformed.stderr


def test_render_objectives_of_a_model_file_with_diversity(tmp_path: Path) -> None:
    from tests.support.digits import train_classifier

    model = tmp_path / "digits.keras"
    train_classifier(model, seed=1, epochs=1)
    out = tmp_path / "out"
    result = render(
        *["--model", f"digits={model}", "--preset", "robust", "--size", "32", "--steps", "3"],
        *["--set", "pad=0", "--objective", "logits:3", "--objective", "layer(conv2)"],
        *["--diversity", "2", "--seed", "1", "--out", str(out)],
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    records = sorted(manifest["filters"], key=lambda f: f["index"])
    assert [(r["objective"], r["member"]) for r in records] == [
        ("logits:3", 0),
        ("logits:3", 1),
        ("layer(conv2)", 0),
        ("layer(conv2)", 1),
    ]
    assert all((out / r["file"]).is_file() for r in records)
    assert "picture    3" in result.stdout + result.stderr  # progress names pictures, not filters


def test_render_accentuates_a_start_image(tmp_path: Path) -> None:
    photo = tmp_path / "start.png"
    pixels = np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3).astype(np.uint8)
    Image.fromarray(pixels).save(photo)
    out = tmp_path / "out"
    result = render(*SMALL, "--filters", "0:2", "--image", str(photo), "--out", str(out))
    assert result.returncode == 0, result.stderr
    params = json.loads((out / "manifest.json").read_text())["params"]
    assert len(params["start_image_sha256"]) == 64
    assert (params["pull"], params["pull_space"]) == (100.0, "pixels")
    revived = render(*SMALL, "--image", str(photo), "--set", "revive=1", "--out", str(out))
    assert revived.returncode != 0 and "leave revive at 0" in revived.stderr


def test_render_with_a_dataset_writes_each_filters_best_images(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for n in range(3):
        pixels = rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / ("nested" if n else ".") / f"p{n}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "out"
    args = [*SMALL, "--layer", "block2_conv1", "--filters", "0:2", "--out", str(out)]
    result = render(*args, "--dataset", str(photos), "--dataset-top-k", "2")
    assert result.returncode == 0, result.stderr
    assert "ranked 3 dataset images (1 skipped)" in result.stdout
    for channel in (0, 1):
        crops = sorted((out / "examples" / f"channel_{channel:04d}").iterdir())
        assert len(crops) == 2 and crops[0].name.startswith("01_")
        strip = Image.open(out / "examples" / f"channel_{channel:04d}.png")
        assert strip.height == 96
    refused = render(*args, "--dataset", str(photos), "--objective", "block2_conv1:3")
    assert refused.returncode == 1 and "give no objective" in refused.stderr
