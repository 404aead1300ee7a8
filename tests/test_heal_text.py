import pytest
import torch
from conftest import needs_data

from see.config import GridConfig, HealConfig
from see.grid import Cell
from see.heal import Healer
from see.heal_text import healing_texts, passes, teacher_samples, text_hash

TINY = {"sample_length": 12, "sample_batch": 2, "sample_seed": 3}


def test_teacher_samples_are_reproducible_from_seed_and_hash(smollm, tmp_path):
    model, tok = smollm
    cfg = HealConfig(text="teacher-samples", **TINY)
    ids, record = teacher_samples(cfg, tok, model, "smollm2-135m|test", 24, tmp_path / "a")
    again, _ = teacher_samples(cfg, tok, model, "smollm2-135m|test", 24, tmp_path / "b")
    assert torch.equal(ids, again)  # sampled twice from scratch: the same tokens
    assert record["sha256"] == text_hash(ids) and record["tokens"] == len(ids) == 24
    assert (ids.view(2, 12)[:, 0] == tok.bos_token_id).all()  # each sample starts a document
    assert len(set(ids.tolist())) > 8  # sampled text, not one token repeated
    # a longer text extends the shorter one from the cache (chunk i depends on (seed, i) only)
    longer, _ = teacher_samples(cfg, tok, model, "smollm2-135m|test", 40, tmp_path / "a")
    assert len(longer) == 48 and torch.equal(longer[:24], ids)
    other = HealConfig(text="teacher-samples", **{**TINY, "sample_seed": 4})
    reseeded, _ = teacher_samples(other, tok, model, "smollm2-135m|test", 24, tmp_path / "a")
    assert not torch.equal(reseeded, ids)


def test_a_budget_larger_than_the_text_warns_with_its_passes(smollm, tmp_path):
    _, tok = smollm
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    n = len(tok(text.read_text(), add_special_tokens=False).input_ids)
    cfg = HealConfig(text=str(text), stage2_steps=10, batch_size=2, seq_len=32)
    assert cfg.total_tokens() == 640
    expected = 640 / n
    with pytest.warns(UserWarning, match=f"{expected:.2f} passes"):
        texts, info = healing_texts(cfg, tok)
    assert info["heal_text_passes"] == pytest.approx(expected)
    assert info["heal_text_tokens"] == n == len(texts[0])


def test_mixed_text_gives_each_text_half_of_every_batch(smollm, tmp_path):
    model, tok = smollm
    cfg = HealConfig(
        text="wikitext-2-valid+teacher-samples",
        stage2_steps=2,
        batch_size=4,
        seq_len=8,
        compile=False,
    )
    first = torch.arange(0, 100)
    second = torch.arange(1000, 1100)
    teacher = (model.get_input_embeddings(), model.get_output_embeddings())
    healer = Healer(model, *teacher, cfg, [first, second])
    batch = healer.batch("stage2", 0)
    assert (batch[:2] < 100).all() and (batch[2:] >= 1000).all()
    assert passes(cfg, [100, 50]) == pytest.approx(cfg.total_tokens() / 2 / 50)


def test_healing_text_options_name_the_bad_value():
    with pytest.raises(ValueError, match="sample_length=1"):
        HealConfig(sample_length=1)
    with pytest.raises(ValueError, match="sample_temperature=0"):
        HealConfig(sample_temperature=0)
    with pytest.raises(ValueError, match="'a\\+b'"):
        HealConfig(text="a+b")
    with pytest.raises(ValueError, match="batch_size must be even, got 3"):
        HealConfig(text="wikitext-2-valid+teacher-samples", batch_size=3)


@needs_data
def test_a_method_with_nothing_to_train_says_so_in_its_healed_rows(tmp_path):
    from see.grid.pipeline import run_cell

    cfg = GridConfig(
        name="untrainable",
        models=["smollm2-135m"],
        methods=["int4"],
        ratios=[7],
        tasks={"wikitext": 1},
        heal={"stage2_steps": 2, "batch_size": 2, "seq_len": 16},
    )
    cell = Cell("smollm2-135m", "int4", 7.0, "dense", 0)
    rows = [r for batch in run_cell(cell, cfg, {"stage2": ["wikitext"]}, "r", "cpu") for r in batch]
    assert [(r["heal_stage"], r["status"]) for r in rows] == [("stage2", "untrainable")]
    assert "int4 has no trainable parameters" in rows[0]["note"]
