import dataclasses

import pytest
import torch
from conftest import needs_data

from see.heal import (
    HealConfig,
    Healer,
    TeacherCache,
    check_layers,
    hidden_states_at,
)
from see.heal_text import file_ids
from see.methods import get_method
from see.models import compress_model
from see.models.surgery import input_table


def healer_for(fresh_smollm, method="svd", cr=10, fit=None, **overrides):
    """A healer for `method` fitted to the model's table alone (no Fisher: SVD's dimensions
    are weighed alike here)."""
    model, tok = fresh_smollm
    teacher = (model.get_input_embeddings(), model.get_output_embeddings())
    if fit is None:
        fit = {"dim_weight": "none"} if method == "svd" else {}
    compressed = get_method(method).from_table(input_table(model).float(), cr, **fit)
    compress_model(model, compressed, "dense")
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = HealConfig(
        **{
            "stage1_steps": 4,
            "stage2_steps": 4,
            "batch_size": 2,
            "seq_len": 48,
            "lr": 1e-2,
            "compile": False,  # compiled healing: its own test (a compile costs ~40 s here)
            **overrides,
        }
    )
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 20000, (4000,), generator=gen)  # real vocabulary ids, fixed text
    return Healer(model, *teacher, cfg, ids), model


def fixed_loss(healer, stage):
    with torch.no_grad():
        return healer.loss(stage, healer.batch(stage, 0))[0].item()


def test_stage1_lowers_alignment_loss_and_leaves_the_body_untouched(fresh_smollm):
    healer, model = healer_for(fresh_smollm)
    body = {n: p.detach().clone() for n, p in model.named_parameters() if "compressed" not in n}
    before = fixed_loss(healer, "stage1")
    summary = healer.run("stage1")
    assert fixed_loss(healer, "stage1") < before
    assert summary["heal_steps"] == 4 and summary["heal_tokens"] == 4 * 2 * 48
    for name, p in model.named_parameters():
        if "compressed" not in name:
            assert torch.equal(p, body[name]), name  # bitwise unchanged


def test_early_alignment_runs_no_layer_past_the_aligned_one(fresh_smollm):
    healer, model = healer_for(fresh_smollm, align_layers=(2,))
    layers = model.get_decoder().layers
    calls = [0] * len(layers)

    def count(index):
        return lambda module, args, output: calls.__setitem__(index, calls[index] + 1)

    handles = [layer.register_forward_hook(count(i)) for i, layer in enumerate(layers)]
    ids = healer.batch("stage1", 0)
    healer.loss("stage1", ids)
    for handle in handles:
        handle.remove()
    assert calls[:2] == [2, 2] and sum(calls[2:]) == 0  # teacher and student, layers 1-2 only
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
        assert torch.allclose(hidden_states_at(model, ids, (2,))[2], full[2])
        assert torch.allclose(hidden_states_at(model, ids, (len(layers),))[len(layers)], full[-1])


def test_stage1_defaults_to_hidden_states_only_and_row_terms_are_opt_in(fresh_smollm):
    healer, _ = healer_for(fresh_smollm)
    ids = healer.batch("stage1", 0)
    with torch.no_grad():
        assert set(healer.loss("stage1", ids)[1]) == {"hidden_mse"}  # old default: + row terms
        for row_loss in ("raw", "centred"):
            healer.cfg = dataclasses.replace(healer.cfg, row_loss=row_loss)
            assert set(healer.loss("stage1", ids)[1]) == {"hidden_mse", "emb_mse", "emb_cos"}
    raw = dataclasses.replace(healer.cfg, row_loss="raw")
    centred = dataclasses.replace(healer.cfg, row_loss="centred")
    with torch.no_grad():
        healer.cfg = raw
        raw_cos = healer.loss("stage1", ids)[1]["emb_cos"]
        healer.cfg = centred
        centred_cos = healer.loss("stage1", ids)[1]["emb_cos"]
    assert centred_cos > raw_cos  # the shared mean direction flatters the raw cosine


def test_stage2_lowers_the_kl(fresh_smollm):
    healer, _ = healer_for(fresh_smollm)

    def kl():
        with torch.no_grad():
            return healer.loss("stage2", healer.batch("stage2", 0))[1]["kl"]

    before = kl()
    healer.run("stage2")
    assert kl() < before


