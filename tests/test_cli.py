"""User errors: one line, exit status 2, no traceback, nothing written."""

import json
import os
import subprocess
import sys

import pytest
from conftest import needs_data

GOOD = 'models = ["smollm2-135m"]\nmethods = ["baseline"]\nratios = [10]\n[tasks]\nwikitext = 1\n'


@pytest.mark.parametrize(
    "preset, extra, message",
    [
        ("no-such-preset", [], "no grid config"),
        (
            GOOD.replace("[10]", "[0.5]"),
            [],
            "compression ratio must be a finite number > 1, got 0.5",
        ),
        (GOOD.replace("smollm2-135m", "nobody/no-model"), [], "unknown model 'nobody/no-model'"),
        (GOOD, ["--resume", "typo"], "no run 'typo' to resume"),
        (GOOD, ["--data-dir", "/no/such/folder"], "data directory '/no/such/folder'"),
        (GOOD, ["--threads", "0"], "threads must be a positive integer, got '0'"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, preset, extra, message):
    if "\n" in preset:
        (tmp_path / "grid.toml").write_text(preset)
        preset = str(tmp_path / "grid.toml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "see",
        "run",
        "--preset",
        preset,
        "--results-dir",
        str(tmp_path / "results"),
        *extra,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]  # lm-eval's task-registry warnings may precede
    assert last.startswith("see: error:") and message in last
    assert not (tmp_path / "results" / "runs").exists()  # nothing written before failing


@pytest.mark.slow
@needs_data
def test_reproduce_compares_with_the_published_run_and_keeps_the_listing(tmp_path):
    """--publish lists the run; a plain reproduce goes to results/local, leaves PUBLISHED and
    the reports alone, and prints a REPRODUCED verdict against the published run."""
    (tmp_path / "tiny.toml").write_text(GOOD)
    results = tmp_path / "results"

    def reproduce(*extra: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-m",
            "see",
            "reproduce",
            "--preset",
            str(tmp_path / "tiny.toml"),
        ]
        command += ["--results-dir", str(results), "--reports-dir", str(tmp_path / "reports")]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEE_THREADS": "1"}
        done = subprocess.run(  # in tmp_path: --publish must not touch this checkout
            [*command, *extra], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
        )
        return done

    first = reproduce("--publish")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no published run of preset 'tiny'" in first.stdout
    # the console: the grid's bar and a line per cell, no lm-eval request bars (issue 39)
    assert "Running loglikelihood" not in first.stdout + first.stderr
    assert "[see] smollm2-135m" in first.stdout and "grid tiny" in first.stderr
    listing = (results / "PUBLISHED").read_text()
    reports = (tmp_path / "reports" / "README.md").read_text()
    second = reproduce()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "REPRODUCED" in second.stdout and "NOT" not in second.stdout
    assert (results / "PUBLISHED").read_text() == listing
    assert (tmp_path / "reports" / "README.md").read_text() == reports
    (local,) = (results / "local" / "runs").iterdir()
    # a published value that this machine does not reproduce: exit 1, unless allowed
    (published,) = (results / "runs").iterdir()
    rows = (published / "rows.jsonl").read_text().splitlines()
    first_row = json.loads(rows[0])
    rows[0] = json.dumps({**first_row, "value": first_row["value"] * 1.01})
    (published / "rows.jsonl").write_text("\n".join(rows) + "\n")
    mismatch = reproduce()
    assert mismatch.returncode == 1 and "NOT reproduced" in mismatch.stdout
    assert reproduce("--allow-mismatch").returncode == 0
    assert (local / "verdict.md").is_file() and (local / "report" / "README.md").is_file()
    rows = [json.loads(line) for line in (local / "rows.jsonl").read_text().splitlines()]
    assert {r["torch_threads"] for r in rows} == {1}
    assert {r["omp_wait_policy"] for r in rows} == {"PASSIVE"}
