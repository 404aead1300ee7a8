import json

import pytest
import torch
from conftest import needs_data

from see.config import FinetuneConfig, GridConfig
from see.finetune import (
    NotFinetunable,
    answer_loss,
    encode_pairs,
    finetune,
    restored,
    round_robin,
    task_pairs,
)
from see.grid import Cell
from see.grid.rows import identity
from see.results import cell_key

TINY = FinetuneConfig(examples=16, epochs=3, lr=1e-4, batch_size=8, warmup_ratio=0.0)


@needs_data
def test_pairs_are_lm_evals_prompt_and_gold_continuation():
    pairs = task_pairs("sst2", 8, seed=0)
    again = task_pairs("sst2", 8, seed=0)
    assert pairs == again and len(pairs) == 8  # seeded order
    assert task_pairs("sst2", 8, seed=1) != pairs
    for context, continuation in pairs:
        assert context.endswith("Question: Is this sentence positive or negative?\nAnswer:")
        assert continuation in (" negative", " positive")
    context, answer = task_pairs("squad_split", 1, seed=0)[0]
    assert context.endswith("\n\nAnswer:") and answer.startswith(" ")
    with pytest.raises(NotFinetunable, match="wikitext"):
        task_pairs("wikitext", 1, seed=0)


@needs_data
def test_balanced_pairs_draw_each_gold_answer_equally_often():
    skewed = [answer for _, answer in task_pairs("cola", 40, seed=0)]
    balanced = [answer for _, answer in task_pairs("cola", 40, seed=0, balanced=True)]
    assert sorted(set(balanced)) == [" no", " yes"]
    assert balanced.count(" no") == 20 and skewed.count(" no") < 20


def test_round_robin_deals_one_label_at_a_time_in_the_given_order():
    labels = ["a", "a", "b", "a", "b"]
    assert round_robin([4, 0, 1, 3, 2], labels) == [0, 4, 1, 2, 3]


@needs_data
def test_the_squad_split_is_document_disjoint():
    from see.data import data_dir
    from see.evaluation.tasks.see_tasks import squad_documents, squad_split_documents

    path = str(data_dir() / "squad" / "dev-v1.1.json")
    split = squad_split_documents(path)
    train, held = set(split["train"]["title"]), set(split["validation"]["title"])
    assert train and held and not train & held
    contexts = set(split["train"]["context"]) & set(split["validation"]["context"])
    assert not contexts
    assert len(split["train"]) + len(split["validation"]) == len(
        squad_documents(path)["validation"]
    )


@needs_data
def test_finetuning_a_tiny_real_split_lowers_the_answer_loss_and_is_seeded(fresh_smollm):
    model, tok = fresh_smollm
    encoded = encode_pairs(tok, task_pairs("sst2", 16, seed=0), TINY.max_tokens)
    before = answer_loss(model, encoded)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with restored(model):
        first = finetune(model, encoded, TINY, seed=0)
        after = answer_loss(model, encoded)
        tuned = next(model.model.layers[0].parameters()).clone()
    assert after < 0.8 * before, (before, after)
    for key, value in model.state_dict().items():  # restored bit for bit
        assert torch.equal(value, original[key]), key
    with restored(model):
        second = finetune(model, encoded, TINY, seed=0)
        assert torch.equal(next(model.model.layers[0].parameters()), tuned)
    same = ["finetune_steps", "finetune_tokens", "finetune_first_loss", "finetune_last_loss"]
    assert {k: first[k] for k in same} == {k: second[k] for k in same}
    assert first["finetune_steps"] == 6 and first["finetune_examples"] == 16


@needs_data
def test_the_batched_answer_loss_equals_the_loss_of_each_example_alone(fresh_smollm):
    """Left padding and the answer-only logits give each example the loss it has unpadded."""
    model, tok = fresh_smollm
    encoded = encode_pairs(tok, task_pairs("squad_split", 3, seed=0), 64)
    encoded += encode_pairs(tok, task_pairs("sst2", 5, seed=0), 64)
    total, count = 0.0, 0
    with torch.no_grad():
        for tokens, answer in encoded:
            logits = model(input_ids=torch.tensor([tokens])).logits[0, :-1]
            target = torch.tensor(tokens[1:])
            losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
            total, count = total + losses[-answer:].sum().item(), count + answer
    assert len({len(t) for t, _ in encoded}) > 1 and len({a for _, a in encoded}) > 1
    assert answer_loss(model, encoded, batch_size=8) == pytest.approx(total / count, rel=1e-4)