def test_cached_teacher_gives_the_live_losses_and_serves_every_method(
    fresh_smollm, tmp_path, monkeypatch
):
    healer, model = healer_for(fresh_smollm, teacher_top_k=32)
    ids = healer.batch("stage2", 0)
    with torch.no_grad():
        live = healer.loss("stage2", ids)[1]
    healer.cache = TeacherCache(tmp_path, "smollm2-135m|test")
    with torch.no_grad():
        first = healer.loss("stage2", ids)[1]  # a miss: computes and stores
        cached = healer.loss("stage2", ids)[1]  # a hit: read from disk
    assert first == pytest.approx(live, rel=1e-6) and cached == pytest.approx(live, rel=1e-6)
    assert healer.cache.forwards == 1
    teacher_calls = []
    live_teacher = Healer.teacher_run

    def counted(self, forward):
        teacher_calls.append(1)
        return live_teacher(self, forward)

    monkeypatch.setattr(Healer, "teacher_run", counted)
    healer.cache = TeacherCache(tmp_path / "grid", "smollm2-135m|test")
    healer.run("stage2")  # 4 steps: 4 teacher forwards, stored
    assert len(teacher_calls) == 4
    other = get_method("svd").from_table(
        healer.teacher_input.weight.detach().float(), 20, dim_weight="none"
    )
    model.get_input_embeddings().compressed = other  # another method, same model and batches
    again = Healer(
        model,
        healer.teacher_input,
        healer.teacher_head,
        healer.cfg,
        healer.texts,
        cache=TeacherCache(tmp_path / "grid", "smollm2-135m|test"),
    )
    again.run("stage2")
    assert len(teacher_calls) == 4 and again.cache.forwards == 0  # every batch from the cache


