"""Which tasks can rank compression methods: the uncompressed model against chance.

A task is *informative* for a model when the baseline beats chance on it by more than 2 of
lm-eval's stderr: where it does not, a compressed model's score on it says nothing about the
method. Chance is what the best constant answer scores on the same documents: the majority
label's share for accuracy, 2p / (1 + p) for binary F1 (always answering the positive label,
p = its share), 0 for Matthews correlation and for SQuAD (exact match and F1). Perplexity has
no chance level: WikiText is informative by definition.

`python -m see signal` measures the baseline on the *last* documents of each task's evaluation
split (the reports use the first ones), zero-shot and few-shot, into a run
(`results/runs/<id>-signal`), and writes `benchmarks/tables/signal.toml` from that run's rows:
per (model, task) the chosen `num_fewshot` (zero-shot where it is informative, else the first
few-shot setting that is, else zero-shot marked uninformative), with the numbers behind the
choice and the run they come from. Presets with `num_fewshot = "signal"` read it, and the
report marks the (model, task) cells it calls uninformative. Importing this module imports
no torch (the report uses it); only measuring does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from see.config import BENCHMARKS

SIGNAL_TABLE = BENCHMARKS / "tables" / "signal.toml"  # not a preset: benchmarks/*.toml are
# a task's primary metric: the first of these it reports (the report's figures use the same)
PRIMARY_METRICS = ("word_perplexity", "acc", "f1", "mcc", "exact_match")
ZERO_CHANCE_METRICS = ("mcc", "exact_match")
NO_CHANCE_TASKS = ("wikitext",)  # perplexity: no chance level
ZERO_CHANCE_TASKS = ("squad",)  # generated answers: a constant string scores ~0


def primary_metric(metrics: list[str]) -> str:
    preferred = [m for m in PRIMARY_METRICS if m in metrics]
    return (preferred or metrics)[0]


def chance_level(task: str, metric: str, labels: list[int] | None) -> float | None:
    """What the best constant answer scores on documents with these gold labels."""
    if task in NO_CHANCE_TASKS:
        return None
    if task in ZERO_CHANCE_TASKS or metric in ZERO_CHANCE_METRICS:
        return 0.0
    if not labels:
        raise ValueError(f"chance of {task} {metric} needs the documents' gold labels")
    shares = {label: labels.count(label) / len(labels) for label in set(labels)}
    if metric == "acc":
        return max(shares.values())
    if metric == "f1":
        positive = shares.get(1, 0.0)
        return 2 * positive / (1 + positive)
    raise ValueError(f"no chance level for {task} metric {metric!r}; known: acc, f1, mcc")


def is_informative(value: float, stderr: float | None, chance: float | None) -> bool:
    """The baseline beats chance by more than 2 stderr (perplexity: always)."""
    if chance is None:
        return True
    if stderr is None:
        return False  # no stderr, no evidence
    return value - chance > 2 * stderr


def choose(measured: list[dict]) -> dict:
    """Rows of one (model, task), one per num_fewshot, each with value, stderr, chance ->
    the table entry: zero-shot if informative, else the first informative few-shot one."""
    ordered = sorted(measured, key=lambda r: r["num_fewshot"] or 0)
    for row in ordered:
        if is_informative(row["value"], row["stderr"], row["chance"]):
            return entry(row, True)
    return entry(ordered[0], False)


def entry(row: dict, informative: bool) -> dict:
    keep = ("metric", "value", "stderr", "chance", "docs", "run_id")
    return {
        "num_fewshot": int(row["num_fewshot"] or 0),
        "informative": informative,
        **{k: row[k] for k in keep if row.get(k) is not None},
    }


def signal_table(
    rows: list[dict], fewshots: tuple[int, ...] | None = None
) -> dict[str, dict[str, dict]]:
    """model -> task -> entry, from the primary-metric rows of a signal run. With `fewshots`
    (the settings the run tries), a (model, task) whose measurement is unfinished (no
    informative setting yet and some settings still to measure) has no entry."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("value") is not None and row.get("primary"):
            groups.setdefault((row["model"], row["task"]), []).append(row)
    table: dict[str, dict[str, dict]] = {}
    for (model, task), measured in sorted(groups.items()):
        entry = choose(measured)
        measured_shots = {int(r["num_fewshot"] or 0) for r in measured}
        if fewshots and not entry["informative"] and not set(fewshots) <= measured_shots:
            continue  # unfinished: a later setting may still be informative
        table.setdefault(model, {})[task] = entry
    return table


def update_table(rows: list[dict], fewshots: tuple[int, ...], path: Path | None) -> None:
    """Rewrite the table's entries for the finished (model, task) pairs of these rows."""
    table = load_table(path)
    for model, entries in signal_table(rows, fewshots).items():
        table.setdefault(model, {}).update(entries)
    write_table(table, path)


