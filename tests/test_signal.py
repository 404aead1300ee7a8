"""Which tasks can rank methods (issue 20): chance levels, the informative rule, the signal
table that presets read, and untied heads that stay dense."""

import dataclasses
import json

import pytest
import torch
from conftest import needs_data

from see.evaluation.signal import (
    chance_level,
    choose,
    fewshot_for,
    informative_cells,
    is_informative,
    load_table,
    signal_table,
    write_table,
)


def lm_eval_row(model, task, shots, value, stderr, chance, metric="acc"):
    """A primary-metric row as run_signal stores it (lm-eval's value and stderr)."""
    return {
        "model": model,
        "task": task,
        "metric": metric,
        "num_fewshot": shots,
        "value": value,
        "stderr": stderr,
        "chance": chance,
        "primary": True,
        "docs": "last 200",
        "run_id": "r",
    }


def test_chance_is_what_a_constant_answer_scores():
    labels = [1] * 68 + [0] * 32  # MRPC-like: 68% positive
    assert chance_level("sst2", "acc", labels) == pytest.approx(0.68)
    assert chance_level("mrpc", "f1", labels) == pytest.approx(2 * 0.68 / 1.68)
    assert chance_level("cola", "mcc", labels) == 0.0
    assert chance_level("squad", "f1", None) == 0.0
    assert chance_level("wikitext", "word_perplexity", None) is None
    with pytest.raises(ValueError, match="needs the documents' gold labels"):
        chance_level("rte", "acc", [])


def test_a_baseline_that_scores_like_a_constant_predictor_is_flagged():
    labels = [0] * 110 + [1] * 90
    chance = chance_level("rte", "acc", labels)  # 0.55: always answering label 0
    # stderr of a 200-document accuracy near 0.55 is about 0.035
    assert not is_informative(0.555, 0.035, chance)  # issue 20's RTE baseline
    assert not is_informative(0.60, 0.035, chance)  # 1.4 stderr above chance
    assert is_informative(0.85, 0.025, chance)  # far above chance
    assert not is_informative(0.9, None, chance)  # no stderr, no evidence
    assert is_informative(33.2, None, None)  # perplexity: no chance level


def test_few_shot_is_chosen_only_where_zero_shot_is_at_chance_and_the_table_round_trips(
    tmp_path,
):
    rows = [
        lm_eval_row("m", "sst2", 0, 0.66, 0.034, 0.51),  # informative zero-shot
        lm_eval_row("m", "sst2", 5, 0.80, 0.03, 0.51),
        lm_eval_row("m", "rte", 0, 0.55, 0.035, 0.53),  # at chance zero-shot
        lm_eval_row("m", "rte", 5, 0.66, 0.034, 0.53),  # informative with 5 shots
        lm_eval_row("m", "cola", 0, 0.0, 0.03, 0.0, "mcc"),  # at chance either way
        lm_eval_row("m", "cola", 5, 0.02, 0.03, 0.0, "mcc"),
        {**lm_eval_row("m", "sst2", 0, 0.9, 0.01, None), "primary": False},  # not primary
    ]
    table = signal_table(rows)
    assert {t: (e["num_fewshot"], e["informative"]) for t, e in table["m"].items()} == {
        "sst2": (0, True),
        "rte": (5, True),
        "cola": (0, False),
    }
    path = write_table(table, tmp_path / "signal.toml")
    assert load_table(path) == table
    assert fewshot_for("m", "rte", load_table(path)) == 5
    assert informative_cells(load_table(path))[("m", "cola")] is False
    with pytest.raises(ValueError, match="no entry for \\('m', 'qnli'\\).*python -m see signal"):
        fewshot_for("m", "qnli", table)
    assert choose([lm_eval_row("m", "wnli", 0, 0.4, 0.06, 0.56)])["informative"] is False


