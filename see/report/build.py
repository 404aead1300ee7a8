"""reports/README.md and its PNG figures, regenerated from the published results rows."""

from __future__ import annotations

import json
from itertools import cycle
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from see.evaluation.signal import (  # noqa: E402
    NO_CHANCE_TASKS,
    PRIMARY_METRICS,
    informative_cells,
    is_informative,
    signal_table,
)
from see.report.archive import answered, current_rows, index_markdown, preset_of  # noqa: E402
from see.report.bench import compared_to_baseline, newest_run_per_device  # noqa: E402
from see.report.claims import LOWER_IS_BETTER, claims_markdown, lower_is_better  # noqa: E402
from see.report.controls import controls_markdown  # noqa: E402
from see.report.finetuned import finetuned_markdown  # noqa: E402
from see.report.frontier import (  # noqa: E402
    cell_label,
    frontier_cells,
    frontier_markdown,
    newest_runs,
    pareto_front,
)
from see.report.headline import current_defaults, model_tables, update_readme  # noqa: E402
from see.report.healing import (  # noqa: E402
    curve_markdown,
    curve_points,
    healed_frontier,
    healed_frontier_markdown,
    stage_choice_markdown,
    text_choice,
)
from see.report.markdown import markdown_table  # noqa: E402
from see.report.scaling import scaling_markdown, scaling_points  # noqa: E402
from see.report.targets import targets_markdown  # noqa: E402
from see.results import published_rows  # noqa: E402

QUALITY_COLUMNS = [
    "model",
    "task",
    "metric",
    "method",
    "method_options",
    "head_policy",
    "target_cr",
    "heal_stage",
    "reached_cr",
    "value",
    "stderr",
    "recovery",
    "informative",
    "n",
    "limit",
    "embedding_bytes",
    "head_bytes",
    "fit_mean_cos",
]


def latest(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, cell_key, metric, filter): the newest, when a run repeats a cell.

    Runs are kept apart: two presets may measure the same cell (e.g. the same baseline), and
    each run's section shows its own rows."""
    rows = rows.sort_values("timestamp", kind="stable")
    return rows.drop_duplicates(["run_id", "cell_key", "metric", "metric_filter"], keep="last")


def add_recovery(rows: pd.DataFrame) -> pd.DataFrame:
    """recovery = compressed / baseline value of the same run (inverted where lower is better);
    a fine-tuned row against the fine-tuned baseline, every other row against the initial one
    (the baseline is not healed)."""
    keys = ["run_id", "model", "task", "metric", "metric_filter", "limit", "max_length", "dtype"]
    rows = rows.assign(finetuned=rows.heal_stage.eq("finetune"))
    keys.append("finetuned")
    healed = rows.heal_stage.fillna("initial").str.startswith("stage")
    baseline = rows[(rows.method == "baseline") & ~healed]
    base = baseline[[*keys, "value"]].rename(columns={"value": "base"})
    out = rows.merge(base.drop_duplicates(keys), on=keys, how="left")
    lower = lower_is_better(out)
    out["recovery"] = (out.value / out.base).where(~lower, out.base / out.value)
    return out.drop(columns=["base", "finetuned"])


def quality_table(rows: pd.DataFrame) -> str:
    cols = [c for c in QUALITY_COLUMNS if c in rows]
    order = [
        c
        for c in ["model", "task", "metric", "method", "method_options", "target_cr", "heal_stage"]
        if c in rows
    ]
    return rows[cols].sort_values(order).to_markdown(index=False, floatfmt=".4g")


def line_label(method: str, options: str, policy: str) -> str:
    return f"{method}{f' [{options}]' if options else ''} (head {policy})"


def _finish_plot(fig, ax, metric: str, out: Path) -> Path:
    if any(s in metric for s in LOWER_IS_BETTER):
        ax.set_yscale("log")
    # many lines: the legend goes beside the axes, where it hides no point
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")  # "tight" keeps the outside legend whole
    plt.close(fig)
    return out


