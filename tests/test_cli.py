"""User errors: one line, exit status 2, no traceback, nothing written."""

import os
import subprocess
import sys

import pytest

GOOD = 'models = ["smollm2-135m"]\nmethods = ["baseline"]\nratios = [10]\n[tasks]\nwikitext = 1\n'


@pytest.mark.parametrize(
    "preset, extra, message",
    [
        ("no-such-preset", [], "no grid config"),
        (GOOD.replace("[10]", "[0.5]"), [], "compression ratio must be > 1, got 0.5"),
        (GOOD.replace("smollm2-135m", "nobody/no-model"), [], "unknown model 'nobody/no-model'"),
        (GOOD, ["--resume", "typo"], "no run 'typo' to resume"),
        (GOOD, ["--data-dir", "/no/such/folder"], "data directory '/no/such/folder'"),
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
