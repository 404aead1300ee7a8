"""Shared-machine benchmark (`python -m see bench-contention`): a preset's first cell (default:
smoke's) alone and beside one busy process (`python -c "while True: pass"`), per thread
setting; each measurement is a fresh subprocess, so OpenMP reads its wait policy anew.

The settings: `spin` is the harness before `--threads` (every core, OpenMP's default wait:
threads spin before sleeping); `passive` is the default now (every core, waiting threads
sleep); `1-thread` leaves the other cores alone. `slowdown` = beside a busy process / alone,
same setting: the target is at most 2.5x.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from see.results import ResultStore, cell_key, device_name, provenance
from see.runtime import available_cores

SETTINGS = {
    "spin": {"SEE_THREADS": None, "OMP_WAIT_POLICY": None},
    "passive": {"SEE_THREADS": None, "OMP_WAIT_POLICY": "PASSIVE"},
    "1-thread": {"SEE_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}
BUSY = [sys.executable, "-c", "while True: pass"]
# the cell runs in a child that skips runtime.configure(), so `spin` keeps OpenMP's default
CELL = """
import dataclasses, os, sys, time
import torch
torch.set_num_threads(int(os.environ.get("SEE_THREADS") or len(os.sched_getaffinity(0))))
from see.config import load_grid
from see.grid import run_grid
cfg = load_grid(sys.argv[1])
cfg = dataclasses.replace(cfg, models=cfg.models[:1], methods=cfg.methods[:1],
    ratios=cfg.ratios[:1], head_policies=cfg.head_policies[:1], seeds=cfg.seeds[:1],
    method_options={k: v for k, v in cfg.method_options.items() if k == cfg.methods[0]})
start = time.perf_counter()
run_grid(cfg, sys.argv[2])
print("CELL_SECONDS", time.perf_counter() - start, torch.get_num_threads())
"""


def check_settings(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        raise ValueError(f"unknown contention setting(s) {unknown}; allowed: {list(SETTINGS)}")
    return names


def time_cell(preset: str, setting: str, busy: bool) -> tuple[float, int]:
    """Seconds of the preset's first cell (model load included) and torch's thread count."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS[setting]}
    env.update({k: v for k, v in SETTINGS[setting].items() if v is not None})
    hog = subprocess.Popen(BUSY) if busy else None
    try:
        with tempfile.TemporaryDirectory() as scratch:
            done = subprocess.run(
                [sys.executable, "-c", CELL, preset, scratch],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    lines = [line for line in done.stdout.splitlines() if line.startswith("CELL_SECONDS")]
    if done.returncode or not lines:
        raise RuntimeError(
            f"contention cell failed ({setting}, busy={busy}):\n{done.stderr[-2000:]}"
        )
    _, seconds, threads = lines[-1].split()
    return float(seconds), int(threads)


def run_contention(
    results_dir: str | Path = "results", preset: str = "smoke", settings: list[str] | None = None
) -> Path:
    from tqdm import tqdm

    from see.results import open_run

    settings = check_settings(settings or list(SETTINGS))
    store: ResultStore = open_run(
        results_dir, {"name": "contention", "preset": preset, "settings": settings}, "contention"
    )
    device = device_name()
    for setting in tqdm(settings, desc="contention", unit="setting"):
        alone, threads = time_cell(preset, setting, busy=False)
        beside, _ = time_cell(preset, setting, busy=True)
        policy = SETTINGS[setting]["OMP_WAIT_POLICY"] or "unset (libgomp default)"
        ident = {"task": "contention", "preset": preset, "setting": setting}
        row = {
            **ident,
            "cell_key": cell_key(ident),
            "cores": available_cores(),
            "alone_s": alone,
            "beside_busy_s": beside,
            "slowdown": beside / alone,
            **provenance(store.run_dir.name, device),
            "torch_threads": threads,
            "omp_wait_policy": policy,
        }
        store.append([row])
        tqdm.write(
            f"[contention] {setting}: {threads} threads, {policy}: alone {alone:.1f} s, "
            f"beside a busy process {beside:.1f} s ({beside / alone:.2f}x)"
        )
    return store.run_dir
