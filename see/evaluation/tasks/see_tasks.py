"""Loaders for the offline task configs: local files -> the hub datasets' fields.

This file is copied next to the rendered YAML files, which reference it with `!function`.
Prompts, targets and metrics stay lm-eval's own: each YAML includes lm-eval's stock config.
"""

import re

import datasets

# a top-level WikiText heading line " = Title = " starts a new document
_TITLE_LINE = re.compile(r"(?m)^(?= = [^=].* = \n)")


def wikitext_documents(data_file: str, **_metadata) -> datasets.DatasetDict:
    """EleutherAI/wikitext_document_level's test split, rebuilt from wiki.test.raw."""
    with open(data_file, encoding="utf-8") as f:
        text = f.read()
    pages = [page for page in _TITLE_LINE.split(text) if page.strip()]  # drop the empty head
    return datasets.DatasetDict({"test": datasets.Dataset.from_dict({"page": pages})})


# GLUE: local glue_data TSVs -> nyu-mll/glue fields and label order.
# (file, columns, label map); columns name the TSV fields copied into each document.
_GLUE = {
    "sst2": ("SST-2", {"sentence": "sentence", "label": "label"}, None),
    "cola": ("CoLA", {"sentence": 3, "label": 1}, None),
    "mrpc": (
        "MRPC",
        {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        None,
    ),
    "qnli": (
        "QNLI",
        {"question": "question", "sentence": "sentence", "label": "label"},
        {"entailment": 0, "not_entailment": 1},
    ),
    "rte": (
        "RTE",
        {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
        {"entailment": 0, "not_entailment": 1},
    ),
    "wnli": ("WNLI", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}, None),
}


def _read_tsv(path: str, header: bool) -> list:
    import csv

    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops MRPC's BOM
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    if not header:
        return rows
    names = rows[0]
    return [dict(zip(names, row, strict=True)) for row in rows[1:]]


def glue_split(task: str, path: str) -> datasets.Dataset:
    _, columns, labels = _GLUE[task]
    rows = _read_tsv(path, header=task != "cola")
    docs = {field: [row[col] for row in rows] for field, col in columns.items()}
    docs["label"] = [labels[v] if labels else int(v) for v in docs["label"]]
    docs["idx"] = list(range(len(rows)))
    return datasets.Dataset.from_dict(docs)


def glue_documents(task: str, validation_file: str, train_file: str | None = None, **_metadata):
    splits = {"validation": glue_split(task, validation_file)}
    if train_file:
        splits["train"] = glue_split(task, train_file)
    return datasets.DatasetDict(splits)


# SQuAD v1.1: the dev JSON -> one document per question (squadv2's fields)
def squad_documents(data_file: str, **_metadata) -> datasets.DatasetDict:
    import json

    with open(data_file, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    docs = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                docs["id"].append(qa["id"])
                docs["title"].append(article["title"])
                docs["context"].append(paragraph["context"])
                docs["question"].append(qa["question"])
                docs["answers"].append(
                    {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    }
                )
    return datasets.DatasetDict({"validation": datasets.Dataset.from_dict(docs)})


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lowercase, drop punctuation, articles, spaces."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, gold: str) -> float:
    from collections import Counter

    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_process_results(doc: dict, results: list) -> dict:
    prediction = results[0].strip()
    golds = doc["answers"]["text"]
    return {
        "exact_match": max(
            float(normalize_answer(prediction) == normalize_answer(g)) for g in golds
        ),
        "f1": max(squad_f1(prediction, g) for g in golds),
    }


def squad_split_documents(data_file: str, **_metadata) -> datasets.DatasetDict:
    """SQuAD v1.1 dev split by article (SQuAD's train set is not available offline): articles
    at even positions of the dev file -> `train`, odd ones -> `validation`. No article, and so
    no paragraph, is in both halves."""
    full = squad_documents(data_file)["validation"]
    titles = list(dict.fromkeys(full["title"]))  # article order of the file
    half = {title: i % 2 for i, title in enumerate(titles)}
    splits = {"train": [], "validation": []}
    for row, title in enumerate(full["title"]):
        splits["validation" if half[title] else "train"].append(row)
    return datasets.DatasetDict({name: full.select(rows) for name, rows in splits.items()})
