"""Evaluate an in-memory (compressed) model through lm-eval and turn its results into rows."""

from __future__ import annotations

import logging
import time
from functools import cache
from pathlib import Path

from see.evaluation.tasks import check_task_data, render_tasks, task_hash

# lm-eval warnings we know to be harmless here, by logger: they repeat for every cell.
HARMLESS_WARNINGS = {
    # our offline task YAMLs (see/evaluation/tasks) replace the stock ones on purpose
    "lm_eval.tasks._index": ("overrides existing task",),
    "lm_eval.api.task": (
        # the stock wikitext metric list leaves these to lm-eval's defaults, which are right
        "is defined, but aggregation is not",
        "is defined, but higher_is_better is not",
        # a note about long-context tasks' max_seq_lengths; wikitext does not use it
        "Custom kwargs can be passed to `--metadata`",
    ),
    # we hand HFLM the in-memory compressed model on purpose (single process, no accelerate)
    "lm_eval.models.huggingface": (
        "already-initialized model through `pretrained`",
        "model kwarg is not of type `str`",
    ),
}


class DropHarmless(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@cache
def quiet_harmless_warnings() -> None:
    for name, fragments in HARMLESS_WARNINGS.items():
        logging.getLogger(name).addFilter(DropHarmless(fragments))


@cache
def task_manager(include_path: Path | None):
    from lm_eval.tasks import TaskManager

    quiet_harmless_warnings()
    return TaskManager(include_path=str(include_path) if include_path else None)


def check_tasks(tasks: list[str], limit: int | float | None, data_dir=None) -> Path | None:
    """Validate task names, limit and data files before any model is loaded."""
    if limit is not None and not limit > 0:
        raise ValueError(f"limit must be > 0 (documents, or a fraction), got {limit!r}")
    include_path = render_tasks(data_dir)
    check_task_data(tasks, data_dir)
    known = set(task_manager(include_path).all_subtasks) | set(
        task_manager(include_path).all_groups
    )
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown}; see `lm_eval ls tasks` for names")
    return include_path


def evaluate(
    model,
    tokenizer,
    tasks: list[str],
    *,
    limit: int | float | None = None,
    samples: dict[str, list[int]] | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 1,
    max_length: int = 2048,
    bootstrap_iters: int = 1000,
    seed: int = 0,
    data_dir=None,
) -> list[dict]:
    """Run lm-eval's simple_evaluate on `model`; one dict per (task, metric). `samples`: task
    -> document indices to evaluate instead of the first `limit` ones."""
    import lm_eval

    from see.evaluation.lm_eval_model import TailLogitsHFLM

    include_path = check_tasks(tasks, limit, data_dir)
    quiet_harmless_warnings()
    # HFLM calls model.tie_weights(): a compressed model must not get its head re-tied
    lm = TailLogitsHFLM(
        pretrained=model, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size
    )
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        limit=limit,
        samples=samples,
        num_fewshot=num_fewshot,
        bootstrap_iters=bootstrap_iters,
        task_manager=task_manager(include_path),
        log_samples=True,  # per-document perplexity terms: intervals (see/intervals.py)
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    wall_s = time.perf_counter() - start
    return results_to_rows(out, include_path, wall_s / max(len(out["results"]), 1))


def document_columns(samples: list[dict], metric: str) -> dict:
    """A perplexity metric's per-document terms (loglik, words or bytes) and its bootstrap
    interval over documents; {} for a metric that is not a perplexity."""
    from see.intervals import ITERS, LEVEL, perplexity_interval

    docs = sorted(samples, key=lambda sample: sample["doc_id"])
    terms = [sample.get(metric) for sample in docs]
    if not terms or not all(isinstance(t, list | tuple) and len(t) == 2 for t in terms):
        return {}
    loglik, units = [float(t[0]) for t in terms], [float(t[1]) for t in terms]
    columns = {
        "doc_ids": [int(sample["doc_id"]) for sample in docs],
        "doc_loglik": loglik,
        "doc_units": units,
    }
    if metric.endswith("perplexity"):
        low, high = perplexity_interval(loglik, units)
        columns |= {
            "ci_low": low,
            "ci_high": high,
            "ci": f"{LEVEL:.0%} bootstrap over {len(docs)} documents ({ITERS} resamples)",
        }
    return columns


def choice_columns(samples: list[dict]) -> dict:
    """A multiple-choice task's per-document answers: each choice's log-likelihood and the
    gold choice, so that an accuracy can be checked without a threshold (see.intervals.
    margin_auc: did compression shift the preferred label or change how well the model
    separates them?); {} for a task that is not multiple choice."""
    docs = sorted(samples, key=lambda sample: sample["doc_id"])
    answers = [sample.get("filtered_resps") for sample in docs]
    targets = [sample.get("target") for sample in docs]
    is_choice = all(
        isinstance(answer, list | tuple)
        and len(answer) > 1
        and all(isinstance(choice, list | tuple) and len(choice) == 2 for choice in answer)
        for answer in answers
    )
    if not docs or not is_choice or not all(isinstance(t, int) for t in targets):
        return {}
    return {
        "doc_ids": [int(sample["doc_id"]) for sample in docs],
        "doc_choice_loglik": [[float(choice[0]) for choice in answer] for answer in answers],
        "doc_target": targets,
    }


def chance_column(task: str, metric: str, samples: list[dict]) -> dict:
    """What the best constant answer scores on the evaluated documents (see.evaluation.signal),
    where the metric has a chance level; {} elsewhere."""
    from see.evaluation.chance import chance_level

    labels = [sample.get("target") for sample in samples]
    labels = labels if labels and all(isinstance(label, int) for label in labels) else None
    try:
        chance = chance_level(task, metric, labels)
    except ValueError:
        return {}
    return {} if chance is None else {"chance": chance}


def results_to_rows(out: dict, include_path: Path | None, wall_s: float) -> list[dict]:
    rows = []
    samples = out.get("samples") or {}
    for task, metrics in out["results"].items():
        n = out.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, metric_filter = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{metric_filter}")
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "metric_filter": metric_filter,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "higher_is_better": out.get("higher_is_better", {}).get(task, {}).get(metric),
                    "n": n,
                    "num_fewshot": out.get("n-shot", {}).get(task),
                    "task_hash": task_hash(task, include_path),
                    "task_version": out.get("versions", {}).get(task),
                    "wall_s": wall_s,
                    **document_columns(samples.get(task, []), metric),
                    **choice_columns(samples.get(task, [])),
                    **chance_column(task, metric, samples.get(task, [])),
                }
            )
    return rows
