"""Chance levels: what the best constant answer scores on a task's evaluated documents.

The majority label's share for accuracy, 2p / (1 + p) for binary F1 (always answering the
positive label, p = its share), 0 for Matthews correlation and for SQuAD (exact match and F1).
Perplexity has no chance level. Used by the signal table and stored in rows (`chance`).
"""

from __future__ import annotations

ZERO_CHANCE_METRICS = ("mcc", "exact_match")
NO_CHANCE_TASKS = ("wikitext",)  # perplexity: no chance level
ZERO_CHANCE_TASKS = ("squad", "squad_split")  # generated answers: a constant string scores ~0


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
