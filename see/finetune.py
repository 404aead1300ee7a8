"""Task fine-tuning: the autoencoder paper's downstream protocol (fine-tune, then evaluate).

Balazy, Banaei et al. (2021) fine-tune the compressed model on each GLUE task (lr 2e-5, 3
epochs, seq 128) and on SQuAD before scoring it. Here a task's training documents are turned
into lm-eval's own prompts: the zero-shot context lm-eval builds for the document, and the
continuation it scores as correct (the gold choice of a multiple-choice task, the reference
answer of a generative one). The model trains on cross-entropy of the continuation tokens only,
then lm-eval evaluates it zero-shot on the dev split exactly as for every other row. Examples,
epochs, the learning-rate schedule and the seed are equal for every method (`FinetuneConfig`,
recorded in the rows and in the cell key).

Tokenisation follows lm-eval's HFLM (`encode_pairs`). An example longer than `max_tokens`
loses the start of its context.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from contextlib import contextmanager

import torch
from torch import nn
from tqdm import tqdm

from see.config import FinetuneConfig

__all__ = ["FinetuneConfig", "NotFinetunable", "answer_loss", "encode_pairs", "finetune"]


class NotFinetunable(ValueError):
    """A task with no training split, or no answer to train on (WikiText's rolling loglik)."""


def lm_eval_task(task: str, data_dir: str | None = None):
    from see.evaluation.lmeval import check_tasks, task_manager

    include_path = check_tasks([task], None, data_dir)
    return task_manager(include_path).load([task])["tasks"][task]


def task_pairs(
    task: str, examples: int, seed: int, data_dir: str | None = None, balanced: bool = False
) -> list:
    """(context, continuation) of `examples` training documents of `task`, in a seeded order:
    the prompt lm-eval scores and the continuation it counts as correct. `balanced` deals the
    order round-robin over a multiple-choice task's gold answers, so that each answer is drawn
    equally often (until the rarest runs out): a small budget on a skewed task (CoLA is 70%
    acceptable) otherwise teaches little beyond the majority answer."""
    obj = lm_eval_task(task, data_dir)
    if not obj.has_training_docs():
        raise NotFinetunable(f"task {task!r} has no training split to fine-tune on")
    if obj.OUTPUT_TYPE not in ("multiple_choice", "generate_until"):
        raise NotFinetunable(f"task {task!r} is {obj.OUTPUT_TYPE}: no answer to fine-tune on")
    docs = list(obj.training_docs())
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    choice = obj.OUTPUT_TYPE == "multiple_choice"
    if balanced and choice:
        order = round_robin(order, [gold_index(obj, doc) for doc in docs])
    pairs = []
    for index in order[:examples]:
        doc = docs[index]
        context = obj.fewshot_context(doc, 0)
        if choice:
            requests = obj.construct_requests(doc, context, metadata=(task, index, 1))
            pairs.append(requests[gold_index(obj, doc)].arguments)
        else:
            pairs.append((context, obj.config.target_delimiter + obj.doc_to_target(doc)))
    return pairs


def gold_index(obj, doc) -> int:
    gold = obj.doc_to_target(doc)
    return gold if isinstance(gold, int) else obj.doc_to_choice(doc).index(gold)


def round_robin(order: list[int], labels: list) -> list[int]:
    """`order` re-dealt one label at a time (each label's documents keep their order)."""
    queues: dict = {}
    for index in order:
        queues.setdefault(labels[index], []).append(index)
    dealt = itertools.zip_longest(*(queues[label] for label in sorted(queues)))
    return [index for group in dealt for index in group if index is not None]


def encode_pairs(tok, pairs: list, max_tokens: int) -> list[tuple[list[int], int]]:
    """(token ids, number of answer tokens at the end) per pair, encoded as lm-eval's HFLM
    encodes a (context, continuation) request: trailing spaces of the context move to the
    continuation, the whole and the context are encoded with the tokenizer's own special
    tokens, the answer is what the whole adds to the context."""
    encoded = []
    for context, continuation in pairs:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = tok(context + continuation).input_ids
        answer = max(len(whole) - len(tok(context).input_ids), 1)
        encoded.append((whole[-max_tokens:], min(answer, max_tokens - 1)))
    return encoded


def batch_of(encoded: list, pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Left-padded ids, attention mask, position ids and the answer labels: one column per
    answer token of the longest answer, -100 where a shorter answer leaves a column empty.
    Left padding puts every answer at the end of its row, so the loss needs the head's logits
    at the last few positions only (the vocabulary matmul at every position is a large share of
    a small model's compute: Gemma 3 270M's head has more weights than its body)."""
    # the first token has nothing to predict it: an answer covers at most the rest
    encoded = [(tokens, min(answer, len(tokens) - 1)) for tokens, answer in encoded]
    width = max(len(tokens) for tokens, _ in encoded)
    keep = max(answer for _, answer in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full((len(encoded), keep), -100, dtype=torch.long)
    for row, (tokens, answer) in enumerate(encoded):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        mask[row, width - len(tokens) :] = 1
        labels[row, keep - answer :] = torch.tensor(tokens[len(tokens) - answer :])
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # each row counts from its first real token
    return tuple(t.to(device) for t in (ids, mask, positions, labels))


def answer_loss(model, encoded: list, batch_size: int = 8) -> float:
    """Mean cross-entropy per answer token (what fine-tuning lowers)."""
    pad = pad_id(model)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = batch_of(encoded[start : start + batch_size], pad, device)
            loss, n = summed_loss(model, *batch)
            total, count = total + loss.item(), count + n
    return total / count


def summed_loss(model, ids, mask, positions, labels) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the answer tokens: the logits at position t predict token t + 1,
    so the last `keep + 1` positions cover the `keep` answer columns."""
    keep = labels.shape[1]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep + 1)
    logits = out.logits[:, :-1].float()
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
    )
    return loss, int((labels != -100).sum())