@needs_data
def test_lora_trains_adapters_and_leaves_a_plain_model(fresh_smollm):
    model, tok = fresh_smollm
    encoded = encode_pairs(tok, task_pairs("sst2", 16, seed=0), TINY.max_tokens)
    before = answer_loss(model, encoded)
    names = set(model.state_dict())
    cfg = FinetuneConfig(**{**TINY.__dict__, "train": "lora", "lr": 1e-3})
    with restored(model):
        finetune(model, encoded, cfg, seed=0)
        assert set(model.state_dict()) == names  # merged: no adapter left for lm-eval to meet
        assert answer_loss(model, encoded) < before


def test_a_finetuned_rows_key_changes_with_the_budget_and_earlier_keys_do_not():
    def cfg(finetune):
        return GridConfig(
            name="ft",
            models=["smollm2-135m"],
            methods=["svd"],
            ratios=[10],
            tasks={"sst2": 100},
            finetune=finetune,
        )

    cell = Cell("smollm2-135m", "svd", 10.0, "dense", 0)
    small, large = cfg({"examples": 100}), cfg({"examples": 200})
    key = lambda c, stage: cell_key(identity(c, cell, "sst2", stage))  # noqa: E731
    assert key(small, "finetune") != key(large, "finetune")
    assert key(small, "initial") == key(large, "initial") == key(cfg(None), "initial")
    row = identity(small, cell, "sst2", "finetune")
    assert json.loads(row["finetune_config"]) == {"examples": 100} and row["num_fewshot"] == 0


def test_finetune_options_name_the_bad_value():
    with pytest.raises(ValueError, match="examples=0"):
        FinetuneConfig(examples=0)
    with pytest.raises(ValueError, match="train='some'"):
        FinetuneConfig(train="some")
    with pytest.raises(ValueError, match="lr=-1"):
        FinetuneConfig(lr=-1)
    with pytest.raises(ValueError, match="balanced='yes'"):
        FinetuneConfig(balanced="yes")
    with pytest.raises(ValueError, match="task_examples.cola=0"):
        FinetuneConfig(task_examples={"cola": 0})
    assert FinetuneConfig(examples=5, task_examples={"cola": 7}).examples_for("sst2") == 5
    with pytest.raises(ValueError, match="bad \\[finetune\\] table"):
        GridConfig(
            name="ft",
            models=["smollm2-135m"],
            methods=["svd"],
            ratios=[10],
            tasks={"sst2": 1},
            finetune={"epoch": 1},
        )


@needs_data
def test_a_grid_cell_fine_tunes_each_task_and_skips_wikitext():
    from see.grid.pipeline import cell_stages, run_cell

    cfg = GridConfig(
        name="ft",
        models=["smollm2-135m"],
        methods=["int4"],
        ratios=[10],
        tasks={"sst2": 4, "wikitext": 1},
        finetune={"examples": 4, "batch_size": 4, "task_examples": {"sst2": 3}},
    )
    # int4's table has nothing to heal, but fine-tuning trains the whole model
    cell = Cell("smollm2-135m", "int4", 32 / 4.5, "dense", 0)
    assert cell_stages(cfg, cell) == ["initial", "finetune"]
    pending = {"finetune": ["sst2", "wikitext"]}
    rows = [r for batch in run_cell(cell, cfg, pending, "r", "cpu") for r in batch]
    tuned = [r for r in rows if r["task"] == "sst2"]
    assert {r["heal_stage"] for r in tuned} == {"finetune"} and tuned[0]["num_fewshot"] == 0
    assert tuned[0]["finetune_steps"] == 1 and tuned[0]["finetune_config"] is not None
    assert tuned[0]["finetune_examples"] == 3  # the task's own budget
    assert {r["metric"] for r in tuned} >= {"acc"}
    wikitext = [r for r in rows if r["task"] == "wikitext"]
    assert [r["status"] for r in wikitext] == ["skipped"]
