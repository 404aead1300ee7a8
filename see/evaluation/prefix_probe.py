"""Which token leads a WikiText window, and does it decide the comparison? (issue 38)

lm-eval scores a document's first window after a prefix token: the tokenizer's BOS, else its
EOS. For one model, this probe scores the first `tokens` tokens of WikiText-2 test documents
with each candidate prefix (and with none), for the baseline table and for int4 of it, with
the model's own head, and writes one row per (document, prefix, table): the summed negative
log-likelihood of the same target tokens (every token after the document's first). A prefix
the model is fragile to shows as a large NLL for the baseline and a large int4/baseline swing.

    python -m see.evaluation.prefix_probe --model qwen2.5-coder-0.5b --publish
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

PREFIXES = ("<|endoftext|>", "<|im_end|>", "<|im_start|>", "\n", None)


def window_nll(model, table: torch.Tensor, ids: list[int], prefix: int | None) -> float:
    """NLL of ids[1:] with `table` as the input embedding, led by `prefix` (or by ids[0])."""
    sequence = ids if prefix is None else [prefix, *ids]
    with torch.no_grad():
        hidden = model.model(inputs_embeds=table[sequence][None]).last_hidden_state
        logp = torch.log_softmax(model.get_output_embeddings()(hidden).double(), -1)[0]
    first = 0 if prefix is None else 1
    targets = torch.tensor(ids[1:])
    return -logp[first:-1].gather(1, targets[:, None]).sum().item()


def probe(model_name: str, docs: int, tokens: int, data_dir: str | None) -> list[dict]:
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    from see.config import GridConfig
    from see.data import data_file
    from see.evaluation.tasks.see_tasks import wikitext_documents
    from see.grid import Cell, build_model

    cfg = GridConfig(
        name="prefix-probe",
        models=[model_name],
        methods=["baseline", "int4"],
        ratios=[10],
        tasks={"wikitext": docs},
        data_dir=data_dir,
    )
    base, tok, _, _ = build_model(Cell(model_name, "baseline", 1.0, "dense", 0), cfg)
    from see.methods import get_method

    int4_ratio = get_method("int4").fixed_ratio(get_method("int4").make_options({}))
    int4, _, _, _ = build_model(Cell(model_name, "int4", int4_ratio, "dense", 0), cfg)
    tables = {
        "baseline": base.get_input_embeddings().weight.detach(),
        "int4": int4.get_input_embeddings().compressed.materialize().detach(),
    }
    text = wikitext_documents(str(data_file("wikitext-2-raw/wiki.test.raw")))["test"]
    rows = []
    for doc in range(docs):
        ids = tok(wikitext_detokenizer(text[doc]), add_special_tokens=False).input_ids[:tokens]
        for prefix in PREFIXES:
            prefix_id = None if prefix is None else tok.convert_tokens_to_ids(prefix)
            if prefix == "\n":
                prefix_id = tok("\n", add_special_tokens=False).input_ids[-1]
            for method, table in tables.items():
                rows.append(
                    {
                        "model": model_name,
                        "method": method,
                        "doc": doc,
                        "prefix": "none" if prefix is None else repr(prefix),
                        "prefix_id": prefix_id,
                        "target_tokens": len(ids) - 1,
                        "nll": window_nll(base, table, ids, prefix_id),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> Path:
    import hashlib
    import json

    from see.cli import publish
    from see.results import device_name, open_run, provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--docs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2047, help="tokens per document (window)")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--data-dir")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)
    settings = {"model": args.model, "docs": args.docs, "tokens": args.tokens}
    store = open_run(args.results_dir, {"name": "prefix-probe", **settings}, "prefix-probe")
    device = device_name()
    for row in probe(args.model, args.docs, args.tokens, args.data_dir):
        ident = {"task": "prefix-probe", **settings, **{k: row[k] for k in row if k != "nll"}}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        run = provenance(store.run_dir.name, device)
        store.append([{**row, **ident, "cell_key": key, **run}])
    if args.publish:
        publish(Path(args.results_dir), store.run_dir)
    return store.run_dir


if __name__ == "__main__":
    main()
