"""examples/quickstart.ipynb executed on a real kernel (nbclient) against a real server.

Skipped, saying why, where nbclient or ipykernel are missing (the dev extra
installs them).
"""

import re
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def test_the_quickstart_runs_and_shows_its_pictures(tmp_path: Path, monkeypatch) -> None:
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (dev extra)")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (dev extra)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (dev extra)")
    server = ServerProcess("--precision", "float32", log_dir=tmp_path).wait_serving()
    try:
        monkeypatch.setenv("FILTERCAST_SERVER", server.address)  # the kernel inherits it
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()
    finally:
        server.stop()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    live = [o for o in outputs if "text/html" in o.get("data", {})]
    assert live, "the live grid is an HTML output"
    final = live[-1]["data"]["text/html"]
    kept = int(re.search(r"done: (\d+) kept", final).group(1))
    assert kept and final.count('<img src="data:image/png') == kept  # one picture per live tile
    assert any("image/png" in o.get("data", {}) for o in outputs), "the grid as a picture"
    written = sorted(p.name for p in (tmp_path / "quickstart-output").iterdir())
    assert len(written) == kept and written[0].startswith("filter_")