def pad_id(model) -> int:
    config = model.config.get_text_config()
    pad = getattr(config, "pad_token_id", None)
    return pad if pad is not None else 0  # padded positions are masked out of the loss


def trainable_parameters(model, cfg: FinetuneConfig) -> list[nn.Parameter]:
    if cfg.train == "all":
        return [p for p in model.parameters()]
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    return lora + list(model.get_input_embeddings().parameters())


@contextmanager
def restored(model):
    """Every parameter and buffer of `model` put back as it was after the block (one fine-tuned
    task does not leak into the next one's model)."""
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for key, value in model.state_dict(keep_vars=True).items():
                value.data.copy_(saved[key])


@contextmanager
def lora_adapters(model, cfg: FinetuneConfig):
    """With train = "lora": PEFT LoRA adapters on every linear layer of the body, merged into
    the weights after training (so lm-eval scores a plain model; `restored` undoes it)."""
    if cfg.train != "lora":
        yield model
        return
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, target_modules="all-linear")
    wrapped = get_peft_model(model, config)
    try:
        yield wrapped
    finally:
        wrapped.merge_and_unload()


def finetune(model, encoded: list, cfg: FinetuneConfig, seed: int = 0) -> dict:
    """Train `model` in place on the encoded examples; returns the budget and losses."""
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    steps = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_ratio * steps)
    pad = pad_id(model)
    device = next(model.parameters()).device
    began, tokens, losses = time.perf_counter(), 0, []
    with lora_adapters(model, cfg) as trained:
        params = trainable_parameters(trained, cfg)
        for p in trained.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: (
                (step + 1) / max(warmup, 1)
                if step < warmup
                else max(steps - step, 0) / max(steps - warmup, 1)
            ),
        )
        trained.train()
        bar = tqdm(total=steps, desc="finetune", unit="step")
        for _ in range(cfg.epochs):
            order = torch.randperm(len(encoded), generator=gen).tolist()
            for start in range(0, len(order), cfg.batch_size):
                chunk = [encoded[i] for i in order[start : start + cfg.batch_size]]
                ids, mask, positions, labels = batch_of(chunk, pad, device)
                loss, count = summed_loss(trained, ids, mask, positions, labels)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"fine-tuning loss is {loss.item()}")
                (loss / count).backward()
                opt.step()
                schedule.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item() / count)
                tokens += int(mask.sum())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        trained.eval()
        for p in trained.parameters():
            p.requires_grad_(False)
    wall = time.perf_counter() - began
    tail = losses[-max(1, steps_per_epoch // 4) :]
    return {
        "finetune_examples": len(encoded),
        "finetune_steps": steps,
        "finetune_tokens": tokens,
        "finetune_wall_s": wall,
        "finetune_tokens_per_s": tokens / wall if wall else None,
        "finetune_first_loss": losses[0],
        "finetune_last_loss": sum(tail) / len(tail),
    }
