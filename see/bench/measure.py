"""Timers and measurements for one loaded model: embedding op, prefill, decode, peak memory.

Times are medians over `repeats` runs after `warmup` runs, with the interquartile range; on
GPU each run is bracketed by torch.cuda.synchronize(). Peak memory: on GPU
torch.cuda.max_memory_allocated after reset_peak_memory_stats; on CPU (Linux) the process's
resident high-water mark VmHWM, reset through /proc/self/clear_refs before each measurement
(it counts the whole process: Python, torch and the model, not only tensors), after glibc has
handed freed heap back to the OS (malloc_trim): else a point starts from the resident memory
that the previous point freed but glibc kept, and a method that allocates more in prefill (a
quantizer's dequantized rows) reads as a larger decode peak. The worker also fixes glibc's
mmap threshold (`cpu_mmap_threshold`), so large freed blocks go back to the OS at once.
"""

from __future__ import annotations

import ctypes
import resource
import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_op(
    fn: Callable[[], object],
    *,
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Median and interquartile range (seconds) of `repeats` timed calls of `fn`."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"median_s": statistics.median(times), "iqr_s": q3 - q1, "repeats": repeats}


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def fix_mmap_threshold(threshold: int) -> None:
    """Blocks above `threshold` bytes are mmapped, so freeing them returns their memory at
    once (setting it also stops glibc raising it as large blocks are freed); 0: glibc's default."""
    if threshold == 0:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        raise RuntimeError(
            f"cpu_mmap_threshold={threshold}: this C library has no glibc mallopt that takes "
            "it; set cpu_mmap_threshold = 0 in [bench] to measure with its default allocator"
        )


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:  # Linux >= 4.0: writing 5 to clear_refs resets the resident high-water mark
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not musl)
        if trim:
            trim(0)
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak since the last reset_peak: CUDA allocated memory, or the process's VmHWM."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB


def current_memory_bytes(device: torch.device) -> int:
    """Memory held now: allocated CUDA memory, or the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@torch.inference_mode()
def measure_point(
    step: Callable[[], object], tokens: int, *, repeats: int, warmup: int, device: torch.device
) -> dict:
    """Time `step` (which processes `tokens` tokens); an OOM becomes a row, not a crash."""
    reset_peak(device)
    try:
        timing = time_op(step, repeats=repeats, warmup=warmup, device=device)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not is_oom(err):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"status": "oom", "note": str(err).splitlines()[0][:200]}
    return {
        **timing,
        "tokens_per_s": tokens / timing["median_s"],
        "peak_memory_bytes": peak_memory_bytes(device),
        "status": "ok",
    }


def embedding_step(model, ids: torch.Tensor) -> Callable[[], object]:
    emb = model.get_input_embeddings()
    return lambda: emb(ids)


def prefill_step(model, ids: torch.Tensor) -> Callable[[], object]:
    return lambda: model(input_ids=ids, logits_to_keep=1, use_cache=False)


def decode_step(model, ids: torch.Tensor, new_tokens: int) -> Callable[[], object]:
    pad = (
        model.config.eos_token_id
        if model.config.pad_token_id is None
        else model.config.pad_token_id
    )
    return lambda: model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=pad,
    )
