import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from see.report import build_reports
from see.report.build import mark_informative, size_points


def fixture_rows():
    rows = []
    cells = [("baseline", 1.0, 30.0), ("svd", 5.0, 300.0), ("svd", 10.0, 900.0)]
    for model, method, cr, value in [
        (m, *c) for m in ("smollm2-135m", "gemma3-270m") for c in cells
    ]:
        for metric, scale in [("word_perplexity", 1.0), ("bits_per_byte", 0.03)]:
            rows.append(
                {
                    "model": model,
                    "task": "wikitext",
                    "metric": metric,
                    "metric_filter": "none",
                    "method": method,
                    "method_options": "",
                    "head_policy": "dense",
                    "target_cr": cr,
                    "reached_cr": cr,
                    "value": value * scale,
                    "stderr": None,
                    "n": 2,
                    "limit": 2,
                    "max_length": 2048,
                    "dtype": "float32",
                    "embedding_bytes": int(1e6 / cr),
                    "head_bytes": 0,
                    "load_s": 1.0,
                    "model_param_bytes": int(4e6 if model == "smollm2-135m" else 9e6),
                    "run_id": "r1",
                    "device": "cpu:test",
                    "git_commit": "abc",
                    "timestamp": "2026-01-01T00:00:00",
                    "cell_key": f"{model}{method}{cr}",
                }
            )
    return rows


