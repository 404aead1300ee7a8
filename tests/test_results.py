import json
import os

import pandas as pd
import pytest

from see.results import ResultStore, cell_key, read_rows


def row(**kw):
    base = {"model": "m", "method": "svd", "target_cr": 10.0, "task": "wikitext", "limit": 2}
    return {**base, "metric": "word_perplexity", "value": 12.5, "cell_key": cell_key(base), **kw}


def test_rows_round_trip_through_pandas(tmp_path):
    store = ResultStore(tmp_path / "run")
    rows = [row(), row(metric="bits_per_byte", value=0.9, stderr=None)]
    store.append(rows)
    frame = pd.read_json(store.path, lines=True)
    assert frame.to_dict("records")[0]["value"] == 12.5
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    back = pd.read_csv(csv)
    assert list(back.metric) == ["word_perplexity", "bits_per_byte"]
    assert back.value.tolist() == [12.5, 0.9]


def test_cell_key_ignores_provenance_but_not_settings():
    cell = {"model": "m", "method": "svd", "target_cr": 10.0, "limit": 2}
    assert cell_key(cell) == cell_key({**cell, "timestamp": "now", "git_commit": "abc"})
    assert cell_key(cell) != cell_key({**cell, "limit": 3})


def test_torn_last_line_is_reported_then_cut_before_the_next_append(tmp_path):
    store = ResultStore(tmp_path / "run")
    store.append([row()])
    with open(store.path, "a") as f:
        f.write('{"model": "m", "trunc')  # a write cut off by a kill
    with pytest.warns(UserWarning, match="corrupt row"):
        assert len(store.rows()) == 1
    store.append([row(value=1.0)])
    assert [r["value"] for r in read_rows(store.path)] == [12.5, 1.0]
    assert json.loads(store.path.read_text().splitlines()[-1])["value"] == 1.0


def test_resume_needs_an_existing_run_with_the_same_config(tmp_path):
    from see.results import check_resumable, open_run

    store = open_run(tmp_path, {"models": ["a"], "ratios": [10]}, "tiny")
    with pytest.raises(ValueError, match="no run 'typo' to resume"):
        check_resumable(tmp_path, "typo")
    check_resumable(tmp_path, store.run_dir.name)
    assert open_run(tmp_path, {"models": ["a"], "ratios": [10]}, "tiny", store.run_dir.name)
    with pytest.raises(ValueError, match="another config \\(differs in \\['ratios'\\]\\)"):
        open_run(tmp_path, {"models": ["a"], "ratios": [20]}, "tiny", store.run_dir.name)
    again = open_run(tmp_path, {"models": ["a"]}, "tiny")  # a new run: never the same folder
    assert again.run_dir != store.run_dir


def test_a_setting_added_later_at_its_default_is_no_config_change(tmp_path):
    """A run started before a GridConfig field existed resumes where the field has its
    default; set to anything else it is a change like any other."""
    from see.config import grid_defaults
    from see.results import open_run

    store = open_run(tmp_path, {"models": ["a"]}, "tiny")
    run_id, defaults = store.run_dir.name, grid_defaults()
    assert defaults["skip_uninformative"] is False and defaults["seeds"] == [0]
    new = {"models": ["a"], "skip_uninformative": False, "seeds": [0]}
    assert open_run(tmp_path, new, "tiny", run_id, defaults=defaults)
    with pytest.raises(ValueError, match="differs in \\['skip_uninformative'\\]"):
        open_run(tmp_path, new | {"skip_uninformative": True}, "tiny", run_id, defaults=defaults)
    with pytest.raises(ValueError, match="differs in \\['seeds', 'skip_uninformative'\\]"):
        open_run(tmp_path, new, "tiny", run_id)  # without defaults: every new key is a change


def test_force_config_resumes_and_records_the_change(tmp_path):
    from see.results import open_run

    store = open_run(tmp_path, {"models": ["a"], "ratios": [10]}, "tiny")
    first = (store.run_dir / "config.json").read_text()
    run_id = store.run_dir.name
    open_run(tmp_path, {"models": ["a"], "ratios": [20]}, "tiny", run_id, force_config=True)
    assert (store.run_dir / "config.json").read_text() == first  # written once
    forced = [json.loads(line) for line in (store.run_dir / "config-forced.jsonl").open()]
    assert [f["changed"] for f in forced] == [["ratios"]]
    assert forced[0]["config"]["ratios"] == [20]
    # later resumes compare with the newest forced config, not the first one
    assert open_run(tmp_path, {"models": ["a"], "ratios": [20]}, "tiny", run_id)
    with pytest.raises(ValueError, match="differs in \\['ratios'\\]"):
        open_run(tmp_path, {"models": ["a"], "ratios": [10]}, "tiny", run_id)


