"""Frequency-aware compression: pq's residual tier and weighted k-means, groupreduce, and the
data-free frequency proxy (issue 40)."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_data

from see.methods import get_method
from see.methods.base import UnreachableCR
from see.methods.frequency import token_order_counts
from see.methods.groupreduce import allocate_ranks
from see.methods.pq import ID_BYTES, codebook_dtype, frequent_tokens, pq_bytes, residual_share

FLAT = {"dim_weight": "none"}  # a table without a model: every dimension alike
# a small table's codebooks are a large share of its bytes: `auto` would store them as int4
FP16 = {"codebook_dtype": "float16"}


def zipf_table(vocab: int = 3000, dim: int = 48, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, dim, generator=generator)
    counts = (vocab / torch.arange(1, vocab + 1).double()).floor()[torch.randperm(vocab)]
    return table, counts


def weighted_error(module, table: torch.Tensor, counts: torch.Tensor) -> float:
    weights = counts.double() + 1
    rest = (module.materialize().double() - table.double()).pow(2).sum(1)
    return (weights * rest).sum().item() / weights.sum().item()


def test_residual_tier_covers_the_most_frequent_tokens_and_its_bytes_add_up():
    table, counts = zipf_table()
    pq = get_method("pq").from_table(
        table, 6, residual_share=0.4, iters=4, token_counts=counts, bits=6, **FLAT, **FP16
    )
    vocab, dim = table.shape
    k = len(pq.residual_ids)
    m, m2 = pq.fit_report["pq_subvectors"], pq.fit_report["pq_residual_subvectors"]
    assert k == pq.fit_report["pq_residual_tokens"]
    # the tier holds the k most frequent tokens: no token outside it is more frequent
    inside = torch.zeros(vocab, dtype=torch.bool)
    inside[pq.residual_ids.long()] = True
    assert len(set(pq.residual_ids.tolist())) == k < vocab
    assert counts[inside].min() >= counts[~inside].max()
    stored = (
        pq_bytes(vocab, dim, m, 6, "float16") + pq_bytes(k, dim, m2, 6, "float16") + k * ID_BYTES
    )  # fp16
    assert pq.num_bytes() == stored
    assert 6 <= pq.byte_cr < 6 * 1.01  # the residual tier takes what stage 1 leaves over
    ids = torch.randint(0, vocab, (5, 9))
    torch.testing.assert_close(pq(ids), pq.materialize()[ids])
    rebuilt = pq.materialize()
    stage1 = get_method("pq")(pq.codes, pq.codebooks, codebook_dtype="float16").materialize()
    assert (rebuilt[inside] - table[inside]).norm() < (stage1[inside] - table[inside]).norm()
    torch.testing.assert_close(rebuilt[~inside], stage1[~inside])


def test_residual_tiers_nest_by_frequency_and_their_bytes_add_up():
    table, counts = zipf_table()
    options = {"residual_share": 0.6, "bits": 6, "iters": 4, "token_counts": counts, **FLAT, **FP16}
    three = get_method("pq").from_table(table, 10, residual_tiers=3, **options)
    vocab, dim = table.shape
    report, stored = (
        three.fit_report,
        pq_bytes(vocab, dim, three.fit_report["pq_subvectors"], 6, "float16"),
    )
    previous = set(range(vocab))
    for tier, suffix in ((1, ""), (2, "2"), (3, "3")):
        ids = getattr(three, "residual_ids" if tier == 1 else f"residual{tier}_ids")
        k = report[f"pq_residual{suffix}_tokens"]
        assert len(ids) == k and set(ids.tolist()) <= previous  # the top k, nested
        assert counts[ids.long()].min() >= counts[[i for i in range(vocab) if i not in ids]].max()
        stored += (
            pq_bytes(k, dim, report[f"pq_residual{suffix}_subvectors"], 6, "float16") + k * ID_BYTES
        )
        previous = set(ids.tolist())
    assert three.num_bytes() == stored and 10 <= three.byte_cr < 10 * 1.01
    ids = torch.randint(0, vocab, (5, 9))
    torch.testing.assert_close(three(ids), three.materialize()[ids])
    # each tier adds to its tokens' rows only: the most frequent token gets all three stages
    top, rare = frequent_tokens(counts, 1).long(), frequent_tokens(-counts, 1).long()
    tier1 = get_method("pq")(three.codes, three.codebooks, codebook_dtype="float16").materialize()
    assert (three.materialize()[top] - table[top]).norm() < (tier1[top] - table[top]).norm()
    torch.testing.assert_close(three.materialize()[rare], tier1[rare])


@pytest.mark.parametrize("tiers", [0, 9])
def test_bad_residual_tiers_name_the_option(tiers):
    with pytest.raises(ValueError, match=f"residual_tiers={tiers!r}; allowed: an int from 1"):
        get_method("pq").make_options({"residual_tiers": tiers})


def test_frequency_weighted_kmeans_lowers_the_weighted_error():
    table, counts = zipf_table()
    plain = {"iters": 8, "residual_share": 0.0, "bits": 8, **FLAT}
    uniform = get_method("pq").from_table(table, 8, freq_weight=0.0, **plain)
    weighted = get_method("pq").from_table(table, 8, token_counts=counts, **plain)  # default 1.0
    assert weighted_error(weighted, table, counts) < 0.9 * weighted_error(uniform, table, counts)


def test_frequent_tokens_breaks_ties_by_id():
    counts = torch.tensor([5, 9, 5, 0, 9])
    assert frequent_tokens(counts, 3).tolist() == [0, 1, 4]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"residual_share": 1.0}, "residual_share=1.0; allowed: 0 <= x < 1"),
        ({"residual_share": -0.1}, "residual_share=-0.1; allowed"),
        ({"residual_share": "half"}, "residual_share='half'; allowed: .* or 'auto'"),
        ({"residual_subvectors": -1}, "residual_subvectors=-1; allowed: an int >= 0 \\(0: auto"),
        ({"kmeans_rows": -1}, "kmeans_rows=-1; allowed: an int >= 0 \\(0: all\\)"),
        ({"counts": "books"}, "counts='books'; allowed: \\('wikitext', 'token_order'\\)"),
        (
            {"codebook_dtype": "int2"},
            "codebook_dtype='int2'; allowed: \\('float32', 'float16', 'int8', 'int4', 'auto'\\)",
        ),
    ],
)
def test_bad_pq_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        get_method("pq").make_options(options)


def test_the_auto_codebook_dtype_follows_the_codebooks_share_of_the_bytes():
    # SmolLM2's table (49,152 x 576) with two stages: fp16 codebooks take ratio / 192 of it
    budget = {ratio: 49152 * 576 * 4 / ratio for ratio in (10, 20, 40, 80)}
    chosen = [codebook_dtype("auto", 576, budget[ratio], 2) for ratio in (10, 20, 40, 80)]
    assert chosen == ["float16", "int8", "int8", "int4"]
    gemma = 262144 * 640 * 4 / 80  # a large vocabulary: fp16 codebooks take 8% at 80x
    assert codebook_dtype("auto", 640, gemma, 2) == "float16"
    assert codebook_dtype("int8", 640, gemma, 2) == "int8"


def test_the_auto_residual_share_grows_with_the_byte_ratio():
    shares = [residual_share("auto", ratio) for ratio in (10, 20, 40, 80)]
    assert shares == [0.25, 0.25, 0.5, 0.65]
    assert residual_share(0.2, 80) == 0.2
    table, counts = zipf_table()
    fitted = {
        share: get_method("pq").from_table(
            table, 4, residual_share=share, iters=2, bits=6, token_counts=counts, **FLAT
        )
        for share in ("auto", 0.25)
    }
    assert torch.equal(fitted["auto"].materialize(), fitted[0.25].materialize())


def test_a_residual_stage_the_budget_cannot_afford_is_unreachable():
    table, counts = zipf_table()  # 256 x 48 fp16 codebooks: a 25 KB stage of a 96 KB budget
    with pytest.raises(UnreachableCR, match="affords 0 tokens at byte ratio 6"):
        get_method("pq").from_table(
            table, 6, residual_share=0.2, iters=2, bits=8, token_counts=counts, **FLAT, **FP16
        )
    with pytest.raises(ValueError, match="residual_subvectors=5 must divide d=48"):
        get_method("pq").from_table(
            table, 2, residual_share=0.2, residual_subvectors=5, token_counts=counts, **FLAT
        )


def test_groupreduce_meets_the_byte_target_and_favours_frequent_tokens():
    table, counts = zipf_table()
    module = get_method("groupreduce").from_table(table, 8, token_counts=counts, groups=4)
    vocab, dim = table.shape
    ranks = module.fit_report["groupreduce_ranks"]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]
    stored = vocab + 4 * sum(r * (n + dim) for r, n in zip(ranks, module.sizes, strict=True))
    assert module.num_bytes() == stored  # uint8 block ids + fp32 factors; the slot index is derived
    assert 8 <= module.byte_cr < 8 * 1.1
    ids = torch.randint(0, vocab, (4, 6))
    torch.testing.assert_close(module(ids), module.materialize()[ids])
    errors = module.fit_report["groupreduce_weighted_error"]
    assert min(errors) <= errors[0]  # refinement never keeps a worse grouping
    svd = get_method("svd").from_table(table, 8, dim_weight="none")
    assert weighted_error(module, table, counts) < weighted_error(svd, table, counts)


def test_groupreduce_rank_allocation_fills_the_budget():
    ranks = allocate_ranks([100, 100, 100], [1.0, 0.25, 0.01], 16, 4 * 116 * 12, 0.5)
    assert sum(4 * r * 116 for r in ranks) <= 4 * 116 * 12
    assert ranks[0] >= ranks[1] >= ranks[2] >= 1
    # a block at its full rank leaves the rest of the bytes to the others
    ranks = allocate_ranks([100, 100, 100], [1.0, 1e-4, 1e-4], 16, 4 * 116 * 30, 1.5)
    assert ranks[0] == 16 and ranks[1] == ranks[2] == 7
    with pytest.raises(UnreachableCR, match="rank 1 in each of 3 blocks"):
        allocate_ranks([100, 100, 100], [1.0, 0.5, 0.1], 16, 1000, 0.5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"groups": 0}, "groups=0; allowed: an int from 1 to 255"),
        ({"rank_power": -1}, "rank_power=-1; allowed"),
        ({"refine_iters": -1}, "refine_iters=-1; allowed"),
        ({"freq_weight": -0.5}, "freq_weight=-0.5; allowed"),
    ],
)
def test_bad_groupreduce_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        get_method("groupreduce").make_options(options)


def test_saved_groupreduce_and_residual_pq_reload(tmp_path):
    from safetensors.torch import load_file, save_file

    table, counts = zipf_table()
    for name, options in [
        ("groupreduce", {"groups": 3}),
        ("pq", {"residual_share": 0.3, "bits": 6, "iters": 2, **FLAT}),
        ("pq", {"residual_share": 0.5, "residual_tiers": 2, "bits": 6, "iters": 2, **FLAT}),
    ]:
        module = get_method(name).from_table(table, 6, token_counts=counts, **options)
        save_file(module.state_dict(), tmp_path / f"{name}.safetensors")
        shapes = {
            k: torch.empty(v.shape, dtype=v.dtype) if isinstance(v, torch.Tensor) else v
            for k, v in module.init_kwargs().items()
        }
        again = get_method(name)(**shapes)
        again.load_state_dict(load_file(tmp_path / f"{name}.safetensors"))
        torch.testing.assert_close(again.materialize(), module.materialize())
        assert again.num_bytes() == module.num_bytes()


@pytest.mark.parametrize("dtype", ["float16", "int8", "int4"])
def test_codebooks_are_stored_counted_and_computed_in_their_dtype(tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    table, counts = zipf_table()
    options = {"residual_share": 0.4, "bits": 6, "iters": 2, "token_counts": counts, **FLAT}
    full = get_method("pq").from_table(table, 8, codebook_dtype="float32", **options)
    small = get_method("pq").from_table(table, 8, codebook_dtype=dtype, **options)
    state = small.state_dict()
    stored_dtype = torch.uint8 if dtype == "int4" else getattr(torch, dtype)  # int4: packed
    assert state["codebooks"].dtype == state["residual_codebooks"].dtype == stored_dtype
    vocab, dim = table.shape
    report = small.fit_report
    m, m2 = report["pq_subvectors"], report["pq_residual_subvectors"]
    k = report["pq_residual_tokens"]
    stored = pq_bytes(vocab, dim, m, 6, dtype) + pq_bytes(k, dim, m2, 6, dtype) + k * ID_BYTES
    if dtype != "float16":  # one fp16 scale per dimension and stage
        assert state["codebooks_scale"].numel() == state["residual_codebooks_scale"].numel() == dim
        per_number = {"int8": 1, "int4": 0.5}[dtype]
        codebooks = 2 * (64 * dim * per_number + 2 * dim)  # two stages of 64 centroids
        assert stored == vocab * m + k * m2 + k * ID_BYTES + codebooks  # uint8 codes (6 bits)
    assert small.num_bytes() == stored and 8 <= small.byte_cr < 8 * 1.01
    # the bytes the codebooks no longer take buy codes: a finer stage 1 or more tier tokens
    assert (m, k) > (full.fit_report["pq_subvectors"], full.fit_report["pq_residual_tokens"])
    # the model computes with the values it stores: a reload gives the same rows, bit for bit
    if dtype == "float16":
        assert torch.equal(small.stored(small.codebooks), state["codebooks"].float())
    save_file(state, tmp_path / "pq.safetensors")
    shapes = {
        k: torch.empty(v.shape, dtype=v.dtype) if isinstance(v, torch.Tensor) else v
        for k, v in small.init_kwargs().items()
    }
    again = get_method("pq")(**shapes)
    again.load_state_dict(load_file(tmp_path / "pq.safetensors"))
    assert torch.equal(again.materialize(), small.materialize())
    assert again.num_bytes() == small.num_bytes()
    assert torch.equal(again.codebooks.detach(), small.stored(small.codebooks).detach())
    assert torch.equal(again.stored(again.codebooks), again.codebooks.detach())
    # and a reload gives the same rows still (the stored values are a fixed point)
    assert torch.equal(get_method("pq")(**again.init_kwargs()).materialize(), small.materialize())


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_integer_codebooks_train_through_their_rounding(dtype):
    table, counts = zipf_table(vocab=600, dim=24)
    options = {"residual_share": 0, "bits": 4, "iters": 2, "token_counts": counts, **FLAT}
    pq = get_method("pq").from_table(table, 4, codebook_dtype=dtype, **options)
    pq(torch.arange(600)).pow(2).sum().backward()
    assert pq.codebooks.grad is not None and pq.codebooks.grad.abs().sum() > 0


@needs_data
def test_token_order_proxy_is_deterministic_and_tracks_real_counts(smollm):
    from see.evaluation.validation import validation_ids

    _, tok = smollm
    vocab = len(tok)
    proxy = token_order_counts(tok, vocab)
    assert torch.equal(proxy, token_order_counts(tok, vocab))
    assert proxy[tok.all_special_ids].sum() == 0
    real = torch.bincount(validation_ids(tok, None), minlength=vocab)[:vocab].double()
    top = proxy.argsort(descending=True)[:4096]
    # the proxy's 4,096 first tokens carry most of the validation text (uniform: 8%)
    assert real[top].sum() / real.sum() > 0.6


@needs_data
def test_heldout_sweep_scores_text_its_counts_never_saw(smollm):
    from see.config import grid_defaults
    from see.evaluation.heldout_sweep import TEXTS, held_out_texts
    from see.evaluation.validation import validation_ids

    _, tok = smollm
    counted, texts = held_out_texts(tok, 256, None)
    valid = validation_ids(tok, None)
    assert torch.equal(counted, valid[: len(valid) // 2])
    assert torch.equal(texts["wikitext_valid_b"], valid[len(valid) // 2 :][:256])
    assert set(texts) == set(TEXTS) and all(len(ids) == 256 for ids in texts.values())
    # the checkpoints are chosen on the grid's selection slice: inside the counted half
    selection = grid_defaults()["selection_tokens"]
    assert torch.equal(validation_ids(tok, selection), counted[:selection])


DIM_WEIGHT_FITS = {  # every fitted method, each with a small fit
    "pq": {"bits": 6, "iters": 4, "residual_share": 0.5},
    "svd": {},
    "svd_finetuned": {"finetune": True, "steps": 60, "batch_tokens": 512, "lr": 1e-2},
    "groupreduce": {"groups": 4},
    "autoencoder": {"epochs": 2},
}


@pytest.mark.parametrize("fit", DIM_WEIGHT_FITS)
def test_fisher_dimension_weights_move_the_error_to_the_dimensions_the_model_minds_least(fit):
    """The lever every fitted method is offered (dimweight.py), at equal bytes."""
    table, counts = zipf_table()
    fisher = torch.ones(table.shape[1], dtype=torch.float64)
    fisher[:8] = 100.0  # the model minds errors in the first 8 dimensions 100x more
    method = get_method(fit.removesuffix("_finetuned"))
    options = {**DIM_WEIGHT_FITS[fit], "token_counts": counts}
    plain = method.from_table(table, 8, **FLAT, **options)
    weighted = method.from_table(table, 8, dim_weight="fisher", dim_fisher=fisher, **options)
    assert weighted.num_bytes() == plain.num_bytes()  # the scale is not stored

    def error(module, dims):
        return (module.materialize()[:, dims] - table[:, dims]).pow(2).mean().item()

    assert error(weighted, slice(0, 8)) < 0.9 * error(plain, slice(0, 8))
    assert error(weighted, slice(8, None)) > error(plain, slice(8, None))
    ids = torch.randint(0, table.shape[0], (4, 7))
    torch.testing.assert_close(weighted(ids), weighted.materialize()[ids])


def test_kronecker_fits_hand_their_fisher_scale_to_the_row_fit(monkeypatch):
    """SEE, see_morph and word2ketXS fit through KroneckerEmbedding.fit_to: the same row fit
    as SVD's fine-tuning above (on a random table their fits keep their closed-form start,
    so the plumbing is what is checked here)."""
    import see.methods.kronecker as kronecker

    seen = []

    def fit_rows(module, *args, dim_scale, **keywords):
        seen.append(dim_scale)
        module.fit_report = {}
        return module

    monkeypatch.setattr(kronecker, "fit_rows", fit_rows)
    table, _ = zipf_table()
    fisher = torch.full((table.shape[1],), 2.0, dtype=torch.float64)
    fisher[0] = 8.0
    w2k = get_method("word2ketxs")
    w2k.from_table(table, 8, dim_weight="fisher", dim_fisher=fisher, sampling="uniform")
    w2k.from_table(table, 8, sampling="uniform")
    expected = (fisher / fisher.mean()).sqrt().float()
    torch.testing.assert_close(seen[0], expected)
    assert seen[1] is None  # the default: dimensions alike


def test_fisher_dimension_weights_need_the_fisher_and_a_known_name():
    table, counts = zipf_table()
    with pytest.raises(ValueError, match="dim_weight='fisher' needs the input Fisher"):
        get_method("pq").from_table(table, 8, dim_weight="fisher", token_counts=counts)
    for method in ("pq", "svd", "see", "groupreduce", "autoencoder", "word2ketxs"):
        with pytest.raises(ValueError, match=r"dim_weight='hessian'; allowed: \('auto', 'none'"):
            get_method(method).make_options({"dim_weight": "hessian"})


def test_input_fisher_of_the_real_model_is_positive_per_dimension_and_uneven(smollm):
    from see.compress import input_fisher

    model, tok = smollm
    ids = tok("The quick brown fox jumps over the lazy dog. " * 20, return_tensors="pt").input_ids[
        0
    ]
    fisher = input_fisher(model, ids, window=64)
    assert fisher.shape == (model.config.hidden_size,) and bool((fisher > 0).all())
    assert fisher.max() > 5 * fisher.median()  # some dimensions matter far more
    assert all(p.grad is None for p in model.parameters())  # the model is left untouched
    with torch.no_grad():  # the same under a caller's no_grad
        torch.testing.assert_close(input_fisher(model, ids, window=64), fisher)


def test_auto_dimension_weights_are_fisher_up_to_40x_and_none_beyond():
    from see.methods.base import FitContext
    from see.methods.dimweight import dimension_scale

    options = get_method("pq").make_options({})  # dim_weight "auto", the default
    fisher = torch.tensor([1.0, 4.0, 1.0, 2.0], dtype=torch.float64)
    ctx = FitContext(input_fisher=lambda: fisher)
    torch.testing.assert_close(
        dimension_scale(options.dim_weight, ctx, 4, 40.0, "pq"), (fisher / 2).sqrt().float()
    )
    assert (
        dimension_scale(options.dim_weight, FitContext(), 4, 80.0, "pq") is None
    )  # no Fisher asked for
    with pytest.raises(ValueError, match="needs the input Fisher"):
        dimension_scale(options.dim_weight, FitContext(), 4, 20.0, "pq")
