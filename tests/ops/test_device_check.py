"""The device check, end to end on the CPU path: the one command a lent GPU machine runs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench/device_check.py"


def run_check(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "check.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--weights", "random", "--size", "32",
         "--steps", "2", "--out", str(out), *args],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return json.loads(out.read_text())


def test_it_records_the_device_and_every_preset_in_both_precisions(tmp_path: Path) -> None:
    report = run_check(tmp_path, "--filters", "0:3")
    device = report["device"]
    assert device["kind"] == "cpu" and device["name"] == "/CPU:0"
    assert device["batch_limits"] == {"rows": 8, "pixels": 64 * 128 * 128}
    assert isinstance(device["cpu_flags"], list)
    assert "CPU" in report["placement"]["view_warp_device"]
    assert report["placement"]["hard_placement"].startswith("every op")
    runs = {(run["preset"], run["precision"]): run for run in report["runs"]}
    assert set(runs) == {(p, q) for p in ("classic", "robust") for q in ("bfloat16", "float32")}
    for run in runs.values():
        assert run["filters_asked"] == 3 and run["filters_done"] == 3
        assert run["seconds_per_filter"] > 0 and run["median_step_seconds"] > 0
        assert run["steps"] == 2 and run["size"] == 32
        assert run["peak_memory_bytes"] is None  # a CPU reports none
        assert not run["stopped_by_budget"]
    assert runs[("robust", "float32")]["view_size"] > 32  # robust pads its view


def test_the_budget_bounds_each_run_to_its_first_batch(tmp_path: Path) -> None:
    report = run_check(tmp_path, "--filters", "0:20", "--precisions", "float32", "--budget-s", "0")
    for run in report["runs"]:
        assert run["rows_per_batch"] == 8
        assert run["filters_done"] == 8 and run["stopped_by_budget"]
