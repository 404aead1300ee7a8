import json

from see.report import build_reports


def fixture_rows():
    rows = []
    cells = [("baseline", 1.0, 30.0), ("svd", 5.0, 300.0), ("svd", 10.0, 900.0)]
    for model, method, cr, value in [
        (m, *c) for m in ("smollm2-135m", "gemma3-270m") for c in cells
    ]:
        for metric, scale in [("word_perplexity", 1.0), ("bits_per_byte", 0.03)]:
            rows.append({
                "model": model, "task": "wikitext", "metric": metric,
                "metric_filter": "none", "method": method, "method_options": "",
                "head_policy": "dense", "target_cr": cr, "reached_cr": cr, "value": value * scale,
                "stderr": None, "n": 2, "limit": 2, "max_length": 2048, "dtype": "float32",
                "embedding_bytes": int(1e6 / cr), "head_bytes": 0, "load_s": 1.0,
                "model_param_bytes": int(4e6 if model == "smollm2-135m" else 9e6), "run_id": "r1",
                "device": "cpu:test", "git_commit": "abc", "timestamp": "2026-01-01T00:00:00",
                "cell_key": f"{model}{method}{cr}",
            })  # fmt: skip
    return rows


def test_reports_regenerate_identically_from_results(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    (results / "runs" / "r1").mkdir(parents=True)
    (results / "runs" / "r1" / "rows.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in fixture_rows())
    )
    (results / "PUBLISHED").write_text("runs/r1\n")
    readme = build_reports(results, reports)
    first = readme.read_text()
    assert (reports / "r1_wikitext_ppl_vs_cr.png").stat().st_size > 1000
    assert (reports / "wikitext_word_perplexity_vs_size.png").stat().st_size > 1000
    assert "| smollm2-135m | wikitext | word_perplexity | svd" in first.replace("  ", " ")
    assert "0.1" in first  # recovery of svd at CR 5 = 30 / 300
    build_reports(results, reports)
    assert readme.read_text() == first


def test_claims_use_only_variants_that_keep_the_default_decisions():
    from see.report.build import default_decisions

    assert default_decisions("") and default_decisions("steps=800,batch_tokens=512")
    assert not default_decisions("n=2,steps=800") and not default_decisions("separate=False")


def test_perplexity_matrix_keeps_one_line_per_seed():
    import pandas as pd

    from see.report.build import ppl_pivot

    rows = pd.DataFrame(
        [{"model": "m", "method": "see", "method_options": "", "head_policy": "dense",
          "heal_stage": "initial", "seed": seed, "task": "wikitext", "metric": "word_perplexity",
          "target_cr": cr, "value": value}
         for seed, cr, value in [(0, 10, 111.0), (1, 10, 222.0), (0, 40, 333.0), (1, 40, 444.0)]]
    )  # fmt: skip
    table = ppl_pivot(rows)
    assert all(str(v) in table for v in (111, 222, 333, 444))
