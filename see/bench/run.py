"""`nox -s benchmark-gpu` / `python -m see bench`: memory and throughput of every cell.

Each (model, method, ratio, head policy) is compressed in this process, saved with
`save_compressed`, and measured in a fresh subprocess that loads the saved model (an in-process
compression would leave the dense table in the peak). The worker prints one JSON row per
measurement; this process adds identity and provenance and appends them to the results store.
Ratios to the baseline measured in the same run are computed in `summary` and the report.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch

from see.config import BenchSettings, GridConfig, grid_defaults
from see.report.bench import compared_to_baseline
from see.results import cell_key, device_name, open_run, provenance


def resolved_device(bench: BenchSettings) -> str:
    if bench.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return bench.device


def worker(target: str, settings: dict, dtype: str) -> list[dict]:
    """Load `target` (a saved compressed folder or a model name) and measure it."""
    from see.bench.measure import (
        current_memory_bytes,
        decode_step,
        embedding_step,
        fix_mmap_threshold,
        measure_point,
        peak_memory_bytes,
        prefill_step,
        reset_peak,
    )
    from see.models import count_bytes, load_model
    from see.models.saving import is_compressed_folder, load_compressed

    bench = BenchSettings(**settings)
    device = torch.device(resolved_device(bench))
    if device.type == "cpu":
        fix_mmap_threshold(bench.cpu_mmap_threshold)
    reset_peak(device)
    torch_dtype = getattr(torch, dtype)
    if is_compressed_folder(target):
        model, _, compressed = load_compressed(target, torch_dtype)
        compressed.head_cache = bench.head_cache
        if bench.compile:
            compressed.forward = torch.compile(compressed.forward, dynamic=True)
    else:
        model, _ = load_model(target, torch_dtype)
    model.to(device).eval()
    info = {
        **count_bytes(model),
        "load_peak_memory_bytes": peak_memory_bytes(device),
        "loaded_memory_bytes": current_memory_bytes(device),
    }
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)

    def ids(batch: int, seq: int) -> torch.Tensor:
        return torch.randint(0, vocab, (batch, seq), generator=gen).to(device)

    common = {"repeats": bench.repeats, "warmup": bench.warmup}
    batch, seq = bench.embedding_shape
    points = [("embedding", batch, seq, batch * seq, embedding_step(model, ids(batch, seq)))]
    points += [("prefill", b, s, b * s, prefill_step(model, ids(b, s))) for b, s in bench.prefill]
    points += [
        (
            "decode",
            b,
            bench.decode_prompt,
            b * bench.new_tokens,
            decode_step(model, ids(b, bench.decode_prompt), bench.new_tokens),
        )
        for b in bench.decode_batches
    ]
    rows = []
    for name, b, s, tokens, step in points:
        measured = measure_point(step, tokens, device=device, **common)
        rows.append({"bench": name, "batch": b, "seq": s, "tokens": tokens, **info, **measured})
        print(
            f"[bench] {target} {name} {b}x{s}: {measured.get('tokens_per_s', 'OOM')}",
            file=sys.stderr,
        )
    return rows


def bench_identity(cfg: GridConfig, cell, bench: BenchSettings) -> dict:
    return {
        "model": cell.model,
        "method": cell.method,
        "method_options": cell.options_text(),
        "target_cr": cell.target_cr,
        "head_policy": cell.head_policy,
        "tie_source": cfg.tie_source,
        "heal_stage": "initial",
        "task": "bench",
        "dtype": cfg.dtype,
        "bench_settings": json.dumps(dataclasses.asdict(bench), sort_keys=True),
        "torch_threads": torch.get_num_threads(),
        "weights": "pretrained",
        "seed": cell.seed,
    }


def save_cell(cell, cfg: GridConfig, folder: Path) -> str:
    """Compress the cell's model (fits as configured) and save it; returns the worker target."""
    from see.grid import build_model
    from see.models.saving import save_compressed

    if cell.method == "baseline":
        return cell.model
    model, _, info, _ = build_model(cell, cfg)
    compressed = model.get_input_embeddings().compressed
    save_compressed(
        folder,
        compressed,
        base_model=cell.model,
        head_policy=cell.head_policy,
        tie_source=cfg.tie_source,
        target_cr=cell.target_cr,
    )
    return str(folder)


def run_bench(
    cfg: GridConfig,
    results_dir: str | Path = "results",
    run_id: str | None = None,
    force_config: bool = False,
):
    """Measure every pending cell of the grid into results/runs/<run_id> (resumable)."""
    from see.grid import expand
    from see.grid.cells import check_methods
    from see.methods.base import UnreachableCR
    from see.models.zoo import cache_dir

    check_methods(cfg)  # before the run folder exists
    bench = BenchSettings(**(cfg.bench or {}))
    store = open_run(
        results_dir, dataclasses.asdict(cfg), cfg.name, run_id, force_config, grid_defaults()
    )
    run_id = store.run_dir.name
    done, device = store.done_keys(), device_name()
    for cell in expand(cfg):
        ident = bench_identity(cfg, cell, bench)
        key = cell_key(ident)
        if key in done:
            continue
        try:
            target = save_cell(cell, cfg, cache_dir() / "bench" / key)
        except UnreachableCR as err:
            store.append(
                [
                    {
                        **ident,
                        "cell_key": key,
                        "status": "unreachable",
                        "note": str(err),
                        **provenance(run_id, device),
                    }
                ]
            )
            continue
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "see.bench.run",
                target,
                json.dumps(dataclasses.asdict(bench)),
                cfg.dtype,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"benchmark worker failed for {cell}:\n{out.stderr[-3000:]}")
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        store.append(
            [{**ident, **row, "cell_key": key, **provenance(run_id, device)} for row in rows]
        )
    print(summary(store.path))
    return store


def summary(path: Path) -> str:
    """Ratios to the baseline of the same run, with the issue's targets checked on GPU."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    table = compared_to_baseline(rows[rows.get("status", "ok") == "ok"])
    table = table[table.method != "baseline"]
    cols = [
        "model",
        "method",
        "target_cr",
        "head_policy",
        "bench",
        "batch",
        "seq",
        "tokens_per_s",
        "speed_ratio",
        "param_bytes_ratio",
        "memory_vs_param_saving",
    ]
    on_gpu = rows.device.str.startswith("cuda").any() if "device" in rows else False
    if not on_gpu:
        head = "CPU run: the GPU targets do not apply; ratios for reference"
        return f"[bench] {head}\n" + table[cols].to_string(index=False, float_format="%.3g")
    end_to_end = table.bench.isin(["prefill", "decode"])
    see_op = (table.bench == "embedding") & table.method.str.startswith("see")
    saving = table.memory_vs_param_saving  # NaN where no parameter bytes are saved (dense head)
    table["meets_target"] = (
        (table.speed_ratio >= 0.98).where(end_to_end, True)
        & ((saving - 1).abs() <= 0.05).where(end_to_end & saving.notna(), True)
        & (table.speed_ratio >= 1.0).where(see_op, True)
    )
    missed = table[~table.meets_target]
    head = (
        "targets (GPU): prefill/decode speed_ratio >= 0.98 and peak-memory saving within 5% "
        "of the parameter bytes saved; embedding op speed_ratio >= 1 (SEE vs dense lookup); "
        f"{len(missed)} of {len(table)} rows miss a target"
    )
    text = table[[*cols, "meets_target"]].to_string(index=False, float_format="%.3g")
    return f"[bench] {head}\n{text}"


if __name__ == "__main__":
    target, settings, dtype = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    for row in worker(target, settings, dtype):
        print(json.dumps(row))
