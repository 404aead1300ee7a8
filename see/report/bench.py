"""Bench rows as ratios to the same run's baseline (pandas only: the report never imports torch)."""

from __future__ import annotations


def compared_to_baseline(rows):
    """Bench rows (status ok) joined with the same run's baseline at the same grid point:
    speed_ratio, param_bytes_ratio, peak_memory_ratio and memory_vs_param_saving (peak-memory
    saving divided by the parameter bytes saved; 1.0 = the whole saving shows at run time)."""
    keys = ["run_id", "model", "bench", "batch", "seq"]
    base_cols = ["tokens_per_s", "model_param_bytes", "peak_memory_bytes"]
    base = rows[rows.method == "baseline"][[*keys, *base_cols]]
    merged = rows.merge(base, on=keys, suffixes=("", "_base"), how="left")
    merged["speed_ratio"] = merged.tokens_per_s / merged.tokens_per_s_base
    merged["param_bytes_ratio"] = merged.model_param_bytes / merged.model_param_bytes_base
    merged["peak_memory_ratio"] = merged.peak_memory_bytes / merged.peak_memory_bytes_base
    param_saving = merged.model_param_bytes_base - merged.model_param_bytes
    memory_saving = merged.peak_memory_bytes_base - merged.peak_memory_bytes
    merged["memory_vs_param_saving"] = (memory_saving / param_saving).where(param_saving > 0)
    return merged


def newest_run_per_device(rows):
    """The rows of each device's newest run (run ids start with their timestamp) and the ids
    of the older runs left out, so a table never mixes two runs' measurements of one device."""
    newest = rows.groupby("device").run_id.transform("max")
    kept = rows[rows.run_id == newest]
    older = sorted(set(rows.run_id) - set(kept.run_id))
    return kept, older
