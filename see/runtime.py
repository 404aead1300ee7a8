"""How a run uses the machine's cores: torch threads and OpenMP's wait policy.

On a shared machine (another busy process, a cluster node) OpenMP threads that spin-wait at
every barrier turn one busy neighbour into a 10x slow-down: the thread whose core is taken
arrives late and the others burn their cores waiting for it. `PASSIVE` makes waiting threads
sleep instead. It must be in the environment before torch loads its OpenMP runtime, so the
CLI calls `configure()` before anything imports torch; subprocesses (submitit workers, the
contention benchmark) inherit it.
"""

from __future__ import annotations

import os

THREADS_ENV = "SEE_THREADS"
WAIT_POLICIES = ("PASSIVE", "ACTIVE")
DEFAULT_WAIT_POLICY = "PASSIVE"


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def parse_threads(value: str | int | None) -> int | None:
    """`--threads` / $SEE_THREADS: a positive int, or None (every available core)."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    threads = int(text) if isinstance(value, (int, str)) and text.isdigit() else 0
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {value!r}")
    return threads


def configure(threads: str | int | None = None) -> int:
    """Set the wait policy (unless the user chose one) and the thread count for this process
    and its children; returns the thread count. Call it before torch is first imported (the
    wait policy is read once, when torch loads OpenMP)."""
    threads = parse_threads(threads if threads is not None else os.environ.get(THREADS_ENV))
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    policy = os.environ.setdefault("OMP_WAIT_POLICY", DEFAULT_WAIT_POLICY)
    if policy.upper() not in WAIT_POLICIES:
        raise ValueError(f"OMP_WAIT_POLICY={policy!r}; allowed: {WAIT_POLICIES}")
    return apply_threads()


def apply_threads() -> int:
    """torch.set_num_threads from $SEE_THREADS (default: every available core); the count."""
    import torch

    threads = parse_threads(os.environ.get(THREADS_ENV)) or available_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def settings() -> dict:
    """Row columns (provenance: they change timings, never a quality number)."""
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        # the SIMD kernels torch dispatches to (AVX512, AVX2, ...): another CPU sums in
        # another order, so reproduce verdicts name it (see/report/verdict.py)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
