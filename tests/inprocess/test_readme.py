"""Every Python snippet in the README runs verbatim (against a stand-in server at its address)."""

import contextlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as photographs

from tests.support.standin import StandIn

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.splitlines()[0][:40])
def test_a_readme_snippet_runs(snippet: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "photo.jpg" in snippet:  # the README's own photograph: a real one
        Image.fromarray(photographs.chelsea()).save(tmp_path / "photo.jpg", quality=90)
    datasets = {}
    if "client.examples" in snippet:  # the README's dataset: a folder of real photographs
        (tmp_path / "photos").mkdir()
        for name in ("chelsea", "astronaut", "coffee"):
            Image.fromarray(getattr(photographs, name)()).save(tmp_path / "photos" / f"{name}.jpg")
        datasets = {"photos": tmp_path / "photos"}
    printed = io.StringIO()
    with StandIn(datasets=datasets) as server, contextlib.redirect_stdout(printed):
        # The only change: the README's address is the stand-in's.
        exec(compile(snippet.replace("127.0.0.1:50051", server.address), "README", "exec"), {})
    if "event.pil.save" in snippet:
        assert sorted(p.name for p in tmp_path.glob("filter_*.png"))
    if "client.analyze" in snippet:  # four ranked channels, one line each
        assert len(printed.getvalue().splitlines()) == 4
    if "client.examples" in snippet:  # the progress, then one line per channel of 0:16
        lines = printed.getvalue().splitlines()
        assert lines[0].startswith("IndexProgress(") and len(lines) - lines.count("") > 16
        assert [line.split()[0] for line in lines[-16:]] == [str(c) for c in range(16)]
    if "InvalidRequest" in snippet:  # it prints what its comments say it prints
        out = printed.getvalue()
        assert "overrides.size - size=4 is out of range" in out
        assert "('model', 'vgg99')" in out and "['vgg16'] 128" in out
