"""reports/README.md and its PNG figures, regenerated from the published results rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from see.results import published_rows  # noqa: E402

LOWER_IS_BETTER = ("perplexity", "bits_per_byte")
QUALITY_COLUMNS = [
    "model", "task", "metric", "method", "method_options", "head_policy", "target_cr",
    "reached_cr", "value", "stderr", "recovery", "n", "limit", "embedding_bytes", "head_bytes",
]  # fmt: skip


def latest(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell_key, metric, filter): the newest, when runs repeat a cell."""
    rows = rows.sort_values("timestamp")
    return rows.drop_duplicates(["cell_key", "metric", "metric_filter"], keep="last")


def add_recovery(rows: pd.DataFrame) -> pd.DataFrame:
    """recovery = compressed / baseline value (inverted where lower is better)."""
    keys = ["model", "task", "metric", "metric_filter", "limit", "max_length", "dtype"]
    base = rows[rows.method == "baseline"][[*keys, "value"]].rename(columns={"value": "base"})
    out = rows.merge(base.drop_duplicates(keys), on=keys, how="left")
    lower = out.metric.str.contains("|".join(LOWER_IS_BETTER))
    out["recovery"] = (out.value / out.base).where(~lower, out.base / out.value)
    return out.drop(columns="base")


def quality_table(rows: pd.DataFrame) -> str:
    table = rows[QUALITY_COLUMNS].sort_values(["model", "task", "metric", "method", "target_cr"])
    return table.to_markdown(index=False, floatfmt=".4g")


def plot_metric_vs_cr(rows: pd.DataFrame, task: str, metric: str, out: Path) -> Path | None:
    """One panel per model: `metric` vs target CR, a line per method (and head policy)."""
    data = rows[(rows.task == task) & (rows.metric == metric)]
    if data.empty:
        return None
    models = sorted(data.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sub = data[data.model == model]
        for (method, policy), line in sub[sub.method != "baseline"].groupby(
            ["method", "head_policy"]
        ):
            line = line.sort_values("target_cr")
            ax.plot(line.target_cr, line.value, marker="o", label=f"{method} (head {policy})")
        for value in sub[sub.method == "baseline"].value:
            ax.axhline(value, color="black", linestyle="--", label="baseline")
        ax.set(title=model, xlabel="target compression ratio", ylabel=f"{task} {metric}")
        ax.set_xscale("log")
        ratios = sorted(sub.target_cr.unique())
        ax.set_xticks(ratios, labels=[f"{r:g}" for r in ratios], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if any(s in metric for s in LOWER_IS_BETTER):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_metric_vs_model_size(rows: pd.DataFrame, task: str, metric: str, out: Path):
    """`metric` vs the baseline model's parameter bytes, a line per method and ratio."""
    data = rows[(rows.task == task) & (rows.metric == metric)]
    if "model_param_bytes" not in rows:
        return None
    sizes = rows[rows.method == "baseline"].groupby("model").model_param_bytes.first()
    data = data[data.model.isin(sizes.index)]
    if data.model.nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, cr, policy), line in data.groupby(["method", "target_cr", "head_policy"]):
        line = line.assign(size=line.model.map(sizes) / 2**20).sort_values("size")
        label = method if method == "baseline" else f"{method} CR {cr:g} (head {policy})"
        ax.plot(line["size"], line.value, marker="o", label=label)
    for model, size in sizes.items():
        ax.annotate(model, (size / 2**20, data[data.model == model].value.min()), fontsize=7)
    ax.set(xlabel="baseline parameter MiB (fp32)", ylabel=f"{task} {metric}", xscale="log")
    if any(s in metric for s in LOWER_IS_BETTER):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def models_table(rows: pd.DataFrame) -> str:
    """Per model: size, embedding share and the load / one-time conversion times."""
    base = rows[rows.method == "baseline"].groupby("model").first().reset_index()
    if "model_param_bytes" not in base:
        return "(no baseline rows with byte counts)"
    cols = ["model", "tie_source", "model_param_bytes", "embedding_bytes", "load_s", "convert_s"]
    base = base[[c for c in cols if c in base]].copy()
    base["embedding_share"] = base.embedding_bytes / base.model_param_bytes
    return base.to_markdown(index=False, floatfmt=".3g")


def build_reports(results_dir: str | Path = "results", reports_dir: str | Path = "reports") -> Path:
    results_dir, reports_dir = Path(results_dir), Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    rows = published_rows(results_dir)
    if rows.empty:
        raise ValueError(f"no rows in the runs listed in {results_dir / 'PUBLISHED'}")
    rows = add_recovery(latest(rows))
    figure = plot_metric_vs_cr(
        rows, "wikitext", "word_perplexity", reports_dir / "wikitext_ppl_vs_cr.png"
    )
    size_figures = [
        plot_metric_vs_model_size(rows, task, metric, reports_dir / f"{task}_{metric}_vs_size.png")
        for task, metric in [("wikitext", "word_perplexity"), ("sst2", "acc")]
    ]
    runs = sorted(rows.run_id.unique())
    devices = sorted(rows.device.unique())
    lines = [
        "# see-bench results",
        "",
        "Generated by `nox -s figures` (`python -m see report`) from the runs listed in "
        "`results/PUBLISHED`; do not edit by hand.",
        "",
        f"- runs: {', '.join(runs)}",
        f"- devices: {', '.join(devices)}",
        f"- git commits: {', '.join(sorted(rows.git_commit.unique()))}",
        "- baselines are the models dequantised from their 4/8-bit GGUF files (fp32).",
        "- `recovery` = compressed / baseline value, inverted for perplexities (1.0 = no loss).",
        "- `head_policy`: `dense` keeps the original dense head (for a tied model this saves "
        "nothing); `shared` computes the head from the compressed module.",
        "",
    ]
    if figure:
        lines += ["## WikiText word perplexity vs compression ratio", "", f"![]({figure.name})", ""]
    size_figures = [f for f in size_figures if f]
    if size_figures:
        lines += ["## Quality vs model size", ""]
        lines += [f"![]({f.name})" for f in size_figures] + [""]
    lines += ["## Models", "", models_table(rows), ""]
    lines += ["## Quality", "", quality_table(rows), ""]
    out = reports_dir / "README.md"
    out.write_text("\n".join(lines))
    return out
