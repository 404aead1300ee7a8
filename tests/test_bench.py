import json

import pytest
import torch

from see.bench.measure import measure_point, time_op
from see.config import GridConfig


def test_time_op_returns_median_and_iqr_over_the_requested_repeats():
    import time

    calls = []

    def op():
        calls.append(1)
        time.sleep(0.02 if len(calls) % 2 else 0.01)  # two durations: the IQR sees both

    timing = time_op(op, repeats=7, warmup=3)
    assert len(calls) == 10 and timing["repeats"] == 7
    assert 0.009 < timing["median_s"] < 0.2 and 0.005 < timing["iqr_s"] < 0.2
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_op(lambda: None, repeats=0)


def test_out_of_memory_at_a_grid_point_is_recorded_not_raised():
    def step():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    row = measure_point(step, 1024, repeats=3, warmup=1, device=torch.device("cpu"))
    assert row["status"] == "oom" and "out of memory" in row["note"]
    with pytest.raises(ValueError):  # other errors are not swallowed
        measure_point(lambda: int("x"), 1, repeats=1, warmup=0, device=torch.device("cpu"))


@pytest.mark.slow
def test_cpu_benchmark_runs_cells_in_subprocesses(tmp_path):
    from see.bench.run import run_bench

    cfg = GridConfig(
        name="b",
        models=["smollm2-135m"],
        methods=["baseline", "svd"],
        ratios=[10],
        head_policies=["shared"],
        tasks={"wikitext": 1},
        bench={
            "embedding_shape": [2, 16],
            "prefill": [[1, 16]],
            "decode_batches": [1],
            "decode_prompt": 4,
            "new_tokens": 2,
            "repeats": 2,
            "warmup": 0,
        },
    )
    store = run_bench(cfg, tmp_path, run_id="b1")
    rows = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert {(r["method"], r["bench"]) for r in rows} == {
        (m, b) for m in ("baseline", "svd") for b in ("embedding", "prefill", "decode")
    }
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows)
    assert all(0 < r["peak_memory_bytes"] and 0 < r["loaded_memory_bytes"] for r in rows)
    base = next(r for r in rows if r["method"] == "baseline")
    svd = next(r for r in rows if r["method"] == "svd")
    # the shared head drops the tied V x d table: embedding bytes shrink by about the CR
    assert base["embedding_bytes"] / svd["embedding_bytes"] == pytest.approx(10, rel=0.02)
    assert svd["head_bytes"] == 0
    assert base["model_param_bytes"] - svd["model_param_bytes"] == pytest.approx(
        base["embedding_bytes"] - svd["embedding_bytes"]
    )
    run_bench(cfg, tmp_path, run_id="b1")  # resumes: nothing new
    assert len(store.path.read_text().splitlines()) == len(rows)
    # the report has a memory/throughput section built from these rows alone
    from see.report import build_reports

    (tmp_path / "PUBLISHED").write_text("runs/b1\n")
    readme = build_reports(tmp_path, tmp_path / "reports").read_text()
    assert "## Memory and throughput" in readme and "speed_ratio" in readme


def test_summary_checks_the_gpu_targets_against_the_same_runs_baseline(tmp_path):
    from see.bench.run import summary

    def row(method, bench, tokens_per_s, param_bytes, peak):
        return {
            "run_id": "r",
            "model": "m",
            "method": method,
            "target_cr": 10,
            "head_policy": "shared",
            "bench": bench,
            "batch": 1,
            "seq": 8,
            "tokens_per_s": tokens_per_s,
            "model_param_bytes": param_bytes,
            "peak_memory_bytes": peak,
            "status": "ok",
            "device": "cuda:0 H100",
        }

    rows = [
        row("baseline", "prefill", 100.0, 1000, 1500),
        row("baseline", "decode", 10.0, 1000, 1600),
        row("svd", "prefill", 99.0, 800, 1300),  # 0.99x, saves 200 of 200 bytes: meets
        row("see", "decode", 5.0, 800, 1580),  # 0.5x, saves 20 of 200 bytes: misses
        row("baseline", "embedding", 1e6, 1000, 1000),
        row("svd", "embedding", 5e5, 800, 900),  # only SEE's op has a speed target: meets
        row("see", "embedding", 5e5, 800, 900),  # 0.5x of the lookup: misses
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    text = summary(path)
    assert "2 of 4 rows miss a target" in text
    verdicts = {
        tuple(line.split()[1:5:3]): line.split()[-1]
        for line in text.splitlines()
        if line.split()[:1] == ["m"]
    }
    assert verdicts == {
        ("svd", "prefill"): "True",
        ("see", "decode"): "False",
        ("svd", "embedding"): "True",
        ("see", "embedding"): "False",
    }


def test_report_keeps_each_devices_newest_bench_run_and_names_the_older_ones():
    import pandas as pd

    from see.report.bench import newest_run_per_device

    rows = pd.DataFrame(
        {
            "run_id": ["20261101-a", "20261201-b", "20261120-c", "20261201-b"],
            "device": ["cpu:AMD", "cpu:AMD", "cpu:Intel", "cpu:AMD"],
            "tokens_per_s": [1.0, 2.0, 3.0, 4.0],
        }
    )
    kept, older = newest_run_per_device(rows)
    assert list(kept.tokens_per_s) == [2.0, 3.0, 4.0]  # AMD's newest run (both rows), Intel's only
    assert older == ["20261101-a"]


def test_cpu_worker_fixes_the_malloc_mmap_threshold_so_freed_blocks_leave_the_heap():
    """After the fix, a freed 16 MB block goes back to the OS: resident memory falls by it
    (glibc's dynamic threshold keeps such a block in the heap once one was freed)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from see.bench.measure import current_memory_bytes, fix_mmap_threshold\n"
        "import torch\n"
        "fix_mmap_threshold(int(sys.argv[1]))\n"
        "cpu = torch.device('cpu')\n"
        "for _ in range(2):  # the first free raises glibc's dynamic threshold to 16 MB\n"
        "    block = torch.ones(4 * 2**20)\n"
        "    small = torch.ones(16)  # allocated above the block: the heap top cannot shrink\n"
        "    held = current_memory_bytes(cpu)\n"
        "    del block\n"
        "print(held - current_memory_bytes(cpu))\n"
    )
    returned = {
        threshold: int(
            subprocess.run(
                [sys.executable, "-c", probe, str(threshold)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for threshold in (0, 65536)
    }
    assert returned[65536] > 15 * 2**20  # the whole block went back
    assert returned[0] < 2**20  # glibc's default kept it (what the setting is for)


def test_cpu_worker_applies_its_mmap_threshold_setting_before_loading(monkeypatch, fresh_smollm):
    import dataclasses

    from see.bench import measure
    from see.bench.run import worker
    from see.config import BenchSettings

    events = []
    model, tok = fresh_smollm
    monkeypatch.setattr(measure, "fix_mmap_threshold", lambda value: events.append(value))
    monkeypatch.setattr("see.models.load_model", lambda *a: events.append("load") or (model, tok))
    settings = BenchSettings(
        embedding_shape=(1, 4),
        prefill=[(1, 4)],
        decode_batches=[1],
        decode_prompt=4,
        new_tokens=1,
        repeats=1,
        warmup=0,
        device="cpu",
        cpu_mmap_threshold=131072,
    )
    rows = worker("smollm2-135m", dataclasses.asdict(settings), "float32")
    assert events == [131072, "load"] and len(rows) == 3
