"""The output folder a run writes: only its own files, never a temporary left behind."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filtercast import manifest
from tests.support.outputs import FIELDS


def test_a_run_clears_what_an_earlier_run_left_and_nothing_else(tmp_path: Path) -> None:
    for stale in ("filter_0007.png", "grid.png", "manifest.json", "filter_0001.png.99.tmp"):
        (tmp_path / stale).write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "filter_notes.png").write_bytes(b"not ours either")
    folder = manifest.OutputFolder(tmp_path, FIELDS)
    folder.add_filter(0, 1.0, False, 2, 0.1, np.zeros((8, 8, 3), np.uint8))
    folder.finish(complete=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["filter_0000.png", "filter_notes.png", "manifest.json", "notes.txt"]
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert [f["file"] for f in written["filters"]] == ["filter_0000.png"]
    assert written["weights"] == {"source": "random", "sha256": ""} and written["device"] == "cpu"


def test_an_interrupted_write_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    folder = manifest.OutputFolder(tmp_path, FIELDS)
    real_save = Image.Image.save

    def save_then_interrupt(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)  # the temporary is complete on disk...
        raise KeyboardInterrupt  # ...when Ctrl-C arrives, before the rename

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        folder.set_grid(np.zeros((8, 8, 3), np.uint8), 1, 0, [0])
    monkeypatch.undo()
    folder.finish(complete=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