def test_every_grid_setting_changes_the_key_or_is_declared():
    """A setting that changes a number must change the cell key (else a resumed run keeps
    stale rows); the rest is declared here with the reason."""
    import dataclasses

    from see.bench.run import BenchSettings, bench_identity
    from see.config import GridConfig
    from see.grid import expand, identity

    base = dict(
        name="t",
        models=["smollm2-135m"],
        methods=["see"],
        ratios=[10],
        tasks={"wikitext": 1},
        heal={"stage1_steps": 2, "stage2_steps": 0},
    )
    changed = {
        "tasks": {"wikitext": 2},
        "tie_source": "retied",
        "method_options": {"see": {"steps": 5}},
        "max_length": 1024,
        "batch_size": 2,
        "bootstrap_iters": 10,
        "num_fewshot": 1,
        "dtype": "bfloat16",
        "selection_tokens": 4096,
        "heal": {"stage1_steps": 3, "stage2_steps": 0},
    }
    not_keyed = {
        "name": "a label; the run folder and config.json keep it",
        "data_dir": "where the files are; their contents are sha256-checked",
        "models": "chooses cells; each cell's model is in its key",
        "methods": "chooses cells",
        "ratios": "chooses cells",
        "head_policies": "chooses cells",
        "seeds": "chooses cells",
        "bench": "bench rows: keyed by bench_settings (checked below)",
        "skip_uninformative": "chooses tasks: a skipped (cell, task) has a status row",
        "finetune": "keys the rows of its own stage (finetune_config; tests/test_finetune.py)",
    }
    assert {f.name for f in dataclasses.fields(GridConfig)} == set(changed) | set(not_keyed)

    def keys(cfg: GridConfig) -> set[str]:
        return {
            cell_key(identity(cfg, cell, "wikitext", stage))
            for cell in expand(cfg)
            for stage in ("initial", "stage1")
        }

    reference = keys(GridConfig(**base))
    for name, value in changed.items():
        assert keys(GridConfig(**{**base, name: value})) != reference, name
    cfg = GridConfig(**base)
    cell = expand(cfg)[0]
    one, two = BenchSettings(), BenchSettings(repeats=BenchSettings().repeats + 1)
    assert cell_key(bench_identity(cfg, cell, one)) != cell_key(bench_identity(cfg, cell, two))


def test_threads_and_wait_policy_are_provenance():
    cell = {"model": "m", "method": "svd", "target_cr": 10.0}
    assert cell_key(cell) == cell_key({**cell, "torch_threads": 1, "omp_wait_policy": "ACTIVE"})


def cell_rows(key_value: str, metrics=("word_perplexity", "byte_perplexity", "bits_per_byte")):
    return [row(model=key_value, metric=m, cell_key=key_value) for m in metrics]


def test_a_cell_with_a_row_missing_is_not_done_and_is_cut_on_resume(tmp_path):
    from see.results import open_run

    store = open_run(tmp_path, {"name": "t"}, "t", "r")
    store.append(cell_rows("a"))
    store.append(cell_rows("b"))
    lines = store.path.read_text().splitlines(keepends=True)
    store.path.write_text("".join(lines[:-1]))  # b's last row lost (a short write)
    with pytest.warns(UserWarning, match="cell b has 2 of its 3 rows"):
        assert store.done_keys() == {"a"}
    resumed = open_run(tmp_path, {"name": "t"}, "t", "r")
    assert resumed.path.read_text() == "".join(lines[:3])  # b's partial rows are gone
    assert resumed.done_keys() == {"a"}


def test_a_full_disk_stops_the_run_and_loses_no_written_row(tmp_path, monkeypatch):
    import errno

    import see.results
    from see.results import ResultsWriteError, open_run

    store = open_run(tmp_path, {"name": "t"}, "t", "r")
    store.append(cell_rows("a"))
    before = store.path.read_bytes()
    real_write = os.write

    def short_then_full(fd, data):  # what a nearly full disk does: a short write, then ENOSPC
        if len(data) > 40:
            return real_write(fd, data[:40])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(see.results.os, "write", short_then_full)
    with pytest.raises(ResultsWriteError, match=f"cannot write results to {store.run_dir}: No sp"):
        store.append(cell_rows("b"))
    monkeypatch.undo()
    assert store.path.read_bytes() == before  # cut back: a's rows whole, nothing of b
    assert open_run(tmp_path, {"name": "t"}, "t", "r").done_keys() == {"a"}


def test_a_second_process_on_a_held_run_is_refused(tmp_path):
    import subprocess
    import sys

    from see.results import open_run

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from see.results import open_run; "
            f"open_run({str(tmp_path)!r}, {{'name': 't'}}, 't', 'r'); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        while holder.stdout.readline().strip() != "held":  # the holder has the run
            pass
        in_use = f"run 'r' is in use by another process \\(pid {holder.pid}"
        with pytest.raises(ValueError, match=in_use):
            open_run(tmp_path, {"name": "t"}, "t", "r")
    finally:
        holder.kill()
        holder.wait()
    assert open_run(tmp_path, {"name": "t"}, "t", "r")  # free again once the holder is gone


def test_an_unwritable_results_folder_is_a_one_line_error_before_any_work(tmp_path, monkeypatch):
    import see.results
    from see.results import ResultsWriteError, open_run

    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(see.results.os, "open", read_only)
    with pytest.raises(ResultsWriteError, match="is not writable: Permission denied"):
        open_run(tmp_path, {"name": "t"}, "t", "r")