def task_metrics(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, primary metric: the figure's) of every task with values in `rows`."""
    pairs = []
    for task, sub in rows[rows.value.notna() & rows.metric.notna()].groupby("task", sort=True):
        metrics = list(dict.fromkeys(sub.metric))
        preferred = [m for m in PRIMARY_METRICS if m in metrics]
        pairs.append((task, (preferred or metrics)[0]))
    return pairs


def plot_metric_by_variant(rows: pd.DataFrame, task: str, metric: str, out: Path) -> Path | None:
    """One CR per method: `metric` per method variant as points, the baseline as a line."""
    data = rows[(rows.task == task) & (rows.metric == metric) & rows.value.notna()]
    variants = data[data.method != "baseline"]
    if variants.empty:
        return None
    labels = variants.apply(
        lambda r: (
            f"{r.model} {line_label(r.method, r.method_options, r.head_policy)} "
            f"CR {r.target_cr:g} {r.heal_stage}"
        ),
        axis=1,
    )
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(variants) + 1.5))
    ax.scatter(variants.value, labels, s=20, zorder=2)
    for model, value in data[data.method == "baseline"].groupby("model").value.first().items():
        ax.axvline(value, color="black", linestyle="--", label=f"{model} baseline")
    ax.set(xlabel=f"{task} {metric}")
    if any(s in metric for s in LOWER_IS_BETTER):
        ax.set_xscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_metric_vs_cr(rows: pd.DataFrame, task: str, metric: str, out: Path) -> Path | None:
    """One panel per model: `metric` vs target CR (initial quality), a line per method variant."""
    data = rows[(rows.task == task) & (rows.metric == metric) & (rows.heal_stage == "initial")]
    if data[data.method != "baseline"].target_cr.nunique() < 2:
        return None
    models = sorted(data.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models) + 4, 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sub = data[data.model == model]
        groups = sub[sub.method != "baseline"].groupby(["method", "method_options", "head_policy"])
        for (method, options, policy), line in groups:
            line = line.sort_values("target_cr")
            ax.plot(
                line.target_cr, line.value, marker="o", label=line_label(method, options, policy)
            )
        for value in sub[sub.method == "baseline"].value:
            ax.axhline(value, color="black", linestyle="--", label="baseline")
        ax.set(title=model, xlabel="target compression ratio", ylabel=f"{task} {metric}")
        ax.set_xscale("log")
        ratios = sorted(sub[sub.method != "baseline"].target_cr.unique())
        ax.set_xticks(ratios, labels=[f"{r:g}" for r in ratios], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if len(models) > 1:
            _ = ax.legend(fontsize=7)
    return _finish_plot(fig, axes[0][-1], metric, out)


def plot_healing(rows: pd.DataFrame, task: str, metric: str, out: Path) -> Path | None:
    """`metric` at initial / stage1 / stage2, a line per (model, method variant, CR)."""
    data = rows[(rows.task == task) & (rows.metric == metric) & (rows.method != "baseline")]
    if data.heal_stage.nunique() < 2:
        return None
    order = {"initial": 0, "stage1": 1, "stage2": 2}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for (model, method, options, cr), line in data.groupby(
        ["model", "method", "method_options", "target_cr"]
    ):
        line = line.assign(pos=line.heal_stage.map(order)).sort_values("pos")
        ax.plot(
            line.pos,
            line.value,
            marker="o",
            label=f"{model} {method}{options and f' [{options}]'} CR {cr:g}",
        )
    base = rows[(rows.method == "baseline") & (rows.task == task) & (rows.metric == metric)]
    for model, value in base.groupby("model").value.first().items():
        ax.axhline(value, color="black", linestyle="--", label=f"{model} baseline")
    ax.set_xticks(list(order.values()), labels=list(order))
    ax.set(xlabel="healing stage", ylabel=f"{task} {metric}")
    return _finish_plot(fig, ax, metric, out)


def size_points(rows: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """The points of `plot_metric_vs_model_size`: baselines and every method with its default
    options at CR 10 (dense head, initial), from runs that measure the task on two models or
    more: a run about one model (a control, a sweep) scores its own documents, and its points
    would not compare across sizes."""
    data = rows[
        (rows.task == task)
        & (rows.metric == metric)
        & (rows.heal_stage == "initial")
        & rows.value.notna()
        & ((rows.method == "baseline") | ((rows.target_cr == 10) & (rows.method_options == "")))
        & (rows.head_policy.fillna("dense") == "dense")
    ]
    return data[data.groupby("run_id").model.transform("nunique") >= 2]


def plot_metric_vs_model_size(rows: pd.DataFrame, task: str, metric: str, out: Path):
    """`metric` vs the baseline model's parameter bytes (`size_points`), a point per run, a
    colour per method."""
    if "model_param_bytes" not in rows:
        return None
    data = size_points(rows, task, metric)
    sizes = rows[rows.method == "baseline"].groupby("model").model_param_bytes.first()
    data = data[data.model.isin(sizes.index)]
    if data.model.nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    # points, not lines: runs differ in limits and variants, so joining models would mislead
    for i, (method, group) in enumerate(data.groupby("method")):
        color = "black" if method == "baseline" else f"C{i}"
        label = method if method == "baseline" else f"{method} CR 10"
        ax.scatter(group.model.map(sizes) / 2**20, group.value, s=18, color=color, label=label)
    for model, size in sizes.items():
        ax.annotate(model, (size / 2**20, data[data.model == model].value.min()), fontsize=7)
    ax.set(xlabel="baseline parameter MiB (fp32)", ylabel=f"{task} {metric}", xscale="log")
    return _finish_plot(fig, ax, metric, out)


def plot_recovery_vs_size(points: pd.DataFrame, task: str, metric: str, out: Path) -> Path:
    """Recovery vs model parameters (`scaling_points`), a line per (method, ratio)."""
    fig, ax = plt.subplots(figsize=(9, 4))
    for (method, ratio), group in points.groupby(["method", "ratio"], sort=True):
        ax.errorbar(
            group.params,
            group.recovery,
            yerr=group.recovery_stderr.fillna(0),
            marker="o",
            capsize=3,
            label=f"{method} {ratio:g}x",
        )
    ax.axhline(1.0, color="black", lw=1, label="no loss")
    ax.set(xlabel="model parameters", ylabel=f"{task} {metric} {points.measure.iloc[0]}")
    ax.set_xscale("log")
    if (points.recovery > 0).all():  # above chance a method can score below chance
        ax.set_yscale("log")
    return _finish_plot(fig, ax, metric, out)


def scaling_section(rows: pd.DataFrame, reports_dir: Path, signal: dict) -> list[str]:
    """'Do larger models lose less?': a figure and a table per task with two or more sizes."""
    lines = []
    for task, metric in task_metrics(rows):
        chance = {
            model: tasks[task]["chance"]
            for model, tasks in signal.items()
            if tasks.get(task, {}).get("chance") is not None
        }
        points = scaling_points(rows, task, metric, chance)
        if points.empty:
            continue
        out = reports_dir / f"{task}_recovery_vs_size.png"
        figure = plot_recovery_vs_size(points, task, metric, out)
        heading = f"### {task} {metric}: {points.measure.iloc[0]}"
        lines += [heading, "", f"![]({figure.name})", "", scaling_markdown(points), ""]
    if not lines:
        return []
    intro = (
        "Recovery (compressed / baseline, inverted for perplexities) at each model size, "
        "methods with their default options, initial quality, informative tasks only, from "
        "the run with the most models per task; on accuracy tasks above chance, (compressed "
        "- chance) / (baseline - chance) with the signal table's chance level, since a "
        "baseline near chance gives every method a plain recovery near 1; see "
        "see/report/scaling.py."
    )
    return ["## Do larger models lose less? (issue 20)", "", intro, "", *lines]


def status_table(rows: pd.DataFrame) -> str | None:
    """Cells with no value: unreachable CRs and tasks skipped offline, with the reason."""
    if "status" not in rows or rows.status.isna().all():
        return None
    cols = ["model", "method", "method_options", "target_cr", "task", "status", "note"]
    data = rows[rows.status.notna()][cols].drop_duplicates()
    return data.sort_values(cols[:5]).to_markdown(index=False)


def mapping_table(rows: pd.DataFrame) -> str | None:
    """SEE's token -> unit mapping report: a line per model, method and distinct mapping (the
    first variant that produced it)."""
    cols = [c for c in rows if c.startswith("map_") and c != "map_sememe_source"]
    data = rows[rows.method.isin(["see", "see_morph"]) & rows.value.notna()]
    if not cols or data.empty:
        return None
    keys = ["model", "method", "method_options", "sememe_source"]
    data = data[keys + cols].drop_duplicates(["model", "method", "sememe_source", *cols])
    return data.rename(columns=lambda c: c.removeprefix("map_")).to_markdown(
        index=False, floatfmt=".3g"
    )


def ppl_pivot(rows: pd.DataFrame) -> str | None:
    """WikiText word perplexity as a variant x CR matrix (the quality table, compact)."""
    ppl = rows[(rows.task == "wikitext") & (rows.metric == "word_perplexity") & rows.value.notna()]
    if ppl.target_cr.nunique() < 2:
        return None
    index = ["model", "method", "method_options", "head_policy", "heal_stage", "seed"]
    table = ppl.pivot_table(index=index, columns="target_cr", values="value", aggfunc="last")
    table.columns = [f"CR {c:g}" for c in table.columns]
    return table.reset_index().to_markdown(index=False, floatfmt=".4g")


def models_table(rows: pd.DataFrame) -> str:
    """Per model: size, embedding share and the load / one-time conversion times."""
    base = rows[rows.method == "baseline"].groupby("model").first().reset_index()
    if "model_param_bytes" not in base:
        return "(no baseline rows with byte counts)"
    cols = ["model", "tie_source", "model_param_bytes", "embedding_bytes", "load_s", "convert_s"]
    base = base[[c for c in cols if c in base]].copy()
    base["embedding_share"] = base.embedding_bytes / base.model_param_bytes
    return base.to_markdown(index=False, floatfmt=".3g")


def plot_bench(bench: pd.DataFrame, column: str, label: str, out: Path) -> Path | None:
    """`column` vs target CR: a panel per bench point, a colour per method, a line style per
    (device, model, head policy) (each device's newest run only: no line joins two runs)."""
    data = bench[bench.method != "baseline"]
    if data.empty or data.target_cr.nunique() < 2:
        return None
    points = (
        data[["bench", "batch", "seq"]].drop_duplicates().sort_values(["bench", "batch", "seq"])
    )
    methods = sorted(data.method.unique())
    colours = dict(
        zip(methods, cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), strict=False)
    )
    setting = data.device + " " + data.model + " head " + data.head_policy
    styles = dict(zip(sorted(setting.unique()), cycle(["-", "--", ":", "-."]), strict=False))
    fig, axes = plt.subplots(1, len(points), figsize=(5 * len(points), 4.5), squeeze=False)
    for ax, (point, batch, seq) in zip(axes[0], points.itertuples(index=False), strict=True):
        panel = data[(data.bench == point) & (data.batch == batch) & (data.seq == seq)]
        for (where, method), line in panel.groupby([setting[panel.index], "method"]):
            line = line.sort_values("target_cr")
            ax.plot(line.target_cr, line[column], styles[where], marker="o", color=colours[method])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set(
            title=f"{point} {int(batch)}x{int(seq)}",
            xlabel="target compression ratio",
            xscale="log",
        )
        ratios = sorted(panel.target_cr.unique())
        ax.set_xticks(ratios, labels=[f"{r:.3g}" for r in ratios], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0][0].set_ylabel(f"{label} (baseline = 1)")
    handles = [plt.Line2D([], [], color=colours[m], marker="o", label=m) for m in methods]
    handles += [plt.Line2D([], [], color="grey", linestyle=st, label=d) for d, st in styles.items()]
    fig.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def bench_section(rows: pd.DataFrame, reports_dir: Path) -> list[str]:
    bench = rows[rows.task == "bench"]
    if bench.empty:
        return []
    bench, older = newest_run_per_device(bench)
    table = compared_to_baseline(bench[bench.status == "ok"])
    runs = ", ".join(
        f"{device}: {run}" for device, run in bench.groupby("device").run_id.first().items()
    )
    lines = [
        "## Memory and throughput",
        "",
        f"The newest published run per device ({runs}); older published runs, not shown: "
        f"{', '.join(older) or 'none'}. Ratios are to the baseline "
        "measured in the same run. memory_vs_param_saving = peak-memory saving / parameter "
        "bytes saved (1 = all of it shows at run time). On CPU, peak memory is the process's "
        "resident high-water mark (VmHWM, reset before each point).",
        "",
    ]
    plots = [
        ("speed_ratio", "tokens/s relative to baseline", "speed"),
        ("param_bytes_ratio", "model parameter bytes / baseline", "bytes"),
        ("peak_memory_ratio", "peak memory / baseline", "memory"),
    ]
    for column, label, name in plots:
        figure = plot_bench(table, column, label, reports_dir / f"bench_{name}_vs_cr.png")
        if figure:
            lines += [f"![{label}]({figure.name})", ""]
    cols = [
        "run_id",
        "model",
        "method",
        "method_options",
        "target_cr",
        "head_policy",
        "bench",
        "batch",
        "seq",
        "tokens_per_s",
        "iqr_s",
        "speed_ratio",
        "embedding_bytes",
        "head_bytes",
        "model_param_bytes",
        "param_bytes_ratio",
        "peak_memory_bytes",
        "memory_vs_param_saving",
        "device",
    ]
    order = ["run_id", "model", "bench", "batch", "seq", "method", "method_options", "target_cr"]
    lines += [table[cols].sort_values(order).to_markdown(index=False, floatfmt=".4g"), ""]
    return lines


def heal_speed_section(rows: pd.DataFrame) -> list[str]:
    """`python -m see bench-heal` runs: tokens/s per variant, the speed-up over its stage's
    first variant (the old default), and token perplexity on the validation slice after it."""
    if rows.empty:
        return []
    table = rows.sort_values("timestamp", kind="stable").copy()  # rows of one run share a stamp
    first = table.groupby(["run_id", "stage"]).tokens_per_s.transform("first")
    table["speedup"] = table.tokens_per_s / first
    # what each variant really ran, from its recorded config: the names alone once hid that
    # unnamed levers followed HealConfig's defaults (runs 20261205-053731, -071237 compiled all)
    settings = table.heal_config.map(lambda text: json.loads(text) if isinstance(text, str) else {})
    for lever in ("compile", "autocast", "teacher_top_k"):
        table[lever] = settings.map(lambda config, lever=lever: config.get(lever))
    cols = [
        "run_id",
        "model",
        "method",
        "target_cr",
        "variant",
        "compile",
        "autocast",
        "teacher_top_k",
        "omp_wait_policy",
        "heal_tokens",
        "tokens_per_s",
        "speedup",
        "warmup_s",
        "initial_token_ppl",
        "validation_token_ppl",
        "device",
    ]
    cols = [c for c in cols if c in table]
    return [
        "## Healing speed (bench-heal, issue 18)",
        "",
        "Same machine, same run, same starting module per variant; `validation_token_ppl` "
        "is on the first 2,048 WikiText-2 validation tokens (the healing text itself) after "
        "the timed steps; `speedup` is over the stage's first variant (the old default); "
        "`warmup_s` is the untimed first step (with torch.compile, the compile; recorded "
        "since run 20261205-021022-bench-heal); `compile`, `autocast` and `teacher_top_k` "
        "are what the variant ran, from its recorded config.",
        "",
        markdown_table(table[cols]),  # older runs have no warmup_s: "-"
        "",
    ]


def prefix_section(rows: pd.DataFrame) -> list[str]:
    """The prefix probe (see/evaluation/prefix_probe.py): NLL of the same tokens per prefix."""
    if rows.empty:
        return []
    shown = rows.assign(prefix=rows.prefix.str.replace("|", "\\|"))  # `<|...|>` in a table
    table = shown.pivot_table(index=["model", "doc", "prefix"], columns="method", values="nll")
    table["int4 / baseline"] = table["int4"] / table["baseline"]
    return [
        "## Which token leads a WikiText window (prefix probe, issue 38)",
        "",
        "Summed NLL of each document's first window (the same target tokens) led by each "
        "prefix token, for the baseline table and int4 of it (runs: "
        f"{', '.join(sorted(rows.run_id.unique()))}).",
        "",
        markdown_table(table.reset_index()),
        "",
    ]


def heldout_section(rows: pd.DataFrame) -> list[str]:
    """Option sweeps on held-out text (see/evaluation/heldout_sweep.py): how each option
    table scores against the baseline, in domain (WikiText-2 validation's second half) and
    out of it (GLUE train sentences), with token counts from validation's first half."""
    if rows.empty:
        return []
    table = rows.pivot_table(
        index=["run_id", "model", "method", "target_cr", "options", "counts", "byte_cr"],
        columns="text",
        values="ratio_to_baseline",
    ).reset_index()
    return [
        "## Options measured on held-out text (heldout-sweep, issue 40)",
        "",
        "Token perplexity over the baseline's on text no fit or report uses: the second half of "
        "WikiText-2 validation (`wikitext_valid_b`; counts come from the first half) and GLUE "
        "*train* sentences (MRPC news, SST-2 film reviews: out of domain). `options` are the "
        "options given; runs before 20261206-1030 ran under pq's old defaults (their NOTE.md).",
        "",
        markdown_table(table.sort_values(["run_id", "method", "target_cr"])),
        "",
    ]


def contention_section(rows: pd.DataFrame) -> list[str]:
    """`python -m see bench-contention` runs: a cell alone and beside one busy process."""
    if rows.empty:
        return []
    cols = ["run_id", "preset", "setting", "torch_threads", "omp_wait_policy", "cores"]
    cols += ["alone_s", "beside_busy_s", "slowdown", "device"]
    return [
        "## Shared machine: one busy neighbour (bench-contention, issue 19)",
        "",
        "The preset's first cell (model load included) alone and beside `python -c "
        '"while True: pass"`, a fresh process per measurement; `slowdown` = beside / alone, '
        "same setting (target: at most 2.5x). `passive` is the default (see see/runtime.py).",
        "",
        rows.sort_values("timestamp", kind="stable")[cols].to_markdown(index=False, floatfmt=".3g"),
        "",
    ]


def plot_pareto(rows: pd.DataFrame, out: Path) -> Path | None:
    """Initial WikiText word perplexity vs embedding-module bytes, every cell of every run."""
    data = rows[
        (rows.task == "wikitext")
        & (rows.metric == "word_perplexity")
        & (rows.heal_stage == "initial")
        & rows.value.notna()
    ]
    if data.method.nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = {m: f"C{i}" for i, m in enumerate(sorted(data.method.unique()))}
    markers = dict(zip(sorted(data.model.unique()), "osD^v<>", strict=False))
    for (model, method), group in data.groupby(["model", "method"]):
        ax.scatter(
            group.embedding_bytes / 2**20,
            group.value,
            label=f"{model} {method}",
            s=18,
            color=colors[method],
            marker=markers.get(model, "o"),
        )
    ax.set(xlabel="embedding module MiB", ylabel="WikiText word perplexity (initial)", xscale="log")
    return _finish_plot(fig, ax, "word_perplexity", out)


def plot_frontier(rows: pd.DataFrame, out: Path) -> Path | None:
    """Frontier runs: word perplexity vs byte ratio, a panel per model, Pareto points joined."""
    cells = newest_runs(frontier_cells(rows))
    if cells.empty:
        return None
    cells = cells.assign(label=cells.apply(cell_label, axis=1))
    models = sorted(cells.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models) + 2, 4.5), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(sorted(cells.label.unique()))}
    for ax, model in zip(axes[0], models, strict=True):
        sub = cells[cells.model == model]
        for label, group in sub[sub.method != "baseline"].groupby("label"):
            marker = "^" if label != group.method.iloc[0] else "o"  # variants: triangles
            ax.scatter(
                group.byte_cr, group.word_ppl, s=22, color=colors[label], marker=marker, label=label
            )
        front = pareto_front(sub[sub.method != "baseline"])
        ax.plot(front.byte_cr, front.word_ppl, color="grey", lw=1, zorder=0, label="Pareto front")
        for value in sub[sub.method == "baseline"].word_ppl:
            ax.axhline(value, color="black", ls="--", lw=1, label="baseline (fp32)")
        ax.set(
            title=model,
            xscale="log",
            yscale="log",
            xlabel="byte ratio (fp32 table bytes / stored bytes)",
            ylabel="WikiText word perplexity (initial)",
        )
        ticks = sorted({1, 2, 4, 10, 20, 40, 80, 160} | {round(x) for x in sub.target_cr})
        ax.set_xticks([t for t in ticks if sub.byte_cr.min() * 0.9 <= t <= sub.byte_cr.max() * 1.1])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    handles, labels = axes[0][-1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_heal_curves(points: pd.DataFrame, out: Path) -> Path | None:
    """Word perplexity vs healing tokens (log-log; the initial point drawn at 0 on a symlog
    axis), a line per (method, CR), the baseline as a dashed line; a panel per model."""
    if points.empty:
        return None
    models = sorted(points.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models) + 2, 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sub = points[points.model == model]
        with_stage1 = set(sub[sub.heal_stage == "stage1"].run_id)
        for (method, options, cr, run), curve in sub[sub.method != "baseline"].groupby(
            ["method", "method_options", "target_cr", "run_id"]
        ):
            stages = "stage 1 + 2" if run in with_stage1 else "stage 2 alone"
            label = (
                f"{method}{f' [{options}]' if options else ''} CR {cr:g}, {stages} "
                f"({preset_of(run)})"
            )
            style = "-" if run in with_stage1 else ":"
            ax.plot(curve.tokens, curve.value, style, marker="o", ms=3, label=label)
        for value in sub[sub.method == "baseline"].value.unique():
            ax.axhline(value, color="black", ls="--", lw=1, label="baseline")
        ax.set_xscale("symlog", linthresh=1024)
        ax.set_xlim(left=0)
        ax.set(
            title=model,
            yscale="log",
            xlabel="healing tokens (stage 1 + stage 2)",
            ylabel="WikiText word perplexity",
        )
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_healed_frontier(points: pd.DataFrame, out: Path) -> Path | None:
    """Word perplexity over the baseline vs byte ratio, a line per healing budget (the best
    method at each byte budget, named at its point): the frontier moving down as tokens grow."""
    table = healed_frontier(points)
    if table.empty:
        return None
    models = sorted(table.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models) + 1, 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for tokens, line in table[table.model == model].groupby("tokens"):
            line = line.sort_values("target_cr")
            ax.plot(line.target_cr, line.best_ratio, marker="o", label=f"{tokens:,} tokens")
            for cr, ratio, method in zip(
                line.target_cr, line.best_ratio, line.best_method, strict=True
            ):
                ax.annotate(
                    method, (cr, ratio), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        ax.axhline(1.0, color="black", ls="--", lw=1)
        ax.set(
            title=model,
            xscale="log",
            yscale="log",
            xlabel="fp32 bytes / stored bytes",
            ylabel="best word perplexity / baseline",
        )
        ax.legend(fontsize=7, title="healing")
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def page_head(run_id: str) -> list[str]:
    """The top of a run's archive page."""
    return [
        f"# Run `{run_id}` (preset `{preset_of(run_id)}`)",
        "",
        "[Archive index](README.md) · [current findings](../README.md)",
        "",
    ]


def run_section(rows: pd.DataFrame, run_id: str, reports_dir: Path) -> list[str]:
    sub = rows[rows.run_id == run_id]
    lines = [
        *page_head(run_id),
        f"Devices: {', '.join(sorted(sub.device.unique()))}.",
        "",
    ]
    # figures named by run, not preset: two runs of one preset keep their own plots
    initial = sub[sub.heal_stage == "initial"]
    for task, metric in task_metrics(initial):
        out = reports_dir / f"{run_id}_{task}_{metric}.png"
        figure = plot_metric_vs_cr(initial, task, metric, out) or plot_metric_by_variant(
            initial, task, metric, out
        )
        if figure:
            lines += [f"![{task} {metric}]({figure.name})", ""]
    healing = plot_healing(
        sub, "wikitext", "word_perplexity", reports_dir / f"{run_id}_healing.png"
    )
    if healing:
        lines += [f"![WikiText word perplexity by healing stage]({healing.name})", ""]
    valued = sub[sub.value.notna()] if "value" in sub else sub
    lines += [quality_table(valued), ""]
    for title, table in [
        ("WikiText word perplexity by compression ratio", ppl_pivot(sub)),
        ("Not evaluated", status_table(sub)),
        ("SEE token -> unit mapping", mapping_table(sub)),
    ]:
        if table:
            lines += [f"## {title}", "", table, ""]
    return lines


def other_run_page(run_id: str) -> list[str]:
    """The archive page of a run that is not a grid of quality cells."""
    return [
        *page_head(run_id),
        answered(run_id),
        "",
        f"Its rows: `results/runs/{run_id}/rows.jsonl`. The report's sections on memory and "
        "throughput, healing speed, the shared machine, which tasks can rank methods and the "
        "prefix probe read the newest such runs.",
        "",
    ]


def signal_of(signal_rows: pd.DataFrame, results_dir: Path) -> dict:
    """model -> task -> entry of the signal table, from published `signal` runs' rows, run by
    run as `python -m see signal` updates it: a (model, task) whose few-shot settings are not
    all measured yet and none informative has no entry (the presets refuse it too)."""
    if signal_rows.empty:
        return {}
    measured = signal_rows[signal_rows.value.notna() & (signal_rows.primary == True)]  # noqa: E712
    table: dict[str, dict] = {}
    for run_id, run_rows in sorted(measured.groupby("run_id")):
        config = json.loads((results_dir / "runs" / run_id / "config.json").read_text())
        records = run_rows.astype(object).where(run_rows.notna(), None).to_dict("records")
        for model, entries in signal_table(records, tuple(config["fewshots"])).items():
            table.setdefault(model, {}).update(entries)
    return table


def mark_informative(rows: pd.DataFrame, table: dict) -> pd.DataFrame:
    """`informative` per row: "yes" / "no" / "unmeasured"; perplexity tasks are always "yes".
    "no" where the signal table says the baseline is within 2 stderr of chance on the model's
    held-out documents, and also where the run's own baseline is, on the documents the run
    scored (`at_chance_in_run`): the table decides on other documents, and a run whose
    baseline is at chance ranks nothing whatever the table says."""
    cells = informative_cells(table)
    at_chance = at_chance_in_run(rows)

    def mark(run_id: str, model: str, task: str) -> str:
        if task in NO_CHANCE_TASKS:
            return "yes"
        if (run_id, model, task) in at_chance:
            return "no"
        return {True: "yes", False: "no"}.get(cells.get((model, task)), "unmeasured")

    marks = [mark(*cell) for cell in zip(rows.run_id, rows.model, rows.task, strict=True)]
    return rows.assign(informative=marks)


def at_chance_in_run(rows: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(run_id, model, task) whose baseline row in that run, where it knows its chance level
    (the best constant answer on the same documents), beats it by no more than 2 stderr."""
    if "chance" not in rows:
        return set()
    baseline = rows[(rows.method == "baseline") & rows.chance.notna() & rows.value.notna()]
    return {
        (r.run_id, r.model, r.task)
        for r in baseline.itertuples()
        if not is_informative(r.value, None if pd.isna(r.stderr) else r.stderr, r.chance)
    }


def signal_section(table: dict) -> list[str]:
    if not table:
        return []
    lines = [
        {"model": model, "task": task, **item}
        for model, tasks in table.items()
        for task, item in tasks.items()
    ]
    return [
        "## Which tasks can rank methods (issue 20)",
        "",
        "The baseline on the last documents of each task's evaluation split (reports use the "
        "first ones) against chance, the best constant answer on the same documents; "
        "informative = more than 2 stderr above chance, zero-shot where it is, else the first "
        "few-shot setting that is (see/evaluation/signal.py). Uninformative (model, task) "
        "cells are marked `informative = no` in every table below and rank nothing.",
        "",
        pd.DataFrame(lines).to_markdown(index=False, floatfmt=".4g"),
        "",
    ]


def build_reports(
    results_dir: str | Path = "results",
    reports_dir: str | Path = "reports",
    runs: list[str] | None = None,
    readme: str | Path | None = None,
) -> Path:
    """reports_dir/README.md and its figures from the runs in results/PUBLISHED (or `runs`);
    with `readme`, also the headline table between its markers (see/report/headline.py)."""
    results_dir, reports_dir = Path(results_dir), Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    archive = reports_dir / "runs"
    archive.mkdir(exist_ok=True)
    # reports/ is generated: no figure or page outlives its data. The old ones go only once the
    # build has succeeded, so a build that fails leaves the last reports, not an empty folder.
    generated = [*reports_dir.glob("*.png"), *archive.glob("*.png"), *archive.glob("*.md")]
    old = {path: path.stat().st_mtime_ns for path in generated}
    rows = published_rows(results_dir, runs)
    if rows.empty:
        raise ValueError(
            f"no rows in the runs {runs or 'listed in ' + str(results_dir / 'PUBLISHED')}"
        )
    published = rows[["run_id", *(["model"] if "model" in rows else [])]].copy()
    for column, default in [("heal_stage", "initial"), ("status", None), ("method_options", "")]:
        if column not in rows:
            rows[column] = default
    needed = ["metric", "metric_filter", "value", "stderr", "limit", "max_length", "n", "seed"]
    rows = rows.reindex(columns=rows.columns.union(needed, sort=False))
    rows["method_options"] = rows.method_options.fillna("")
    bench_rows = rows[rows.task == "bench"]
    heal_speed_rows = rows[rows.task == "bench-heal"]
    contention_rows = rows[rows.task == "contention"]
    probe_rows = rows[rows.task == "prefix-probe"]
    sweep_rows = rows[rows.run_id.str.contains("-heldout-sweep")]
    is_signal = rows.run_id.str.contains("-signal")
    signal = signal_of(rows[is_signal], results_dir)
    others = ["bench", "bench-heal", "contention", "prefix-probe", "heldout-sweep"]
    rows = rows[~rows.task.isin(others) & ~is_signal & ~rows.run_id.isin(sweep_rows.run_id)]
    rows = add_recovery(latest(rows)) if len(rows) else rows.assign(recovery=None)
    rows = mark_informative(rows, signal)
    every_run, rows = rows, current_rows(rows)  # current findings: no superseded run
    size_figures = [
        plot_metric_vs_model_size(rows, task, metric, reports_dir / f"{task}_{metric}_vs_size.png")
        for task, metric in [("wikitext", "word_perplexity"), ("sst2", "acc")]
    ]
    lines = [
        "# see-bench results",
        "",
        "Generated by `nox -s figures` (`python -m see report`) from the runs listed in "
        "`results/PUBLISHED`; do not edit by hand.",
        "",
        "Current findings only: each section reads the published runs no newer run of the "
        "same preset supersedes. Every published run, superseded or not, has its own page in "
        "the archive: [runs/README.md](runs/README.md).",
        "",
        f"- runs: {', '.join(sorted(rows.run_id.unique()))}",
        f"- devices: {', '.join(sorted(rows.device.unique()))}",
        f"- git commits: {', '.join(sorted(rows.git_commit.dropna().unique()))}",
        "- baselines are the models dequantised from their 4/8-bit GGUF files (fp32).",
        "- `recovery` = compressed / baseline value, inverted for perplexities (1.0 = no loss).",
        "- `head_policy`: `dense` keeps the original dense head (for a tied model this saves "
        "nothing); `shared` computes the head from the compressed module.",
        "- `heal_stage`: `initial` = compressed embedding, no training; `stage1`/`stage2` = "
        "after healing (see see/heal.py).",
        "",
    ]
    claimed = claims_markdown(rows[current_defaults(rows)])
    if claimed:
        lines += ["## Paper claims checked (see/report/claims.py)", "", claimed, ""]
    targets = targets_markdown(rows)
    if targets:
        lines += [
            "## SEE targets (issue 16)",
            "",
            "SEE (default options) against plain SVD and the best factorisation method, "
            "initial WikiText word perplexity; targets: see see/report/targets.py.",
            "",
            targets,
            "",
        ]
    per_model = model_tables(rows)
    if per_model:
        lines += [
            "## Every method at every ratio (initial WikiText word perplexity)",
            "",
            "Each method with its current defaults, dense head, no healing; the newest "
            "published run that has the cell (see/report/headline.py).",
            "",
            per_model,
            "",
        ]
    size_figures = [f for f in size_figures if f]
    if size_figures:
        lines += ["## Quality vs model size", ""]
        lines += [f"![]({f.name})" for f in size_figures] + [""]
    lines += scaling_section(rows, reports_dir, signal)
    lines += ["## Models", "", models_table(rows), ""]
    lines += signal_section(signal)
    points = curve_points(rows)  # every healing section reads these
    curves = curve_markdown(points)
    if curves:
        figure = plot_heal_curves(points, reports_dir / "heal_curves.png")
        lines += [
            "## Tokens to recover (issue 18)",
            "",
            "Healing tokens after which WikiText word perplexity is within 2x / 1.5x / "
            "1.1x of the baseline; see see/report/healing.py.",
            "",
            f"![]({figure.name})",
            "",
            curves,
            "",
        ]
        texts = text_choice(rows)
        if len(texts):
            lines += [
                "### Which healing text (issue 41)",
                "",
                "WikiText word perplexity at equal healing tokens with each healing text "
                "(heal-text-* runs), and its paired ratio to healing on WikiText-2 validation "
                "over the same test documents (95% bootstrap; below 1: healed more). `passes`: "
                "how often the budget read the most-read text.",
                "",
                texts.to_markdown(index=False, floatfmt=".4g"),
                "",
            ]
        choice = stage_choice_markdown(points)
        if choice:
            lines += [
                "### Is stage 1 worth its tokens?",
                "",
                "WikiText word perplexity at equal total healing tokens: curve runs with a "
                "stage 1 (its tokens counted) against runs of stage 2 alone.",
                "",
                choice,
                "",
            ]
    lines += finetuned_markdown(rows)
    healed = healed_frontier_markdown(points)
    if healed:
        figure = plot_healed_frontier(points, reports_dir / "healed_frontier.png")
        lines += [
            "## The healed frontier (issue 41)",
            "",
            "After N healing tokens, which method is best at each byte budget? WikiText word "
            "perplexity over the same run's baseline (`heal-frontier` runs; every method healed "
            "with the same budget, text and learning rate); see see/report/healing.py.",
            "",
            f"![]({figure.name})",
            "",
            healed,
            "",
        ]
    frontier = frontier_markdown(rows)
    if frontier:
        figure = plot_frontier(rows, reports_dir / "frontier_ppl_vs_byte_ratio.png")
        lines += [
            "## Quality vs bytes: the frontier (issue 17)",
            "",
            "Best method per byte budget (byte_cr >= budget), by initial WikiText word "
            "perplexity, with its SST-2 / RTE accuracy; see see/report/frontier.py.",
            "",
            f"![]({figure.name})",
            "",
            frontier,
            "",
        ]
    lines += controls_markdown(rows)
    pareto = plot_pareto(rows, reports_dir / "pareto_ppl_vs_embedding_bytes.png")
    if pareto:
        lines += ["## Quality vs embedding bytes (current runs)", "", f"![]({pareto.name})", ""]
    lines += bench_section(bench_rows, reports_dir)
    lines += heal_speed_section(heal_speed_rows)
    lines += contention_section(contention_rows)
    lines += prefix_section(probe_rows)
    lines += heldout_section(sweep_rows)
    grid_runs, has_values = set(every_run.run_id), every_run.value.notna().any()
    for run_id in sorted(published.run_id.unique()):
        if run_id in grid_runs:
            page = run_section(every_run, run_id, archive) if has_values else []
        else:  # bench, bench-heal, contention, signal, prefix-probe: a section of the report
            page = other_run_page(run_id)
        (archive / f"{run_id}.md").write_text("\n".join(page))
    (archive / "README.md").write_text(index_markdown(published))
    out = reports_dir / "README.md"
    out.write_text("\n".join(lines))
    if readme is not None:
        update_readme(Path(readme), rows, every_run)
    for path, written in old.items():  # not written again by this build: stale
        if path.exists() and path.stat().st_mtime_ns == written:
            path.unlink()
    return out
