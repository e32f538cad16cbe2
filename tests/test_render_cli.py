"""`filtercast render` end to end, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_output_folder import MANIFEST_KEYS

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