def write_table(table: dict[str, dict[str, dict]], path: Path | None = None) -> Path:
    """TOML by hand (tomllib reads, it does not write): one inline table per (model, task)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(v)

    lines = [
        "# Generated by `python -m see signal` from the run named in each entry (do not edit):",
        '# per (model, task) the num_fewshot presets with `num_fewshot = "signal"` use, and',
        "# whether the baseline beats chance there by more than 2 stderr",
        "# (see/evaluation/signal.py).",
    ]
    for model, tasks in table.items():
        lines += ["", f'["{model}"]']
        for task, item in tasks.items():
            fields = ", ".join(f"{k} = {value(v)}" for k, v in item.items())
            lines.append(f"{task} = {{ {fields} }}")
    path = Path(path or SIGNAL_TABLE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def load_table(path: Path | str | None = None) -> dict[str, dict[str, dict]]:
    path = Path(path or SIGNAL_TABLE)
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def fewshot_for(model: str, task: str, table: dict | None = None) -> int:
    """The num_fewshot the signal table chose for (model, task); a clear error if absent."""
    table = load_table() if table is None else table
    item = table.get(model, {}).get(task)
    if item is None:
        raise ValueError(
            f"num_fewshot = 'signal' but {SIGNAL_TABLE.name} has no entry for ({model!r}, "
            f"{task!r}); measure it with `python -m see signal --models {model} --tasks {task}`"
        )
    return int(item["num_fewshot"])


def uninformative_reason(model: str, task: str, table: dict | None = None) -> str | None:
    """Why the signal table says (model, task) cannot rank methods, or None where it can
    (and for tasks without a chance level)."""
    if task in NO_CHANCE_TASKS:
        return None
    table = load_table() if table is None else table
    fewshot_for(model, task, table)  # a clear error where the entry is missing
    item = table[model][task]
    if item["informative"]:
        return None
    return (
        f"{task} is uninformative for {model}: baseline {item.get('metric', '')} "
        f"{item.get('value')} vs chance {item.get('chance')} (stderr {item.get('stderr')}, "
        f"{item['num_fewshot']}-shot, run {item.get('run_id')})"
    )


def informative_cells(table: dict | None = None) -> dict[tuple[str, str], bool]:
    """(model, task) -> informative, for the report."""
    table = load_table() if table is None else table
    return {(m, t): bool(e["informative"]) for m, tasks in table.items() for t, e in tasks.items()}


def held_out_docs(task: str, docs: int, include_path: Path | None) -> tuple[list[int], list]:
    """Indices of the last `docs` documents of the task's evaluation split (reports take the
    first ones) and their gold labels (None for generated answers)."""
    from lm_eval.tasks import get_task_dict

    from see.evaluation.lmeval import task_manager

    task_obj = get_task_dict([task], task_manager(include_path))[task]
    documents = list(task_obj.eval_docs)
    indices = list(range(max(0, len(documents) - docs), len(documents)))
    if task_obj.OUTPUT_TYPE != "multiple_choice":
        return indices, None
    return indices, [task_obj.doc_to_target(documents[i]) for i in indices]


def run_signal(
    models: list[str],
    tasks: list[str],
    docs: int = 200,
    fewshots: tuple[int, ...] = (0, 5),
    results_dir: str | Path = "results",
    data_dir: str | None = None,
    run_id: str | None = None,
    table_path: Path | None = None,
    every_fewshot: bool = False,
) -> Path:
    """Measure the baselines into a run, then rewrite the signal table's entries for them.

    The num_fewshot settings are tried in order and, unless `every_fewshot`, a (model, task)
    stops at the first informative one: later settings cannot change the table's choice, and
    few-shot contexts cost several times the zero-shot ones on the large models."""
    import torch

    from see.evaluation.lmeval import check_tasks, evaluate
    from see.models import load_model
    from see.models.zoo import check_model
    from see.results import cell_key, device_name, open_run, provenance

    bad = [t for t in tasks if t in NO_CHANCE_TASKS]
    if bad or docs < 2 or not fewshots or min(fewshots) < 0:
        raise ValueError(
            f"signal needs tasks with a chance level (not {bad}), docs >= 2 (got {docs}) and "
            f"num_fewshot values >= 0 (got {list(fewshots)})"
        )
    include_path = check_tasks(tasks, None, data_dir)
    for name in models:
        check_model(name)
    settings = {"models": models, "tasks": tasks, "docs": docs, "fewshots": list(fewshots)}
    store = open_run(results_dir, settings, "signal", run_id)
    done, device = store.done_keys(), device_name()
    for name in models:
        model = tok = None
        for task in tasks:
            indices, labels = held_out_docs(task, docs, include_path)
            for shots in fewshots:
                ident = {
                    "model": name,
                    "method": "baseline",
                    "task": task,
                    "num_fewshot": shots,
                    "docs": f"last {len(indices)}",
                    "dtype": "float32",
                    "seed": 0,
                }
                if cell_key(ident) in done:
                    if not every_fewshot and _informative_in(store.rows(), cell_key(ident)):
                        break
                    continue
                if model is None:
                    model, tok = load_model(name, torch.float32)
                rows = evaluate(
                    model,
                    tok,
                    [task],
                    samples={task: indices},
                    num_fewshot=shots,
                    data_dir=data_dir,
                )
                primary = primary_metric([r["metric"] for r in rows])
                common = {
                    **ident,
                    "cell_key": cell_key(ident),
                    **provenance(store.run_dir.name, device),
                }
                store.append(
                    [
                        {
                            **common,
                            **row,
                            "num_fewshot": shots,
                            "primary": row["metric"] == primary,
                            "chance": chance_level(task, row["metric"], labels)
                            if row["metric"] == primary
                            else None,
                        }
                        for row in rows
                    ]
                )
                if not every_fewshot and _informative_in(store.rows(), cell_key(ident)):
                    break
            update_table(store.rows(), fewshots, table_path)  # a killed run keeps its entries
    print(f"[see] signal table: {table_path or SIGNAL_TABLE}")
    return store.run_dir


def _informative_in(rows: list[dict], key: str) -> bool:
    """Whether the stored primary row of this signal cell beats chance."""
    return any(
        is_informative(r["value"], r.get("stderr"), r.get("chance"))
        for r in rows
        if r.get("cell_key") == key and r.get("primary") and r.get("value") is not None
    )