def test_resume_after_a_kill_restores_parameters_and_optimizer_bit_for_bit(fresh_smollm, tmp_path):
    healer, model = healer_for(fresh_smollm, stage1_steps=4, save_every=1)
    module = model.get_input_embeddings()
    start = {k: v.clone() for k, v in module.state_dict().items()}
    healer.run("stage1", tmp_path / "straight.pt")
    straight = torch.load(tmp_path / "straight.pt")
    module.load_state_dict(start)
    two_steps = dataclasses.replace(healer.cfg, stage1_steps=2)
    short = Healer(model, healer.teacher_input, healer.teacher_head, two_steps, healer.texts)
    short.run("stage1", tmp_path / "killed.pt")  # "killed" after step 2
    module.load_state_dict(start)  # a fresh process: the module as compressed, then resume
    healer.run("stage1", tmp_path / "killed.pt")
    resumed = torch.load(tmp_path / "killed.pt")
    assert resumed["step"] == straight["step"] == 4
    for a, b in zip(resumed["params"], straight["params"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        resumed["optimizer"]["state"].values(), straight["optimizer"]["state"].values(), strict=True
    ):
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_continues_the_step_count(fresh_smollm, tmp_path):
    healer, _ = healer_for(fresh_smollm, stage1_steps=2, save_every=1)
    ckpt = tmp_path / "stage1.pt"
    healer.run("stage1", ckpt)
    assert torch.load(ckpt)["step"] == 2
    longer = Healer(
        healer.model,
        healer.teacher_input,
        healer.teacher_head,
        HealConfig(stage1_steps=3, batch_size=2, seq_len=48),
        healer.texts,
    )
    summary = longer.run("stage1", ckpt)
    assert summary["heal_resumed_from"] == 2 and longer.step["stage1"] == 3
    assert torch.load(ckpt)["step"] == 3


def test_bad_healing_configs_give_clear_errors(fresh_smollm):
    with pytest.raises(ValueError, match="budget is zero"):
        HealConfig(stage1_steps=0, stage2_steps=0)
    with pytest.raises(ValueError, match="is the evaluated test split"):
        HealConfig(text="../shared/data/wikitext-2-raw/wiki.test.raw")
    with pytest.raises(ValueError, match="row_loss='mean'; allowed: \\('centred'"):
        HealConfig(row_loss="mean")
    with pytest.raises(ValueError, match="autocast='fp16'; allowed"):
        HealConfig(autocast="fp16")
    with pytest.raises(ValueError, match="unknown align layer 99"):
        healer_for(fresh_smollm, align_layers=(99,))
    with pytest.raises(ValueError, match="unknown align layer 0"):
        check_layers((0,), 30)


@needs_data
def test_training_text_is_wikitext_validation(smollm):
    _, tok = smollm
    ids = file_ids(HealConfig(), tok, None)
    assert len(ids) > 200_000
    assert "<unk>" not in tok.decode(ids[:2000])


def test_heal_speed_summary_compares_each_stage_with_its_first_variant():
    from see.bench.heal_speed import summary

    rows = [
        {"variant": v, "stage": st, "tokens_per_s": t, "validation_token_ppl": 50.0}
        for v, st, t in [
            ("a", "stage1", 100.0),
            ("b", "stage1", 450.0),
            ("c", "stage2", 80.0),
            ("d", "stage2", 120.0),
        ]
    ]
    lines = summary(rows).splitlines()
    assert "x1.00" in lines[0] and "x4.50" in lines[1] and "x1.50" in lines[3]


def test_cached_teacher_hidden_states_give_the_live_stage1_loss(fresh_smollm, tmp_path):
    """Stage 1 with `cache_hidden`: the teacher's aligned hidden states from disk give the
    live loss, and a second pass runs no teacher forward."""
    healer, _ = healer_for(fresh_smollm, cache_hidden=True)
    ids = healer.batch("stage1", 0)
    with torch.no_grad():
        live = healer.loss("stage1", ids)[1]
        healer.cache = TeacherCache(tmp_path, "smollm2-135m|test")
        first = healer.loss("stage1", ids)[1]
        cached = healer.loss("stage1", ids)[1]
    assert first == pytest.approx(live, rel=1e-6) and cached == pytest.approx(live, rel=1e-6)
    assert healer.cache.forwards == 1


def test_bench_heal_refuses_an_unknown_stage_before_any_compute():
    from see.bench.heal_speed import heal_speed

    with pytest.raises(
        ValueError, match="bench-heal stages \\['stage3'\\]; allowed: stage1, stage2"
    ):
        heal_speed(stages=("stage3",))


def tiny_compressed_llama(tied: bool = False):
    """A 2-layer random Llama with an SVD embedding and the dense head: cheap to compile in a
    test (`tied`: the head's weight is the original embedding's, as in SmolLM2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config).eval()
    teacher = (model.get_input_embeddings(), model.get_output_embeddings())
    compress_model(
        model,
        get_method("svd").from_table(input_table(model).float(), 4, dim_weight="none"),
        "dense",
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model, teacher


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_compiled_healing_gives_the_eager_losses_and_updates(stage):
    """`compile`: the student's compiled forward and backward give the eager losses and the
    same trained parameters (to float tolerance), and leave the model itself eager."""
    ids = torch.randint(0, 512, (2000,), generator=torch.Generator().manual_seed(0))
    trained = {}
    for compiled in (False, True):
        model, teacher = tiny_compressed_llama()
        cfg = HealConfig(
            stage1_steps=3, stage2_steps=3, batch_size=2, seq_len=32, lr=1e-2, compile=compiled
        )
        healer = Healer(model, *teacher, cfg, ids)
        assert (type(healer.student).__name__ == "OptimizedModule") == compiled
        first = healer.loss(stage, healer.batch(stage, 0))[0].item()
        healer.run(stage)
        trained[compiled] = (first, model.get_input_embeddings().state_dict())
        assert not hasattr(model, "_orig_mod") and not hasattr(
            model.forward, "_torchdynamo_orig_callable"
        )
    (eager_loss, eager), (compiled_loss, compiled) = trained[False], trained[True]
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)
    for name, tensor in eager.items():
        torch.testing.assert_close(compiled[name], tensor, rtol=1e-3, atol=1e-5)


def test_compile_refuses_an_early_align_layer_and_a_non_bool():
    model, teacher = tiny_compressed_llama()
    ids = torch.randint(0, 512, (2000,))
    with pytest.raises(ValueError, match="compile needs stage 1 aligned at the last layer"):
        Healer(model, *teacher, HealConfig(stage1_steps=2, align_layers=(1,)), ids)
    Healer(model, *teacher, HealConfig(stage1_steps=0, align_layers=(1,)), ids)  # no stage 1
    with pytest.raises(ValueError, match="compile='yes'; allowed: true or false"):
        HealConfig(compile="yes")


def test_bench_heal_only_keeps_each_stage_before_and_rejects_a_bad_pattern():
    from see.bench.heal_speed import VARIANTS, chosen_variants, heal_speed

    names = chosen_variants(("stage1", "stage2"), "compiled")
    firsts = [n for n in VARIANTS if "old default" in n]
    assert names[0] == firsts[0] and firsts[1] in names
    assert all("compiled" in n for n in names if n not in firsts)
    assert len(names) == 2 + sum("compiled" in n for n in VARIANTS)
    with pytest.raises(ValueError, match="bench-heal --only '\\(': not a regex"):
        heal_speed(only="(")


def test_bench_heal_variants_pin_the_levers_their_names_state():
    """A variant left to HealConfig's defaults drifts when a default changes (the "old default"
    once ran compiled): each pins compile, autocast and its stage's teacher, as named."""
    from see.bench.heal_speed import VARIANTS

    for name, (stage, settings, cache) in VARIANTS.items():
        assert settings["compile"] == ("compiled" in name), name
        assert settings["autocast"] == ("bf16" if "bf16" in name else "off"), name
        if stage == "stage1":
            assert settings["cache_hidden"] == (cache is not None), name
            assert settings["row_loss"] == ("raw" if "raw rows" in name else "none"), name
        else:
            assert settings["teacher_top_k"] == (0 if "full teacher" in name else 64), name


