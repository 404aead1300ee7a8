"""Which options of a method keep the most quality, judged on text no fit or report uses?

Default-setting sweeps must not tune on the reported test text. This one fits a method with
token counts from the first half of WikiText-2 *validation* and scores token perplexity on
the second half (in domain, held out from the counts) and on GLUE *train* sentences (MRPC's
news sentences, SST-2's film-review phrases: out of domain; the harness evaluates GLUE on dev
only). One row per (model, method, ratio, options, text); the baseline is scored alike, so
each row carries its ratio to the baseline. Counts may also come from the data-free proxy
(`--counts token_order`, see.methods.frequency). A fit that keeps checkpoints (the row fits,
the autoencoder) picks one as the grid does, by token perplexity on the grid's selection slice
(the first tokens of validation, inside the counts' half).

    python -m see.evaluation.heldout_sweep --model smollm2-135m --method pq --ratios 20 40 \
        --options '{}' '{"freq_weight": 0.5}' --publish
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch

TEXTS = ("wikitext_valid_b", "mrpc_train", "sst2_train")


def glue_text(root: str | None, task: str, column: str) -> str:
    from see.data import data_dir, data_file

    path = data_file(f"glue/{task}/train.tsv", data_dir(root))
    with path.open(encoding="utf-8-sig") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return "\n".join(row[column].strip() for row in rows)


def held_out_texts(tok, tokens: int, root: str | None) -> tuple[torch.Tensor, dict]:
    """(validation ids of the first half: for counts, {text: ids of `tokens` tokens})."""
    from see.evaluation.validation import validation_ids

    valid = validation_ids(tok, None, root)
    half = len(valid) // 2
    texts = {
        "wikitext_valid_b": valid[half : half + tokens],
        "mrpc_train": glue_text(root, "MRPC", "#1 String"),
        "sst2_train": glue_text(root, "SST-2", "sentence"),
    }
    for name in ("mrpc_train", "sst2_train"):
        text = texts[name][: tokens * 8]
        texts[name] = tok(text, add_special_tokens=False, return_tensors="pt").input_ids[0][:tokens]
    return valid[:half], texts


def sweep(args) -> Iterator[dict]:
    """Yields each row as soon as it is measured (the caller appends it at once)."""
    from see.compress import FISHER_TOKENS, checkpoint_scorer, input_fisher
    from see.config import grid_defaults
    from see.evaluation.validation import token_perplexity
    from see.methods import get_method
    from see.methods.base import FitContext, UnreachableCR
    from see.methods.frequency import token_order_counts
    from see.models.surgery import input_table, swapped_embedding
    from see.models.zoo import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    table = input_table(model).float()
    counts_ids, texts = held_out_texts(tok, args.tokens, args.data_dir)
    if args.counts == "wikitext_valid_a":
        counts = torch.bincount(counts_ids, minlength=len(table))[: len(table)]
    else:
        counts = token_order_counts(tok, len(table))

    def score(module=None) -> dict[str, float]:
        swap = nullcontext() if module is None else swapped_embedding(model, module, "dense")
        with swap:
            return {n: token_perplexity(model, ids) for n, ids in texts.items()}

    # the dimensions' Fisher on the counts' text (the grid: the first FISHER_TOKENS of validation)
    fisher = functools.cache(lambda: input_fisher(model, counts_ids[:FISHER_TOKENS]))
    # checkpoints chosen as the grid chooses them: token perplexity on the first
    # `selection_tokens` of validation, inside the counts' half (never the scored texts)
    grid = grid_defaults()
    pick = checkpoint_scorer(
        model,
        tok,
        "dense",
        grid["selection_tokens"],
        grid["max_length"],
        args.data_dir,
        torch.float32,
    )
    base = score()
    cls = get_method(args.method)
    for ratio in args.ratios:
        for options in map(json.loads, args.options):
            ctx = FitContext(
                seed=0,
                tokenizer=tok,
                checkpoint_score=pick,
                count_tokens=lambda: counts,
                input_fisher=fisher,
            )
            start = time.perf_counter()
            typed = cls.make_options(options)
            try:
                module = cls.compress_table(table, ratio, typed, ctx)
            except UnreachableCR as err:
                print(f"skipped {options} at {ratio}: {err}", flush=True)
                continue
            fit_s = time.perf_counter() - start
            for text, value in score(module).items():
                row = {
                    "model": args.model,
                    "method": args.method,
                    "target_cr": ratio,
                    "options": json.dumps(options, sort_keys=True),
                    "method_config": json.dumps(dataclasses.asdict(typed), sort_keys=True),
                    "counts": args.counts,
                    "text": text,
                    "tokens": len(texts[text]),
                    "token_perplexity": value,
                    "baseline_token_perplexity": base[text],
                    "ratio_to_baseline": value / base[text],
                    "byte_cr": module.byte_cr,
                    "fit_s": fit_s,
                    **{k: v for k, v in module.fit_report.items() if not k.startswith("fit_")},
                }
                print(json.dumps(row), flush=True)
                yield row


def main(argv: list[str] | None = None) -> Path:
    from see.cli import publish
    from see.results import device_name, open_run, provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="pq")
    parser.add_argument("--ratios", type=float, nargs="+", default=[20.0])
    parser.add_argument("--options", nargs="+", default=["{}"], help="JSON option tables")
    parser.add_argument(
        "--counts", choices=("wikitext_valid_a", "token_order"), default="wikitext_valid_a"
    )
    parser.add_argument("--tokens", type=int, default=8192, help="tokens scored per text")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--data-dir")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)
    for options in args.options:
        json.loads(options)  # a bad table fails before the model loads
    settings = {k: getattr(args, k) for k in ("model", "method", "counts", "tokens")}
    store = open_run(args.results_dir, {"name": "heldout-sweep", **settings}, "heldout-sweep")
    device = device_name()
    for row in sweep(args):
        ident = {"task": "heldout-sweep", **{k: row[k] for k in row if k in IDENTITY}}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        run = provenance(store.run_dir.name, device)
        store.append([{**row, "task": "heldout-sweep", "cell_key": key, **run}])
    if args.publish:
        publish(Path(args.results_dir), store.run_dir)
    return store.run_dir


IDENTITY = ("model", "method", "target_cr", "method_config", "counts", "text", "tokens")

if __name__ == "__main__":
    main()
