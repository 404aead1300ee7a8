"""Scale-out and robustness of the grid: submitit's local executor, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import needs_data

from see.config import GridConfig
from see.grid import run_grid

TINY = """
models = ["smollm2-135m"]
methods = ["baseline", "svd"]
ratios = [5, 10]
[tasks]
wikitext = 1
"""


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
@needs_data
def test_submitit_local_executor_runs_the_cells(tmp_path):
    cfg = GridConfig(
        name="t",
        models=["smollm2-135m"],
        methods=["baseline", "svd"],
        ratios=[10],
        tasks={"wikitext": 1},
    )
    store = run_grid(cfg, tmp_path, run_id="s1", executor="submitit-local")
    rows = read_rows(store.path)
    assert {(r["method"], r["metric"]) for r in rows} >= {
        ("baseline", "word_perplexity"),
        ("svd", "word_perplexity"),
    }
    assert list((store.run_dir / "submitit").glob("*_result.pkl"))  # ran as submitit jobs


@pytest.mark.slow
@needs_data
def test_killed_run_keeps_its_rows_and_resumes_without_duplicates(tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY)
    command = [
        sys.executable,
        "-m",
        "see",
        "run",
        "--preset",
        str(preset),
        "--results-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        command,
        env=os.environ,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not list(tmp_path.glob("runs/*/rows.jsonl")) and time.time() < deadline:
        time.sleep(0.5)
    rows_file = next(tmp_path.glob("runs/*/rows.jsonl"))
    while not read_rows(rows_file) and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # killed mid-grid, after the first cell
    proc.wait()
    kept = read_rows(rows_file)
    assert 0 < len(kept) < 9  # 3 cells x 3 wikitext metrics when complete
    resume = [*command, "--resume", rows_file.parent.name]
    subprocess.run(resume, env=os.environ, check=True, capture_output=True)
    assert len(list(tmp_path.glob("runs/*"))) == 1  # resumed in place, no new folder
    rows = read_rows(rows_file)
    assert rows[: len(kept)] == kept
    keys = Counter((r["cell_key"], r["metric"]) for r in rows)
    assert len(keys) == 9 and max(keys.values()) == 1
