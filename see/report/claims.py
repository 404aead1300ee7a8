"""The papers' claims as data, checked against published rows in the setting each was made in.

A claim compares method A with its default decisions (options that set only fit budgets are
allowed) against method B (the same, or the baseline) on one task and metric, cell by cell:
same run, model, CR, head policy, seed and healing stage. `better`: A's value is better than
B's; `within`: A loses at most `factor` of B's quality (ratio of values, inverted where lower
is better). `setting` is where the paper made the claim: `initial` (no training after
compression), `healed` (after training the compressed model: the SEE paper's two-stage
training), `finetuned` (after fine-tuning on each task: the autoencoder paper's GLUE/SQuAD
protocol). Rows of another setting never test a claim; a claim without rows in its setting is
listed as not tested. The caller passes rows with the current defaults only (superseded runs
stay in the archive).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

LOWER_IS_BETTER = ("perplexity", "bits_per_byte")  # rows written before `higher_is_better`


@dataclass(frozen=True)
class Claim:
    paper: str
    statement: str
    method: str
    versus: str
    relation: str  # "better" or "within"
    factor: float = 1.0
    task: str = "wikitext"
    metric: str = "word_perplexity"
    setting: str = "initial"  # initial | healed | finetuned (module docstring)
    paper_budget: str = ""  # the training the paper's claim rests on, shown beside ours


CLAIMS = [
    Claim(
        "Balazy, Banaei et al. 2021",
        "the direction-loss autoencoder beats SVD at the same CR (initial quality)",
        method="autoencoder",
        versus="svd",
        relation="better",
    ),
    *[
        Claim(
            "Balazy, Banaei et al. 2021",
            f"the direction-loss autoencoder beats SVD on {name} after fine-tuning",
            method="autoencoder",
            versus="svd",
            relation="better",
            task=task,
            metric=metric,
            setting="finetuned",
            paper_budget=budget,
        )
        for name, task, metric, budget in [
            ("SST-2", "sst2", "acc", "fine-tuned per task: lr 2e-5, 3 epochs, seq 128 (GLUE)"),
            ("MRPC", "mrpc", "acc", "fine-tuned per task: lr 2e-5, 3 epochs, seq 128 (GLUE)"),
            ("RTE", "rte", "acc", "fine-tuned per task: lr 2e-5, 3 epochs, seq 128 (GLUE)"),
            ("CoLA", "cola", "mcc", "fine-tuned per task: lr 2e-5, 3 epochs, seq 128 (GLUE)"),
            ("SQuAD", "squad_split", "f1", "fine-tuned on SQuAD v1.1 train: lr 3e-5, 3 epochs"),
        ]
    ],
    Claim(
        "Zhang et al. 2024",
        "SEE keeps the model's quality at 10-80x after its two-stage training (within 1.1x "
        "of the baseline)",
        method="see",
        versus="baseline",
        relation="within",
        factor=1.1,
        setting="healed",
        paper_budget="two-stage training (alignment, then task training) to convergence",
    ),
    Claim(
        "Zhang et al. 2024",
        "SEE beats word2ketXS, the same Kronecker structure without linguistic units, after "
        "training",
        method="see",
        versus="word2ketxs",
        relation="better",
        setting="healed",
        paper_budget="two-stage training to convergence",
    ),
    Claim(
        "Zhang et al. 2024",
        "sememes add to morphemes: SEE beats its morpheme-only ablation after training",
        method="see",
        versus="see_morph",
        relation="better",
        setting="healed",
        paper_budget="two-stage training to convergence",
    ),
]
SETTINGS = ("initial", "healed", "finetuned")

BUDGET_OPTIONS = ("steps", "batch_tokens", "epochs")


def default_decisions(options: str) -> bool:
    """True when a `method_options` text sets only fit budgets (an ablation sets more)."""
    return all(o.split("=")[0] in BUDGET_OPTIONS for o in options.split(",") if o)


CELL = ["run_id", "model", "target_cr", "head_policy", "seed", "heal_stage"]


def lower_is_better(rows: pd.DataFrame) -> pd.Series:
    """lm-eval's `higher_is_better` stored in the row; older rows: by metric name."""
    by_name = rows.metric.fillna("").str.contains("|".join(LOWER_IS_BETTER))
    if "higher_is_better" not in rows:
        return by_name
    stored = rows.higher_is_better
    return (stored == False).where(stored.notna(), by_name).astype(bool)  # noqa: E712


def check_claim(claim: Claim, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per compared cell: A's and B's value, the quality ratio and whether it holds."""
    data = rows[
        (rows.task == claim.task)
        & (rows.metric == claim.metric)
        & rows.value.notna()
        & rows.method_options.fillna("").map(default_decisions).astype(bool)
    ]
    data = data.reindex(columns=data.columns.union(["finetune_config"], sort=False))
    data = data[in_setting(data, claim.setting) | (data.method == "baseline")]
    ours = data[data.method == claim.method]
    if ours.empty:
        return pd.DataFrame()
    theirs = data[data.method == claim.versus]
    keys = CELL if claim.versus != "baseline" else ["run_id", "model", "seed"]
    if claim.versus == "baseline":
        theirs = theirs[theirs.heal_stage == "initial"]
    pairs = ours.merge(theirs[[*keys, "value"]], on=keys, suffixes=("", "_versus"))
    if pairs.empty:
        return pd.DataFrame()
    lower = lower_is_better(pairs)
    # quality of A relative to B (1 = equal, < 1 = A is worse)
    ratio = (pairs.value_versus / pairs.value).where(lower, pairs.value / pairs.value_versus)
    holds = ratio > 1 if claim.relation == "better" else ratio >= 1 / claim.factor
    return pairs.assign(quality_ratio=ratio, holds=holds)[
        [*CELL, "value", "value_versus", "quality_ratio", "holds"]
    ]


def in_setting(rows: pd.DataFrame, setting: str) -> pd.Series:
    """Rows measured in a claim's setting: initial (no training after compression), healed
    (a healing stage, no task fine-tuning), finetuned (a task fine-tuning budget)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown claim setting {setting!r}; allowed: {SETTINGS}")
    finetuned = rows.finetune_config.notna()
    if setting == "finetuned":
        return finetuned
    initial = rows.heal_stage.fillna("initial") == "initial"
    return (initial if setting == "initial" else ~initial) & ~finetuned


def claims_markdown(rows: pd.DataFrame) -> str | None:
    """Per claim: its setting, where it was checked, how often it holds, and the table of
    cells; a claim with no rows in its setting is listed as not tested."""
    parts = []
    for claim in CLAIMS:
        checked = check_claim(claim, rows)
        head = f"**{claim.paper}: {claim.statement}.** Setting: {claim.setting}" + (
            f" (paper: {claim.paper_budget})" if claim.paper_budget else ""
        )
        if checked.empty:
            parts += [f"{head}. Not tested: no {claim.setting} rows with current defaults.", ""]
            continue
        held = int(checked.holds.sum())
        parts += [
            f"{head}. `{claim.method}` vs `{claim.versus}` (default options), {claim.task} "
            f"{claim.metric}: holds in {held} of {len(checked)} cells.",
            "",
            checked.rename(columns={"value_versus": claim.versus, "value": claim.method})
            .sort_values(CELL)
            .to_markdown(index=False, floatfmt=".4g"),
            "",
        ]
    return "\n".join(parts) if parts else None