def bf16_healed(stage: str, ids: torch.Tensor) -> tuple[dict, tuple, dict, dict]:
    """Heal a tiny tied Llama with bf16 autocast: the trained compressed state, the dtypes of a
    body weight and of the teacher's embedding (also the dense head's weight) during the steps,
    and the frozen parameters before and after."""
    model, teacher = tiny_compressed_llama(tied=True)
    assert model.get_output_embeddings().weight.data_ptr() == teacher[0].weight.data_ptr()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "compressed" not in n}
    cfg = HealConfig(
        stage1_steps=3, stage2_steps=3, batch_size=2, seq_len=32, lr=1e-2, compile=False
    )
    healer = Healer(model, *teacher, dataclasses.replace(cfg, autocast="bf16"), ids)
    dtypes, loss = [], healer.loss

    def watched_loss(stage, ids):
        dtypes.append((model.model.layers[0].mlp.up_proj.weight.dtype, teacher[0].weight.dtype))
        return loss(stage, ids)

    healer.loss = watched_loss
    healer.run(stage)
    after = {n: p.detach() for n, p in model.named_parameters() if n in before}
    return model.get_input_embeddings().state_dict(), dtypes[0], before, after


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_bf16_healing_casts_the_frozen_linears_once_with_the_same_numbers(stage, monkeypatch):
    """Under bf16 autocast the frozen nn.Linear weights are cast once per stage instead of at
    every matmul: the same trained parameters as autocast alone, the frozen weights back in fp32
    bit for bit afterwards, the teacher's embedding (a dense head may share it) untouched."""
    import contextlib

    import see.heal

    ids = torch.randint(0, 512, (2000,), generator=torch.Generator().manual_seed(0))
    cast_once, dtypes, before, after = bf16_healed(stage, ids)
    assert dtypes == (torch.bfloat16, torch.float32)
    for name, tensor in before.items():
        assert after[name].dtype == torch.float32 and torch.equal(after[name], tensor), name
    monkeypatch.setattr(see.heal, "frozen_linears_in", lambda *a: contextlib.nullcontext())
    autocast_only, dtypes, _, _ = bf16_healed(stage, ids)
    assert dtypes == (torch.float32, torch.float32)
    for name, tensor in autocast_only.items():
        assert torch.equal(cast_once[name], tensor), name


def test_healing_trains_a_quantizers_codebooks_and_keeps_its_bytes(fresh_smollm):
    healer, model = healer_for(
        fresh_smollm,
        "pq",
        20,
        {"token_counts": torch.ones(49152), "dim_weight": "none"},
        stage1_steps=0,
        stage2_steps=2,
    )
    compressed = model.get_input_embeddings().compressed
    before = compressed.codebooks.detach().clone()
    codes, nbytes = compressed.codes.clone(), compressed.num_bytes
    healer.run("stage2")
    assert not torch.equal(compressed.codebooks, before)  # the codebooks heal
    assert torch.equal(compressed.codes, codes) and compressed.num_bytes == nbytes