def test_signal_fewshot_setting_must_name_an_entry_before_any_run(tmp_path, monkeypatch):
    from see.config import GridConfig
    from see.evaluation import signal
    from see.grid import run_grid

    monkeypatch.setattr(signal, "SIGNAL_TABLE", tmp_path / "signal.toml")
    cfg = GridConfig(
        name="t",
        models=["smollm2-135m"],
        methods=["baseline"],
        ratios=[10],
        tasks={"sst2": 2},
        num_fewshot="signal",
    )
    with pytest.raises(ValueError, match="no entry for \\('smollm2-135m', 'sst2'\\)"):
        run_grid(cfg, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    with pytest.raises(ValueError, match="num_fewshot must be an int >= 0 or 'signal'"):
        dataclasses.replace(cfg, num_fewshot="five")


@needs_data
@pytest.mark.slow
def test_fewshot_from_the_signal_table_reaches_lm_eval(tmp_path, monkeypatch):
    from see.config import GridConfig
    from see.evaluation import signal
    from see.grid import run_grid

    rte = {"num_fewshot": 0, "informative": False, "value": 0.5, "chance": 0.53, "stderr": 0.04}
    table = {"smollm2-135m": {"sst2": {"num_fewshot": 2, "informative": True}, "rte": rte}}
    monkeypatch.setattr(signal, "SIGNAL_TABLE", write_table(table, tmp_path / "signal.toml"))
    cfg = GridConfig(
        name="t",
        models=["smollm2-135m"],
        methods=["baseline"],
        ratios=[10],
        tasks={"sst2": 2, "rte": 2},
        num_fewshot="signal",
        skip_uninformative=True,
    )
    rows = run_grid(cfg, tmp_path / "results").rows()
    sst2 = [r for r in rows if r["task"] == "sst2"]
    assert sst2 and {r["num_fewshot"] for r in sst2} == {2}  # lm-eval's own n-shot
    (skipped,) = [r for r in rows if r["task"] == "rte"]  # not evaluated: uninformative
    assert (
        skipped["status"] == "skipped"
        and "rte is uninformative for smollm2-135m" in (skipped["note"])
    )
    with pytest.raises(ValueError, match="skip_uninformative needs num_fewshot = 'signal'"):
        dataclasses.replace(cfg, num_fewshot=0)


@needs_data
def test_an_untied_head_stays_dense_under_every_method(smollm):
    """Under `shared`, a tied head becomes the compressed table; an untied one is the
    model's own matrix and must stay exactly as it was, whatever the method."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from see.methods import METHODS, get_method
    from see.models import compress_model
    from see.models.surgery import head_in_use

    _, tok = smollm
    config = LlamaConfig(
        vocab_size=2000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=False,
    )
    cheap = {"steps": 3, "epochs": 1, "sampling": "uniform", "checkpoints": 1, "iters": 2}
    cheap["token_slots"] = "hash"  # SEE: no validation counts for a random 2,000-row table
    for name, cls in sorted(METHODS.items()):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
        head = model.get_output_embeddings().weight.detach().clone()
        table = model.get_input_embeddings().weight.detach().clone()
        allowed = {f.name for f in dataclasses.fields(cls.Options)}
        options = {k: v for k, v in cheap.items() if k in allowed}
        ratio = 1.0 if name == "baseline" else cls.fixed_ratio(cls.make_options(options)) or 2.0
        counts = torch.arange(2000).flip(0)  # frequency-aware methods (pq, groupreduce) need some
        fisher = torch.ones(64, dtype=torch.float64)  # pq's Fisher-weighted dimensions too
        module = get_method(name).from_table(
            table, ratio, tokenizer=tok, token_counts=counts, dim_fisher=fisher, **options
        )
        compress_model(model, module, "shared")
        assert head_in_use(model, "shared") == "dense (untied)", name
        assert torch.equal(model.get_output_embeddings().weight, head), name
    assert json.dumps(sorted(METHODS))  # every registered method was compressed above


@needs_data
@pytest.mark.slow
def test_signal_run_measures_held_out_documents_and_writes_the_table(tmp_path):
    from see.evaluation.signal import held_out_docs, run_signal
    from see.evaluation.tasks import render_tasks

    indices, labels = held_out_docs("rte", 4, render_tasks())
    assert indices == [273, 274, 275, 276]  # RTE's 277 validation documents: the last four
    assert set(labels) <= {0, 1}
    table_path = tmp_path / "signal.toml"
    run_dir = run_signal(["smollm2-135m"], ["rte"], 4, (0,), tmp_path, table_path=table_path)
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").open()]
    (primary,) = [r for r in rows if r["primary"]]
    assert primary["metric"] == "acc" and primary["n"] == 4 and primary["docs"] == "last 4"
    assert primary["chance"] == max(labels.count(0), labels.count(1)) / 4
    entry = load_table(table_path)["smollm2-135m"]["rte"]
    assert entry["num_fewshot"] == 0 and entry["run_id"] == run_dir.name
    assert entry["informative"] == is_informative(
        primary["value"], primary["stderr"], primary["chance"]
    )


@needs_data
def test_signal_stops_at_the_first_informative_fewshot_setting(tmp_path, monkeypatch):
    """Zero-shot informative: five-shot is not measured (it cannot change the choice);
    zero-shot at chance: five-shot is; `every_fewshot` measures both anyway."""
    import see.evaluation.lmeval
    import see.models
    import see.models.zoo
    from see.evaluation.signal import run_signal

    scores = {("sst2", 0): 0.9, ("sst2", 5): 0.5, ("rte", 0): 0.5, ("rte", 5): 0.9}
    calls = []

    def fake_evaluate(model, tok, tasks, *, num_fewshot, **_):
        calls.append((tasks[0], num_fewshot))
        value = scores[(tasks[0], num_fewshot)]
        return [{"task": tasks[0], "metric": "acc", "value": value, "stderr": 0.02, "n": 4}]

    monkeypatch.setattr(see.evaluation.lmeval, "evaluate", fake_evaluate)
    monkeypatch.setattr(see.models, "load_model", lambda name, dtype: (None, None))
    monkeypatch.setattr(see.models.zoo, "check_model", lambda name: None)
    table_path = tmp_path / "signal.toml"
    run_signal(["m"], ["sst2", "rte"], 4, (0, 5), tmp_path / "a", table_path=table_path)
    assert calls == [("sst2", 0), ("rte", 0), ("rte", 5)]
    table = load_table(table_path)["m"]
    assert table["sst2"]["num_fewshot"] == 0 and table["rte"]["num_fewshot"] == 5
    calls.clear()
    run_signal(
        ["m"], ["sst2"], 4, (0, 5), tmp_path / "b", table_path=table_path, every_fewshot=True
    )
    assert calls == [("sst2", 0), ("sst2", 5)]


def test_an_unfinished_measurement_writes_no_table_entry():
    """Zero-shot at chance with five-shot still to run: no entry yet (it may be informative);
    informative zero-shot, or every setting measured: an entry."""
    pending = [lm_eval_row("m", "rte", 0, 0.53, 0.035, 0.525)]
    done = [lm_eval_row("m", "sst2", 0, 0.70, 0.03, 0.5)]
    tried = pending + [lm_eval_row("m", "cola", s, 0.53, 0.035, 0.525) for s in (0, 5)]
    table = signal_table(pending + done + tried[1:], fewshots=(0, 5))
    assert set(table["m"]) == {"sst2", "cola"} and not table["m"]["cola"]["informative"]
    assert set(signal_table(pending)["m"]) == {"rte"}  # without `fewshots`: every group


def test_models_subset_keeps_the_full_config_so_another_session_resumes(tmp_path, monkeypatch):
    from see.config import GridConfig
    from see.evaluation import signal
    from see.grid import run_grid

    rte = {"num_fewshot": 0, "informative": False, "value": 0.5, "chance": 0.53, "stderr": 0.04}
    table = {"smollm2-135m": {"rte": rte}, "gemma3-270m": {"rte": rte}}
    monkeypatch.setattr(signal, "SIGNAL_TABLE", write_table(table, tmp_path / "signal.toml"))
    cfg = GridConfig(
        name="t",
        models=["smollm2-135m", "gemma3-270m"],
        methods=["baseline"],
        ratios=[10],
        tasks={"rte": 2},  # uninformative for both: skipped rows, nothing loaded
        num_fewshot="signal",
        skip_uninformative=True,
    )
    store = run_grid(cfg, tmp_path, run_id="r1", models=["smollm2-135m"])
    assert {r["model"] for r in store.rows()} == {"smollm2-135m"}
    assert json.loads((store.run_dir / "config.json").read_text())["models"] == cfg.models
    store = run_grid(cfg, tmp_path, run_id="r1", models=["gemma3-270m"])  # no config change
    assert sorted(r["model"] for r in store.rows()) == ["gemma3-270m", "smollm2-135m"]
    with pytest.raises(ValueError, match="models \\['gpt2'\\] not in preset 't'"):
        run_grid(cfg, tmp_path, run_id="r1", models=["gpt2"])