def publish_runs(results: Path, runs: dict[str, list[dict]]) -> None:
    """Each run's rows as results/runs/<run>/rows.jsonl, every run listed in PUBLISHED."""
    for run, rows in runs.items():
        (results / "runs" / run).mkdir(parents=True, exist_ok=True)
        (results / "runs" / run / "rows.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    (results / "PUBLISHED").write_text("".join(f"runs/{run}\n" for run in runs))


def test_reports_regenerate_identically_from_results(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    publish_runs(results, {"r1": fixture_rows()})
    readme = build_reports(results, reports)
    first = readme.read_text()
    page = (reports / "runs" / "r1.md").read_text()  # each run's page in the archive
    assert (reports / "runs" / "r1_wikitext_word_perplexity.png").stat().st_size > 1000
    assert (reports / "wikitext_word_perplexity_vs_size.png").stat().st_size > 1000
    assert "| smollm2-135m | wikitext | word_perplexity | svd" in page.replace("  ", " ")
    assert "0.1" in page  # recovery of svd at CR 5 = 30 / 300
    assert "[r1](r1.md)" in (reports / "runs" / "README.md").read_text()
    build_reports(results, reports)
    assert readme.read_text() == first


def test_a_failed_build_keeps_the_last_reports_and_a_good_one_drops_stale_pages(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    publish_runs(results, {"r1": fixture_rows()})
    build_reports(results, reports)
    stale = reports / "runs" / "gone.md"
    stale.write_text("a run no longer published")
    (results / "PUBLISHED").write_text("runs/missing\n")
    with pytest.raises(ValueError, match="no rows in the runs"):
        build_reports(results, reports)
    assert (reports / "runs" / "r1.md").exists() and stale.exists()
    (results / "PUBLISHED").write_text("runs/r1\n")
    build_reports(results, reports)
    assert (reports / "runs" / "r1.md").exists() and not stale.exists()


def test_a_superseded_run_never_feeds_current_findings_but_keeps_its_archive_page(tmp_path):
    """Two runs of one preset on the same model, the older with an earlier default: the
    current findings read the newer run only; the archive lists both (issue 39)."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    old, new = "20260101-000000-frontier", "20260102-000000-frontier"
    runs = {}
    for run, svd_value in [(old, 777.0), (new, 300.0)]:
        runs[run] = [
            r
            | {"run_id": run, "value": svd_value if r["method"] == "svd" else r["value"]}
            | {"byte_cr": r["target_cr"]}
            for r in fixture_rows()
            if r["model"] == "smollm2-135m" and r["metric"] == "word_perplexity"
        ]
    publish_runs(results, runs)
    current = build_reports(results, reports).read_text()
    assert "777" not in current and "300" in current and old not in current
    index = (reports / "runs" / "README.md").read_text()
    assert f"superseded by {new}" in index and f"[{old}]({old}.md)" in index
    assert "777" in (reports / "runs" / f"{old}.md").read_text()


def test_claims_use_only_variants_that_keep_the_default_decisions():
    from see.report.claims import default_decisions

    assert default_decisions("") and default_decisions("steps=800,batch_tokens=512")
    assert not default_decisions("n=2,steps=800") and not default_decisions("separate=False")


def test_perplexity_matrix_keeps_one_line_per_seed():
    import pandas as pd

    from see.report.build import ppl_pivot

    rows = pd.DataFrame(
        [
            {
                "model": "m",
                "method": "see",
                "method_options": "",
                "head_policy": "dense",
                "heal_stage": "initial",
                "seed": seed,
                "task": "wikitext",
                "metric": "word_perplexity",
                "target_cr": cr,
                "value": value,
            }
            for seed, cr, value in [(0, 10, 111.0), (1, 10, 222.0), (0, 40, 333.0), (1, 40, 444.0)]
        ]
    )
    table = ppl_pivot(rows)
    assert all(str(v) in table for v in (111, 222, 333, 444))


def test_see_targets_compare_default_see_with_plain_svd_and_name_the_best_method():
    import pandas as pd

    from see.report.targets import see_targets

    def row(method, options, cr, value):
        return {
            "run_id": "20260101-000000-see-strength",
            "model": "m",
            "task": "wikitext",
            "metric": "word_perplexity",
            "heal_stage": "initial",
            "method": method,
            "method_options": options,
            "target_cr": cr,
            "value": value,
        }

    rows = pd.DataFrame(
        [
            row("baseline", "", 1.0, 30.0),
            row("svd", "", 10.0, 80_000.0),
            row("see", "", 10.0, 1_000.0),  # 80x: met
            row("svd", "", 20.0, 90_000.0),
            row("see", "", 20.0, 10_000.0),  # 9x: missed
            row("svd", "finetune=True", 20.0, 5_000.0),  # the best at CR 20 is not SEE
            row("svd", "", 40.0, 99_000.0),
            row("see_morph", "", 40.0, 900.0),
            row("see", "", 40.0, 2_000.0),
        ]
    )
    table = see_targets(rows).set_index("target_cr")
    assert table.loc[10.0, "ratio_met"] and not table.loc[20.0, "ratio_met"]
    assert table.loc[20.0, "best_method"] == "svd" and not table.loc[20.0, "see_best_met"]
    assert table.loc[40.0, "best_method"] == "see_morph" and table.loc[40.0, "see_best_met"]
    assert table.loc[10.0, "svd_over_see"] == 80.0


def test_report_imports_without_torch():
    """`nox -s figures` installs pandas/matplotlib/tabulate only: no torch on the import path."""
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None; import see.report, see.report.targets"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def byte_cell_row(run_id, model, method, target, byte_cr, task, value) -> dict:
    """An initial-quality row of a byte-ratio comparison (frontier, sizes): WikiText word
    perplexity, or accuracy for a GLUE task."""
    return {
        "run_id": run_id,
        "model": model,
        "method": method,
        "method_options": "",
        "target_cr": target,
        "byte_cr": byte_cr,
        "heal_stage": "initial",
        "task": task,
        "metric": "word_perplexity" if task == "wikitext" else "acc",
        "value": value,
    }


def test_frontier_names_the_best_method_per_byte_budget_and_its_pareto_points():
    import pandas as pd

    from see.report.frontier import budget_table, frontier_cells, pareto_front, runner_up_cell

    cells = [  # method, target, byte_cr, word ppl, sst2
        ("baseline", 1.0, 1.0, 30.0, 0.9),
        ("int8", 3.76, 3.76, 30.0, 0.9),
        ("int4", 7.1, 7.1, 33.0, 0.85),
        ("pq", 10.0, 11.3, 60.0, 0.8),
        ("svd", 10.0, 10.2, 9000.0, 0.5),
        ("pq", 40.0, 47.5, 900.0, 0.6),
        ("svd", 40.0, 40.7, 800.0, 0.55),  # fewer bytes than nothing better: on the front
    ]
    rows = pd.DataFrame(
        [
            byte_cell_row("20260101-000000-frontier", "m", method, target, byte_cr, task, value)
            for method, target, byte_cr, ppl, acc in cells
            for task, value in [("wikitext", ppl), ("sst2", acc)]
        ]
    )
    table = budget_table(frontier_cells(rows)).set_index("byte_budget")
    assert list(table.index) == [10.0, 40.0]  # the fitted methods' targets
    assert table.loc[10.0, "best_method"] == "pq" and table.loc[10.0, "sst2"] == 0.8
    assert table.loc[10.0, "ppl_over_baseline"] == 2.0
    assert table.loc[40.0, "best_method"] == "svd"  # pq at 40 lost on perplexity
    assert table.loc[40.0, "runner_up"] == "pq (900)"
    meets = pd.DataFrame(  # pq at two ratios meet a budget: the runner-up is another method
        {"method": ["pq", "pq", "svd"], "method_options": ["", "", ""], "word_ppl": [60, 90, 800]}
    )
    assert runner_up_cell(meets, 0).method == "svd"
    assert set(table.separated) == {"no interval"}  # rows without per-document terms
    front = pareto_front(frontier_cells(rows))
    # the baseline ties int8 with more bytes; svd at 10.2 is beaten by pq with fewer bytes
    assert list(zip(front.method, front.byte_cr, strict=True)) == [
        ("int8", 3.76),
        ("int4", 7.1),
        ("pq", 11.3),
        ("svd", 40.7),
        ("pq", 47.5),
    ]


def test_a_single_best_method_is_named_only_where_its_paired_interval_separates_it():
    import math

    import pandas as pd

    from see.report.frontier import budget_table, frontier_cells
    from see.report.headline import best_markdown

    words = [100.0] * 12
    swing = [1.0, -1.0] * 6  # per-document noise that sums to zero: no systematic difference

    def documents(per_doc_loss, noise=None):
        loglik = [-100 * per_doc_loss + (noise[i] if noise else 0.0) for i in range(12)]
        return {"doc_ids": list(range(12)), "doc_loglik": loglik, "doc_units": words}

    def cell(method, target, byte_cr, loss, noise=None):
        row = byte_cell_row("20260101-000000-frontier", "m", method, target, byte_cr, "wikitext", 0)
        terms = documents(loss, noise)
        return row | terms | {"value": math.exp(-sum(terms["doc_loglik"]) / sum(words))}

    rows = pd.DataFrame(
        [
            cell("baseline", 1.0, 1.0, 3.0),
            cell("pq", 10.0, 11.0, 3.1),
            cell("svd", 10.0, 10.5, 3.1, swing),  # the same quality up to noise: a tie
            cell("pq", 40.0, 45.0, 3.5),
            cell("svd", 40.0, 41.0, 4.0),  # clearly worse: pq is separated from it
        ]
    )
    table = budget_table(frontier_cells(rows)).set_index("byte_budget")
    assert table.loc[10.0, "separated"] == "tied"
    assert table.loc[40.0, "separated"] == "yes" and table.loc[40.0, "best_method"] == "pq"
    assert table.loc[40.0, "ratio_ci"] == f"{math.exp(0.5):.3g} [{math.exp(0.5):.3g}, " + (
        f"{math.exp(0.5):.3g}] (12 docs)"  # every document 0.5 nats/word worse: a point
    )
    text = best_markdown(table.reset_index(), sizes=None)
    assert "tied: pq ~ runner-up" in text or "tied: svd ~ runner-up" in text
    assert "| pq " in text


def curve_row(**fields) -> dict:
    """A WikiText row of a healing curve: one curve point, `fields` override them."""
    return {
        "run_id": "20260101-000000-heal-curve",
        "model": "m",
        "method": "svd",
        "method_options": "",
        "target_cr": 10.0,
        "heal_stage": "initial",
        "heal_total_tokens": None,
        "task": "wikitext",
        "metric": "word_perplexity",
        "value": 0.0,
        **fields,
    }


def test_tokens_to_recover_reads_the_curve_and_says_when_a_factor_is_not_reached():
    import pandas as pd

    from see.report.healing import curve_points, tokens_to_recover

    def row(method, stage, tokens, value):
        return curve_row(method=method, heal_stage=stage, heal_total_tokens=tokens, value=value)

    rows = pd.DataFrame(
        [
            row("baseline", "initial", None, 30.0),
            row("svd", "initial", None, 9000.0),
            row("svd", "stage1", 4096, 900.0),
            row("svd", "stage2@16384", 16384, 55.0),
            row("svd", "stage2@65536", 65536, 40.0),
        ]
    )
    table = tokens_to_recover(curve_points(rows)).iloc[0]
    assert table["tokens_to_2x"] == "16,384" and table["tokens_to_1.5x"] == "65,536"
    assert table["tokens_to_1.1x"].startswith("not reached within 65,536; extrapolated ~")
    assert table["initial"] == 9000.0 and table["final"] == 40.0


def test_extrapolated_tokens_to_recover_equal_a_hand_computation():
    import pandas as pd

    from see.report.healing import extrapolate, tokens_to_recover

    # log(ppl / base) = 8 * T ** -0.25 exactly: 2, 1, 0.5 nats at T = 256, 4,096, 65,536
    base, tokens = 10.0, [0.0, 256.0, 4096.0, 65536.0]
    values = [base * math.exp(40.0), *(base * math.exp(8 * t**-0.25) for t in tokens[1:])]
    for factor in (1.5, 1.1):
        by_hand = (8 / math.log(factor)) ** 4  # 8 * T ** -0.25 = log(factor)
        estimate, low, high = extrapolate(tokens, values, base, factor)
        assert estimate == pytest.approx(by_hand, rel=1e-9)
        assert low == pytest.approx(by_hand, rel=1e-9) and high == pytest.approx(by_hand, rel=1e-9)
    # one point off the line: the leave-one-out fits bracket the estimate
    noisy = [*values[:3], values[3] * 1.05]
    estimate, low, high = extrapolate(tokens, noisy, base, 1.1)
    assert low < estimate < high
    # a curve that does not fall cannot be extrapolated
    assert extrapolate(tokens, [values[0], 50.0, 60.0, 70.0], base, 1.1) is None
    rows = pd.DataFrame(
        {
            "run_id": "r-heal-frontier",
            "model": "m",
            "method": ["baseline", *["svd"] * 4],
            "method_options": "",
            "target_cr": [1.0, *[20.0] * 4],
            "tokens": [0.0, *tokens],
            "value": [base, *values],
        }
    )
    line = tokens_to_recover(rows).iloc[0]
    assert line["tokens_to_2x"] == "65,536"  # measured: 0.5 nats < log 2
    assert line["tokens_to_1.5x"] == (
        "not reached within 65,536; extrapolated ~152k [152k, 152k]"  # (8 / log 1.5) ** 4
    )


def verdict_rows(values: list[float | None]) -> list[dict]:
    return [
        {
            "cell_key": f"k{i}",
            "metric": "acc",
            "metric_filter": "none",
            "value": v,
            "timestamp": "t",
        }
        for i, v in enumerate(values)
    ]


def test_verdict_matches_rows_by_key_within_tolerance():
    from see.report.verdict import compare_runs, verdict_markdown

    same = compare_runs(
        verdict_rows([0.5, 20.0, None]), verdict_rows([0.5, 20.0 * (1 + 1e-6), None])
    )
    assert same["reproduced"] and same["matched"] == 3 and same["missing"] == same["new"] == 0
    assert same["table"].beyond_tolerance.sum() == 0
    moved = compare_runs(verdict_rows([0.5, 21.0, None]), verdict_rows([0.5, 20.0, None]))
    assert not moved["reproduced"]
    assert moved["table"].max_rel_diff.iloc[0] == pytest.approx(0.05)
    # a cell that lost its value (failed, unreachable) never counts as equal
    lost = compare_runs(verdict_rows([0.5, None]), verdict_rows([0.5, 20.0]))
    assert not lost["reproduced"] and lost["table"].beyond_tolerance.iloc[0] == 1
    partial = compare_runs(verdict_rows([0.5]), verdict_rows([0.5, 20.0]))
    assert not partial["reproduced"] and partial["missing"] == 1
    extra = compare_runs(verdict_rows([0.5, 20.0, 3.0]), verdict_rows([0.5, 20.0]))
    assert extra["reproduced"] and extra["new"] == 1
    text = verdict_markdown(moved | {"run": "new", "reference": "old"})
    assert "NOT reproduced" in text and "max_rel_diff" in text


def test_published_run_is_the_newest_of_the_preset(tmp_path):
    import json

    from see.report.verdict import published_run

    for run, name in [
        ("20260101-000000-smoke", "smoke"),
        ("20260102-000000-smoke", "smoke"),
        ("20260103-000000-see", "see"),
    ]:
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "config.json").write_text(json.dumps({"name": name}))
    (tmp_path / "PUBLISHED").write_text(
        "runs/20260102-000000-smoke\nruns/20260101-000000-smoke\nruns/20260103-000000-see\n"
    )
    assert published_run(tmp_path, "smoke").name == "20260102-000000-smoke"
    newest = tmp_path / "runs" / "20260102-000000-smoke"
    assert published_run(tmp_path, "smoke", exclude=newest).name == "20260101-000000-smoke"
    assert published_run(tmp_path, "heal") is None


def test_claims_compare_default_cells_in_the_right_direction():
    import pandas as pd

    from see.report.claims import CLAIMS, check_claim, claims_markdown

    def row(method, cr, value, options="", metric="word_perplexity", hib=False):
        return dict(
            run_id="r",
            model="m",
            target_cr=cr,
            head_policy="dense",
            seed=0,
            heal_stage="initial",
            task="wikitext",
            metric=metric,
            method=method,
            method_options=options,
            value=value,
            higher_is_better=hib,
        )

    rows = pd.DataFrame(
        [
            row("autoencoder", 10, 100.0),
            row("svd", 10, 200.0),
            row("autoencoder", 20, 300.0),
            row("svd", 20, 200.0),
            row("autoencoder", 40, 1.0, options="loss=mse"),  # an ablation: not the claim
            row("svd", 40, 200.0),
            row("baseline", 1, 20.0),
            row("see", 10, 21.0, options="steps=60"),  # a budget only: still the default
            row("see", 20, 20.5),  # initial quality: not the setting of SEE's claim
        ]
    )
    ae = check_claim(CLAIMS[0], rows)
    assert ae.set_index("target_cr").holds.to_dict() == {10: True, 20: False}
    see_claim = next(c for c in CLAIMS if c.method == "see" and c.versus == "baseline")
    assert see_claim.setting == "healed"
    assert check_claim(see_claim, rows).empty  # initial rows never test a claim about training
    healed = pd.concat([rows, pd.DataFrame([row("see", 10, 21.0) | {"heal_stage": "stage2"}])])
    see = check_claim(see_claim, healed)
    assert see.holds.tolist() == [True] and see.quality_ratio.iloc[0] == pytest.approx(20 / 21)
    accuracy = rows.assign(metric="acc", higher_is_better=True, task="wikitext")
    flipped = check_claim(dataclasses.replace(CLAIMS[0], metric="acc"), accuracy)
    assert flipped.set_index("target_cr").holds.to_dict() == {10: False, 20: True}
    text = claims_markdown(rows)
    assert "SEE keeps the model's quality" in text and "Not tested: no healed rows" in text
    assert "Not tested: no finetuned rows" in text  # the autoencoder's GLUE claim


def test_headline_table_replaces_only_the_text_between_its_markers(tmp_path):
    import pandas as pd

    from see.report.headline import (
        BEGIN,
        DEFAULTS_CHANGED,
        END,
        headline_cells,
        model_tables,
        update_readme,
    )

    def row(method, cr, value, run="20260101-000000-frontier", options=""):
        return dict(
            run_id=run,
            model="m",
            method=method,
            target_cr=cr,
            byte_cr=cr,
            value=value,
            task="wikitext",
            metric="word_perplexity",
            heal_stage="initial",
            head_policy="dense",
            method_options=options,
            seed=0,
            limit=3,
            timestamp=run,
        )

    rows = pd.DataFrame(
        [
            row("baseline", 1, 30.0),
            row("groupreduce", 10, 900.0),
            row("groupreduce", 10, 800.0, run="20260102-000000-frontier"),  # the newest run wins
            row("see", 10, 1.0, options="n=2"),  # an ablation: not a default
            row("see", 20, 2.0, run="20260103-000000-see-levers"),  # not a headline preset
        ]
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    assert update_readme(readme, rows)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n")
    assert "old table" not in text and "| groupreduce" in text and "Per byte budget" in text
    assert "800" in text and "900" not in text and "| see " not in text
    per_model = model_tables(rows)  # every method at every CR: the report's table
    assert "baseline 30" in per_model and "800" in per_model and "900" not in per_model
    # SEE's defaults changed: rows from older runs drop out, rows that spelled out the new
    # defaults count (DEFAULTS_CHANGED)
    since, spelled = DEFAULTS_CHANGED["see"]
    before, after = "20261125-000000-see-defaults", f"{since[:8]}-235959-see-defaults"
    changed = pd.DataFrame(
        [
            row("baseline", 1, 30.0),
            row("see", 10, 5.0, run=before),
            row("see", 40, 6.0, run=before),
            row("see", 10, 3.0, run=after, options=spelled),
            row("see", 20, 4.0, run=after, options="steps=60"),  # a budget only
            row("see", 80, 7.0, run=after, options="n=2"),  # an ablation
        ]
    )
    cells = headline_cells(changed)
    shown = dict(zip(cells.target_cr, cells.value, strict=True))
    assert shown == {1: 30.0, 10: 3.0, 20: 4.0}  # the old defaults' 5.0 and 6.0 are gone
    # a run from before a default change: per CR, the rows spelling out what the current
    # default runs are its defaults, its other rows are not (INTERIM_DEFAULTS: SEE's auto
    # order is 2 at CR 10 and 20 on SmolLM2, 3 at CR 40)
    interim = "20261201-173512-see-strength"
    mixed = pd.DataFrame(
        [
            row("see", 10, 8.0, run=interim),  # ran with n = 2
            row("see", 10, 9.0, run=interim, options="n=3"),
            row("see", 20, 10.0, run=interim),
            row("see", 40, 11.0, run=interim),  # order 2: not what the default runs at CR 40
            row("see", 40, 12.0, run=interim, options="n=3"),
        ]
    )
    cells = headline_cells(mixed)
    assert dict(zip(cells.target_cr, cells.value, strict=True)) == {10: 8.0, 20: 10.0, 40: 12.0}
    plain = tmp_path / "OTHER.md"
    plain.write_text("no markers")
    assert not update_readme(plain, rows) and plain.read_text() == "no markers"
    assert not update_readme(tmp_path / "missing.md", rows)  # another working folder


def test_no_import_cycles_in_the_package():
    """Every `see.*` import, lazy ones inside functions included, forms an acyclic graph."""
    import ast
    from pathlib import Path

    import see

    root = Path(see.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("see"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = sorted(d for d in deps if d in modules and d != name)
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in graph[name]:
            assert state.get(dep) != "open", f"import cycle: {' -> '.join([*path, name, dep])}"
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_report_marks_tasks_where_the_baseline_is_at_chance(tmp_path):
    """An RTE the baseline answers like a constant predictor (zero- and 5-shot) is marked `no`;
    SST-2 far above chance `yes`; a task the signal run did not measure `unmeasured`, and so
    is WNLI, at chance zero-shot with its 5-shot setting still to measure."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    grid = fixture_rows()
    for task, value in [("rte", 0.55), ("sst2", 0.85), ("qnli", 0.5), ("wnli", 0.5)]:
        for method in ("baseline", "svd"):
            grid.append(
                {
                    **grid[0],
                    "task": task,
                    "metric": "acc",
                    "method": method,
                    "value": value,
                    "stderr": 0.035,
                    "cell_key": f"{task}{method}",
                }
            )
    signal = [
        {
            "model": "smollm2-135m",
            "task": task,
            "metric": "acc",
            "method": "baseline",
            "num_fewshot": shots,
            "value": value,
            "stderr": 0.035,
            "chance": chance,
            "primary": True,
            "docs": "last 200",
            "run_id": "20260101-000000-signal",
            "device": "cpu:test",
            "timestamp": "2026-01-01T00:00:00",
            "cell_key": f"{task}{shots}",
        }
        for task, shots, value, chance in [
            ("rte", 0, 0.56, 0.53),
            ("rte", 5, 0.57, 0.53),
            ("sst2", 0, 0.85, 0.51),
            ("wnli", 0, 0.5, 0.56),
        ]
    ]
    publish_runs(results, {"r1": grid, "20260101-000000-signal": signal})
    config = {"models": ["smollm2-135m"], "tasks": ["rte", "sst2", "wnli"], "fewshots": [0, 5]}
    (results / "runs" / "20260101-000000-signal" / "config.json").write_text(json.dumps(config))
    text = build_reports(results, reports).read_text()
    assert "## Which tasks can rank methods" in text
    marks = {}
    page = (reports / "runs" / "r1.md").read_text()  # the run's quality table, in the archive
    for line in page.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 14 and cells[1] == "smollm2-135m" and cells[3] == "acc":
            marks[cells[2]] = cells[13]
    assert marks == {"rte": "no", "sst2": "yes", "qnli": "unmeasured", "wnli": "unmeasured"}


def test_stage_choice_compares_runs_with_and_without_stage1_at_equal_tokens():
    import pandas as pd

    from see.report.healing import curve_points, stage_choice

    def row(run, stage, tokens, value, config='{"rank": 8}'):
        return curve_row(
            run_id=f"20260101-00000{run}-heal-curve",
            method_config=config,
            heal_stage=stage,
            heal_total_tokens=tokens,
            value=value,
        )

    rows = pd.DataFrame(
        [
            row(1, "initial", None, 9000.0),
            row(1, "stage1", 2048, 5000.0),
            row(1, "stage2@8192", 8192, 900.0),
            row(2, "initial", None, 9000.0),
            row(2, "stage2@2048", 2048, 6000.0),
            row(2, "stage2@8192", 8192, 700.0),
            row(2, "stage2@32768", 32768, 300.0),  # no stage-1 point to compare with
            # the same method with other defaults (another method_config): not compared
            row(3, "initial", None, 800.0, '{"rank": 16}'),
            row(3, "stage2@8192", 8192, 100.0, '{"rank": 16}'),
        ]
    )
    table = stage_choice(curve_points(rows))
    assert table.tokens.tolist() == [2048.0, 8192.0]
    assert table.better.tolist() == ["stage 1 + 2", "stage 2 alone"]
    assert table.stage2_alone.tolist() == [6000.0, 700.0]


def test_scaling_reads_one_run_per_task_and_says_whether_the_largest_model_loses_less():
    import pandas as pd

    from see.report.build import add_recovery
    from see.report.scaling import scaling_markdown, scaling_points

    def row(run, model, size, method, cr, task, value, stderr=None, informative="yes"):
        return {
            "run_id": run,
            "model": model,
            "model_param_bytes": 4 * size,
            "method": method,
            "method_options": "",
            "head_policy": "dense",
            "target_cr": cr,
            "heal_stage": "initial",
            "task": task,
            "metric": "acc" if task == "sst2" else "word_perplexity",
            "metric_filter": "none",
            "limit": 200,
            "max_length": None,
            "dtype": "float32",
            "value": value,
            "stderr": stderr,
            "informative": informative,
        }

    sizes = {"small": 100, "large": 1000}
    run, other, zoo = "20260101-000000-sizes", "20260101-000000-smoke", "20260101-000000-zoo"
    rows = [
        *[  # baselines of three models and nothing compressed: no points, however many models
            row(zoo, model, size, "baseline", 1.0, "wikitext", 25.0)
            for model, size in [("small", 100), ("large", 1000), ("huge", 10**4)]
        ],
        row(run, "small", 100, "baseline", 1.0, "wikitext", 30.0),
        row(run, "small", 100, "svd", 10.0, "wikitext", 300.0),  # recovery 0.1
        row(run, "large", 1000, "baseline", 1.0, "wikitext", 20.0),
        row(run, "large", 1000, "svd", 10.0, "wikitext", 40.0),  # 0.5: loses less
        row(other, "small", 100, "baseline", 1.0, "wikitext", 30.0),  # one model: not used
        row(other, "small", 100, "svd", 10.0, "wikitext", 3.0e4),
        row(run, "small", 100, "baseline", 1.0, "sst2", 0.80, 0.03),
        row(run, "small", 100, "svd", 10.0, "sst2", 0.60, 0.03),  # 0.75
        row(run, "large", 1000, "baseline", 1.0, "sst2", 0.90, 0.03),
        row(run, "large", 1000, "svd", 10.0, "sst2", 0.72, 0.03),  # 0.8: within noise
        row(run, "huge", 10**4, "baseline", 1.0, "sst2", 0.50, 0.03, "no"),  # at chance
        row(run, "huge", 10**4, "svd", 10.0, "sst2", 0.50, 0.03, "no"),
    ]
    frame = add_recovery(pd.DataFrame(rows))
    points = scaling_points(frame, "wikitext", "word_perplexity")
    assert list(points.model) == list(sizes) and list(points.params) == list(sizes.values())
    assert points.recovery.round(6).tolist() == [0.1, 0.5]
    assert "the larger loses less" in scaling_markdown(points)
    one_size = pd.concat([points, points.iloc[[0]].assign(method="pq")])  # not on "large"
    table = scaling_markdown(one_size)
    pq_line = next(line for line in table.splitlines() if line.startswith("| pq"))
    assert "nan" not in table and pq_line.split("|")[4].strip() == "-" and "one size" in pq_line
    sst2 = scaling_points(frame, "sst2", "acc")
    assert list(sst2.model) == ["small", "large"]  # the uninformative size is left out
    assert sst2.recovery_stderr.notna().all()
    assert set(sst2.measure) == {"recovery"}  # no chance levels given: the plain ratio
    assert "no difference beyond 2 stderr" in scaling_markdown(sst2)
    chance = {"small": 0.5, "large": 0.5}
    above = scaling_points(frame, "sst2", "acc", chance)  # (0.6 - 0.5) / (0.8 - 0.5), ...
    assert above.recovery.round(6).tolist() == [round(0.1 / 0.3, 6), 0.55]
    assert set(above.measure) == {"recovery above chance"}
    assert above.recovery_stderr.gt(sst2.recovery_stderr).all()  # smaller margins, more noise
    assert "no difference beyond 2 stderr" in scaling_markdown(above)
    partial = scaling_points(frame, "sst2", "acc", {"small": 0.5})  # one model has no chance
    assert set(partial.measure) == {"recovery"}


def test_headline_names_the_best_method_per_model_size_and_byte_budget():
    """From `sizes` rows: per model (smallest first) and budget, the lowest word perplexity
    among methods with at least that byte ratio; a skipped (uninformative) task shows `-`."""
    import pandas as pd

    from see.report.headline import size_summary

    def row(model, method, target, byte_cr, task, value, params):
        cell = byte_cell_row("20270101-000000-sizes", model, method, target, byte_cr, task, value)
        return cell | {"model_param_bytes": 4 * params}

    rows = []
    for model, params, ppl_svd, ppl_see in [
        ("big", 1.5e9, 900.0, 300.0),
        ("small", 1.35e8, 50.0, 80.0),
    ]:
        rows += [
            row(model, "baseline", 1.0, 1.0, "wikitext", 20.0, params),
            row(model, "int4", 7.1, 7.1, "wikitext", 21.0, params),  # too many bytes for 10x
            row(model, "svd", 10.0, 10.0, "wikitext", ppl_svd, params),
            row(model, "see", 10.0, 10.0, "wikitext", ppl_see, params),
            row(model, "svd", 40.0, 40.0, "wikitext", 2 * ppl_svd, params),
            row(model, "see", 40.0, 40.0, "wikitext", 3 * ppl_see, params),
        ]
        rows += [
            row(model, m, t, t, "sst2", 0.7, params) for m, t in [("svd", 10.0), ("see", 10.0)]
        ]
        rows.append(row(model, "see", 10.0, 10.0, "rte", None, params) | {"status": "skipped"})
    lines = size_summary(pd.DataFrame(rows))
    table = "\n".join(lines)
    assert "20270101-000000-sizes" in lines[0]
    body = [line for line in lines[2].splitlines()[2:]]
    assert [line.split("|")[1].strip() for line in body] == ["small", "small", "big", "big"]
    best = [line.split("|")[4].strip() for line in body]  # no documents: lowest, not tested
    assert best == [f"{m} (lowest; no interval)" for m in ["svd", "svd", "see", "see"]]
    assert "135M" in table and "1.5B" in table and "nan" not in table and ">= 40x" in table
    assert "Not measured" not in table
    assert size_summary(pd.DataFrame(rows).assign(run_id="20260101-000000-frontier")) == []

    rows.append(row("small", "pq", 10.0, 11.3, "wikitext", 25.0, 1.35e8))  # not yet on "big"
    table = "\n".join(size_summary(pd.DataFrame(rows)))
    assert "Not measured yet, so not ranked: big: pq at 10." in table


def test_headline_names_the_best_method_per_byte_budget_from_the_newest_frontier_run():
    import pandas as pd

    from see.report.headline import DEFAULTS_CHANGED, budget_summary

    old, new = "20261207-000000-frontier", "20261208-000000-frontier"
    rows = [
        byte_cell_row(old, "m", "baseline", 1.0, 1.0, "wikitext", 30.0),
        byte_cell_row(old, "m", "see", 10.0, 10.0, "wikitext", 40.0),  # older defaults
        byte_cell_row(new, "m", "baseline", 1.0, 1.0, "wikitext", 30.0),
        byte_cell_row(new, "m", "see", 10.0, 10.0, "wikitext", 400.0),
        byte_cell_row(new, "m", "svd", 10.0, 10.2, "wikitext", 90.0)
        | {"method_options": "codes_dtype=int8"},
        byte_cell_row(new, "m", "svd", 10.0, 10.0, "wikitext", 900.0),
        byte_cell_row(new, "m", "svd", 40.0, 40.0, "wikitext", 2000.0),
    ]
    lines = budget_summary(pd.DataFrame(rows))
    assert new in lines[0] and old not in lines[0]
    body = [line.split("|") for line in lines[2].splitlines()[2:]]
    assert [(c[2].strip(), c[3].strip()) for c in body] == [
        (">= 10x", "svd (codes_dtype=int8) (lowest; no interval)"),
        (">= 40x", "svd"),
    ]
    assert "see (400)" in lines[2] and "x baseline" in lines[2]
    from see.report.frontier import frontier_markdown  # the report's table: the same runs

    table = frontier_markdown(pd.DataFrame(rows))
    assert new in table and old not in table and "nan" not in table  # no task rows: "-"
    since = DEFAULTS_CHANGED["see"][0]  # SEE's defaults changed after the older run
    stale = pd.DataFrame(rows[:2]).assign(run_id=f"{since[:8]}-000000-frontier")
    assert "| see " not in "\n".join(budget_summary(stale))
    assert budget_summary(pd.DataFrame(rows).assign(run_id="20260101-000000-sizes")) == []


def test_heal_speed_compares_each_stage_with_its_old_default_whatever_the_string_backend():
    """The rows of one bench-heal run share a timestamp: the table must keep their written
    order, so that each stage's first variant (the old default) is the speed-up's base. pandas
    without pyarrow sorts its python-backed strings unstably (what `nox -s figures` has)."""
    from pathlib import Path

    import pandas as pd

    from see.report.build import heal_speed_section
    from see.results import published_rows

    results = Path(__file__).parents[1] / "results"
    runs = ["runs/20261125-042235-bench-heal", "runs/20261202-015710-bench-heal"]
    rows = published_rows(results, runs)
    rows["timestamp"] = rows.timestamp.astype(pd.StringDtype("python"))
    text = "\n".join(heal_speed_section(rows))
    header = next(line for line in text.splitlines() if line.startswith("| run_id"))
    columns = [cell.strip() for cell in header.split("|")]
    lines = [line for line in text.splitlines() if "(old default)" in line]
    assert len(lines) == 4
    assert all(line.split("|")[columns.index("speedup")].strip() == "1" for line in lines)
    # not recorded by these runs
    assert all(line.split("|")[columns.index("compile")].strip() == "-" for line in lines)


def test_short_autoencoder_fits_from_before_the_schedule_fix_are_not_current():
    import pandas as pd

    from see.report.headline import fitted_before_change

    rows = pd.DataFrame(
        {
            "method": ["autoencoder"] * 4,
            "method_options": ["epochs=3", "", "epochs=3", "epochs=20"],
            "run_id": [
                "20261123-155734-heal",  # 3 epochs, alpha jumped to 0.1: stale
                "20261123-155734-heal",  # the 20-epoch default never changed
                "20261206-090000-heal",  # 3 epochs with today's schedule
                "20261123-155734-heal",
            ],
        }
    )
    assert fitted_before_change(rows).tolist() == [True, False, False, False]


def test_the_committed_archive_index_lists_every_published_run():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    published = [
        line.strip().rsplit("/", 1)[-1]
        for line in (root / "results" / "PUBLISHED").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    index = (root / "reports" / "runs" / "README.md").read_text()
    missing = [run for run in published if f"[{run}]({run}.md)" not in index]
    assert not missing, f"rebuild the reports (`python -m see report`): {missing}"
    assert all((root / "reports" / "runs" / f"{run}.md").is_file() for run in published)


def test_rows_from_before_a_default_change_are_named_not_ranked():
    import pandas as pd

    from see.report.headline import DEFAULTS_CHANGED, left_out

    since = DEFAULTS_CHANGED["svd"][0]
    rows = pd.DataFrame(
        {
            "run_id": ["20261202-000000-frontier", f"{since}-frontier"],
            "model": ["m", "m"],
            "method": ["svd", "svd"],
            "method_options": ["", ""],
            "target_cr": [20.0, 20.0],
        }
    )
    assert "svd (defaults changed" in left_out(rows, {"20261202-000000-frontier"})[0]
    assert left_out(rows, {f"{since}-frontier"}) == []


def test_pq_rows_from_before_the_auto_residual_share_stay_current_where_it_is_unchanged():
    from see.methods.pq import residual_share
    from see.report.headline import PARTIAL_CHANGES, fitted_before_change, left_out

    since, mark, (low, high) = PARTIAL_CHANGES["pq"]
    # the report's range is where pq's auto share is the old default 0.5
    for ratio in (10, 20, 28, 29, 40, 56, 57, 80):
        assert (low < ratio <= high) == (residual_share("auto", ratio) == 0.5)
    old, new = "20261206-180000-frontier", f"{since}-frontier"
    auto = '{"dim_weight": "auto", "residual_share": "auto"}'
    rows = pd.DataFrame(
        {
            "run_id": [old, old, old, old, new],
            "model": ["m"] * 5,
            "method": ["pq"] * 5,
            "method_options": [""] * 5,
            "target_cr": [20.0, 40.0, 80.0, 80.0, 20.0],
            "method_config": ['{"residual_share": 0.5}'] * 3 + [auto, '{"residual_share": 0.5}'],
        }
    )
    assert fitted_before_change(rows).tolist() == [True, False, True, False, False]
    # measured again at 40x in the same run: the older row gives way (no duplicate cell)
    again = pd.concat([rows, rows.iloc[[1]].assign(method_config=auto)], ignore_index=True)
    assert fitted_before_change(again).tolist() == [True, True, True, False, False, False]
    # a `skipped` row written before the new cell runs measures nothing: the old row stays
    skipped = pd.concat([rows.assign(value=1.0), rows.iloc[[1]].assign(method_config=auto)])
    assert fitted_before_change(skipped.reset_index(drop=True)).tolist()[1] is False
    # 80x was measured again in the old run (resumed after the change): only 20x is left out
    assert "pq (defaults changed 20261207)" in left_out(rows, {old})[0]
    assert left_out(rows.iloc[1:], {old}) == []


def test_methods_an_older_run_had_are_named_while_the_newest_run_lacks_them():
    import pandas as pd

    from see.report.headline import not_yet_in_newest

    every = pd.DataFrame(
        {
            "run_id": ["r1-frontier", "r1-frontier", "r2-frontier", "r1-frontier"],
            "model": ["small", "small", "small", "big"],
            "method": ["svd", "pq", "pq", "see"],
        }
    )
    newest = every[every.run_id == "r2-frontier"]
    assert not_yet_in_newest(every, newest) == ["small: svd"]
    # a run no older run covers still names what its config plans and it has not measured
    planned = {"r2-frontier": {"pq", "groupreduce"}}
    assert not_yet_in_newest(every, newest, planned) == ["small: groupreduce, svd"]


def test_published_rows_carry_the_methods_their_run_plans(tmp_path):
    import json

    from see.report.headline import planned_methods
    from see.results import published_rows

    run = tmp_path / "runs" / "r1-frontier"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"methods": ["baseline", "pq", "svd"]}))
    (run / "rows.jsonl").write_text(json.dumps({"run_id": "r1-frontier", "method": "pq"}) + "\n")
    (tmp_path / "PUBLISHED").write_text("runs/r1-frontier\n")
    rows = published_rows(tmp_path)
    assert planned_methods(rows) == {"r1-frontier": {"baseline", "pq", "svd"}}
    forced = {"config": {"methods": ["pq"]}}
    (run / "config-forced.jsonl").write_text(json.dumps(forced) + "\n")
    assert planned_methods(published_rows(tmp_path)) == {"r1-frontier": {"pq"}}


def test_healed_frontier_names_the_best_method_per_budget_and_tokens(tmp_path):
    import pandas as pd

    from see.report.build import plot_healed_frontier
    from see.report.healing import curve_points, healed_frontier

    def row(method, cr, stage, tokens, value):
        return curve_row(
            run_id="20260101-000000-heal-frontier",
            method=method,
            target_cr=cr,
            byte_cr=cr,
            heal_stage=stage,
            heal_total_tokens=tokens,
            value=value,
        )

    rows = pd.DataFrame(
        [
            row("baseline", 1.0, "initial", None, 10.0),
            row("pq", 20.0, "initial", None, 13.0),
            row("svd", 20.0, "initial", None, 900.0),
            row("pq", 20.0, "stage2@65536", 65536, 12.0),
            row("svd", 20.0, "stage2@65536", 65536, 11.0),  # healing overtakes
            row("pq", 40.0, "initial", None, 40.0),
            row("pq", 40.0, "stage2@65536", 65536, 20.0),
        ]
    )
    table = healed_frontier(curve_points(rows)).set_index(["tokens", "target_cr"])
    assert table.loc[(0, 20.0), "best_method"] == "pq"
    assert table.loc[(65536, 20.0), "best_method"] == "svd"
    assert table.loc[(65536, 20.0), "best_ratio"] == pytest.approx(1.1)
    assert table.loc[(65536, 40.0), "all"] == "pq 2"
    assert plot_healed_frontier(curve_points(rows), tmp_path / "f.png").is_file()


def test_finetuned_ranking_names_a_best_method_only_beyond_two_stderr():
    import pandas as pd

    from see.report.finetuned import finetune_signal, finetuned_points, finetuned_ranking

    def row(method, cr, task, metric, value, stderr, chance=None):
        return {
            "run_id": "20260101-000000-finetune",
            "model": "m",
            "method": method,
            "target_cr": cr,
            "byte_cr": cr,
            "task": task,
            "metric": metric,
            "value": value,
            "stderr": stderr,
            "chance": chance,
            "heal_stage": "finetune",
        }

    rows = pd.DataFrame(
        [
            row("baseline", 1.0, "sst2", "acc", 0.80, 0.02, 0.51),
            row("svd", 10.0, "sst2", "acc", 0.70, 0.02),
            row("pq", 10.0, "sst2", "acc", 0.79, 0.02),  # 0.09 > 2 * hypot(0.02, 0.02)
            row("svd", 40.0, "sst2", "acc", 0.60, 0.03),
            row("pq", 40.0, "sst2", "acc", 0.65, 0.03),  # 0.05 < 2 * 0.042: tied
            row("baseline", 1.0, "cola", "mcc", 0.05, 0.03, 0.0),  # within 2 stderr of 0
            {**row("baseline", 1.0, "sst2", "acc", 0.5, 0.02), "heal_stage": "initial"},
        ]
    )
    points = finetuned_points(rows)
    assert len(points) == 6  # the initial row is not a fine-tuned one
    signal = finetune_signal(points).set_index("task")
    assert bool(signal.loc["sst2", "informative"]) and not bool(signal.loc["cola", "informative"])
    ranking = finetuned_ranking(points, finetune_signal(points)).set_index("target_cr")
    assert ranking.loc[10.0, "best_method"] == "pq"
    assert ranking.loc[10.0, "separated"] == "yes, from svd"
    assert ranking.loc[40.0, "separated"] == "tied ~ svd"


def test_text_choice_pairs_each_healing_text_with_validation_on_the_same_documents():
    import json as js

    import pandas as pd

    from see.report.healing import text_choice

    def row(text, value, loglik):
        return {
            "run_id": f"20260101-000000-heal-text-{text[:5]}",
            "model": "m",
            "method": "svd",
            "target_cr": 20.0,
            "heal_stage": "stage2@65536",
            "heal_total_tokens": 65536,
            "heal_config": js.dumps({"text": text}),
            "task": "wikitext",
            "metric": "word_perplexity",
            "value": value,
            "doc_ids": [0, 1, 2],
            "doc_loglik": loglik,
            "doc_units": [10.0, 10.0, 10.0],
            "heal_text_passes": 0.3,
        }

    rows = pd.DataFrame(
        [
            row("wikitext-2-valid", 50.0, [-40.0, -40.0, -40.0]),
            row("teacher-samples", 40.0, [-30.0, -30.0, -30.0]),  # 1 nat/word better per doc
        ]
    )
    table = text_choice(rows).set_index("text")
    assert table.loc["wikitext-2-valid", "vs_validation"] == ""
    expected = f"{math.exp(-1):.3g} [{math.exp(-1):.3g}, {math.exp(-1):.3g}] (3 docs)"
    assert table.loc["teacher-samples", "vs_validation"] == expected


def test_a_finetuned_rows_recovery_is_against_the_finetuned_baseline():
    import pandas as pd

    from see.report.build import add_recovery

    def row(method, stage, value):
        return dict(
            run_id="r", model="m", task="sst2", metric="acc", metric_filter="none", limit=10,
            max_length=2048, dtype="float32", method=method, heal_stage=stage, value=value,
        )  # fmt: skip

    rows = pd.DataFrame(
        [
            row("baseline", "initial", 0.6),
            row("baseline", "finetune", 0.8),
            row("svd", "initial", 0.3),
            row("svd", "finetune", 0.4),
            row("svd", "stage2", 0.45),
        ]
    )
    recovery = add_recovery(rows).set_index(["method", "heal_stage"]).recovery
    assert recovery[("svd", "finetune")] == pytest.approx(0.5)
    assert recovery[("svd", "initial")] == pytest.approx(0.5)
    assert recovery[("svd", "stage2")] == pytest.approx(0.75)  # the baseline is not healed
    assert recovery[("baseline", "finetune")] == pytest.approx(1.0)


def test_pq_fit_time_takes_the_fisher_pass_out_and_says_where_it_was_not_recorded():
    import pandas as pd

    from see.report.targets import pq_fit_time

    def row(run, compress_s, fisher_s=None, model="qwen2.5-coder-1.5b", metric="word_perplexity"):
        fisher = {} if fisher_s is None else {"fisher_s": fisher_s}
        return {
            "run_id": run,
            "method": "pq",
            "model": model,
            "target_cr": 10.0,
            "metric": metric,
            "method_options": None,
            "compress_s": compress_s,
            **fisher,
        }

    rows = pd.DataFrame(
        [
            row("old", 300.0),
            row("fast", 123.0, 53.0),
            row("slow", 200.0, 50.0),
            row("fast", 123.0, 53.0, metric="bits_per_byte"),  # one line per run, not metric
            row("other-model", 10.0, 1.0, model="smollm2-135m"),
        ]
    )
    table = pq_fit_time(rows).set_index("run_id")
    assert list(table.index) == ["old", "fast", "slow"]
    assert table.loc["fast", "quantizer_s"] == 70.0 and table.loc["fast", "met"] == "met"
    assert table.loc["slow", "met"] == "missed"  # 150 s without the Fisher pass
    assert table.loc["old", "met"] == "not recorded"
    assert pq_fit_time(rows[rows.model == "smollm2-135m"]).empty


def test_an_accuracy_gain_from_a_label_shift_is_called_one_and_old_rows_say_what_they_lack():
    import pandas as pd

    from see.report.controls import accuracy_gains, control_line, gains_note

    rng = np.random.default_rng(0)
    target = [int(t) for t in rng.integers(0, 2, 200)]
    base_margin = rng.normal(0, 1, 200) + 0.3 * np.array(target) - 1.0  # prefers label 0
    loglik = lambda m: [[0.0, float(x)] for x in m]  # noqa: E731

    def row(method, margin, **extra):
        acc = float(((np.array(margin) > 0) == np.array(target)).mean())
        return {
            "run_id": "r-frontier",
            "model": "m",
            "task": "sst2",
            "metric": "acc",
            "num_fewshot": 0,
            "heal_stage": "initial",
            "method": method,
            "target_cr": 20.0,
            "value": acc,
            "stderr": (acc * (1 - acc) / 199) ** 0.5,
            "doc_ids": list(range(200)),
            "doc_choice_loglik": loglik(margin),
            "doc_target": target,
            "n": 200,
            "method_options": "",
            **extra,
        }

    shifted = base_margin + 1.0  # the same separation, label 1 answered more often
    rows = pd.DataFrame([row("baseline", base_margin), row("pq", shifted), row("svd", base_margin)])
    gains = accuracy_gains(rows)
    assert list(gains.method) == ["pq"]  # svd equals the baseline: no gain to check
    line = control_line(gains.iloc[0])
    assert line["verdict"].startswith("label shift")
    assert line["auc"] == line["baseline_auc"] and line["answers_1"] > line["baseline_answers_1"]
    old = rows.drop(columns=["doc_choice_loglik"])
    assert control_line(accuracy_gains(old).iloc[0])["verdict"].startswith("no per-document")
    # another run of the same cell without the gain is listed beside it: a replication
    again = [row("baseline", base_margin, run_id="r2"), row("pq", base_margin, run_id="r2")]
    again.append(row("noise", base_margin, run_id="r2", method_options="relative_error=0.1"))
    replicated = accuracy_gains(pd.concat([rows, pd.DataFrame(again)]))
    assert list(zip(replicated.run_id, replicated.method, strict=True)) == [
        ("r2", "noise"),  # the perturbation control of the flagged model and task
        ("r-frontier", "pq"),
        ("r2", "pq"),
    ]
    assert list(replicated.gain_stderrs.round(6)) == [0.0, gains.gain_stderrs.iloc[0].round(6), 0]
    (note, _) = gains_note(rows, {"r-frontier"})  # the line under a results table
    assert "m sst2 pq at 20x" in note and "svd" not in note
    assert gains_note(rows, {"r2"}) == []
    assert gains_note(rows.assign(informative="no"), {"r-frontier"}) == []  # shown as "-"


def test_the_size_figure_draws_only_runs_that_span_model_sizes():
    rows = pd.DataFrame(fixture_rows()).assign(heal_stage="initial")
    one_model = rows[rows.model == "gemma3-270m"].assign(run_id="control")
    points = size_points(pd.concat([rows, one_model]), "wikitext", "word_perplexity")
    assert set(points.run_id) == {"r1"}
    assert set(points.model) == {"smollm2-135m", "gemma3-270m"}


def test_a_run_whose_own_baseline_is_at_chance_ranks_nothing_on_that_task():
    def row(run, method, value, chance=0.5):
        return {
            "run_id": run,
            "model": "m",
            "task": "sst2",
            "method": method,
            "value": value,
            "stderr": 0.035,
            "chance": chance if method == "baseline" else None,
        }

    rows = pd.DataFrame(
        [
            row("near", "baseline", 0.535),
            row("near", "pq", 0.65),
            row("far", "baseline", 0.7),
            row("far", "pq", 0.6),
            row("old", "baseline", 0.52, chance=None),
        ]
    )
    table = {"m": {"sst2": {"num_fewshot": 0, "informative": True}}}
    marked = mark_informative(rows, table)
    assert list(marked.informative) == ["no", "no", "yes", "yes", "yes"]  # old: the table
