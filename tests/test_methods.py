import re

import pytest
import torch

from see.methods import METHODS, get_method
from see.methods.svd import svd_rank


def test_svd_rank_formula_matches_bert_base_numbers():
    assert [svd_rank(30522, 768, cr) for cr in (2.5, 5, 10)] == [299, 149, 74]


def test_svd_reconstructs_a_rank_k_matrix_exactly():
    torch.manual_seed(0)
    vocab, dim, rank = 300, 40, 5
    table = torch.randn(vocab, rank) @ torch.randn(rank, dim)
    cr = vocab * dim / (rank * (vocab + dim))  # the CR whose rank is exactly `rank`
    module = get_method("svd").from_table(table, cr, dim_weight="none")
    assert module.left.shape == (vocab, rank)
    torch.testing.assert_close(module(torch.arange(vocab)), table, atol=1e-4, rtol=1e-4)
    assert module.fit_report["fit_mean_cos"] > 0.9999


def test_svd_counts_params_and_cr_from_stored_tensors():
    table = torch.randn(1000, 64)
    module = get_method("svd").from_table(table, 5, dim_weight="none")
    stored = sum(p.numel() for p in module.parameters())
    assert module.num_params() == stored == svd_rank(1000, 64, 5) * (1000 + 64)
    assert module.reached_cr == pytest.approx(1000 * 64 / stored)
    assert module.reached_cr >= 5
    assert module.num_bytes() == stored * 4


def test_svd_head_logits_equal_materialised_table():
    module = get_method("svd").from_table(torch.randn(200, 32), 4, dim_weight="none")
    hidden = torch.randn(3, 32)
    torch.testing.assert_close(module.head_logits(hidden), hidden @ module.materialize().T)


def test_registry_has_spine_methods_and_rejects_unknown():
    assert {"baseline", "svd"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method 'nope'.*registered methods"):
        get_method("nope")


@pytest.mark.parametrize("cr", [1, 0.5, -3, float("inf")])
def test_cr_at_most_one_or_infinite_is_rejected(cr):
    with pytest.raises(ValueError, match="must be a finite number > 1"):
        get_method("svd").from_table(torch.randn(10, 4), cr, dim_weight="none")


def test_cr_too_high_for_rank_one_is_rejected():
    with pytest.raises(ValueError, match="rank would be 0 < 1"):
        get_method("svd").from_table(torch.randn(100, 8), 50, dim_weight="none")


def test_non_finite_rows_are_rejected():
    table = torch.randn(10, 4)
    table[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf.*\\[3\\]"):
        get_method("svd").from_table(table, 2, dim_weight="none")


def test_frequency_weighted_svd_fits_frequent_rows_better():
    torch.manual_seed(0)
    table = torch.randn(300, 40)
    counts = torch.zeros(300, dtype=torch.long)
    counts[:3] = 10_000  # three frequent tokens: rank 4 can hold them
    plain = get_method("svd").from_table(table, 8, dim_weight="none")
    weighted = get_method("svd").from_table(
        table, 8, freq_weight=1.0, token_counts=counts, dim_weight="none"
    )

    def error(module):
        return (module.materialize()[:3] - table[:3]).norm().item()

    assert error(weighted) < 0.5 * error(plain)
    assert weighted.num_params() == plain.num_params()
    with pytest.raises(ValueError, match="needs token_counts of length 300"):
        get_method("svd").from_table(table, 8, sampling="mixed", freq_weight=0.5, dim_weight="none")


@pytest.mark.parametrize(
    "method, options", [("autoencoder", {"epochs": 1}), ("word2ketxs", {"steps": 2})]
)
def test_fitted_methods_accept_frequency_weights(method, options):
    table = torch.randn(400, 16)
    counts = torch.arange(400)
    module = get_method(method).from_table(
        table, 4, sampling="freq", freq_weight=0.5, token_counts=counts, **options
    )
    assert module.reached_cr >= 4


def test_shared_head_table_cache_follows_parameter_updates():
    from see.methods.word2ket import Word2KetXSEmbedding

    torch.manual_seed(0)
    module = Word2KetXSEmbedding(vocab=50, dim=16, n=2, rank=3)
    hidden = torch.randn(2, 16)
    cached = module.head_logits(hidden)
    assert module._head_table is not None  # built once, reused by the next call
    assert torch.allclose(cached, hidden @ module.materialize().T, atol=1e-5)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    module(torch.arange(50)).sum().backward()
    opt.step()  # bumps the parameters' versions: the cached table is stale
    assert torch.allclose(module.head_logits(hidden), hidden @ module.materialize().T, atol=1e-5)
    assert not torch.allclose(module.head_logits(hidden), cached)
    module.head_cache = False
    assert torch.allclose(module.head_logits(hidden), hidden @ module.materialize().T, atol=1e-5)


@pytest.mark.parametrize(
    "method, options, message",
    [
        (
            "pq",
            {"freq_weight": "a"},
            "option freq_weight='a' of method 'pq' must be float, not str",
        ),
        ("see", {"steps": 2.5}, "option steps=2.5 of method 'see' must be int, not float"),
        ("svd", {"codes_dtype": 8}, "option codes_dtype=8 of method 'svd' must be str, not int"),
        (
            "pq",
            {"freq_weight": float("nan")},
            "option freq_weight=nan of method 'pq' must be finite",
        ),
    ],
)
def test_options_of_the_wrong_type_name_the_option(method, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_method(method).make_options(options)


def test_an_int_for_a_float_option_is_kept_as_given():
    assert get_method("pq").make_options({"freq_weight": 1}).freq_weight == 1


def test_noise_control_moves_each_row_by_its_share_and_repeats_its_draw():
    table = torch.randn(50, 16) * torch.linspace(0.1, 3, 50)[:, None]
    noisy = get_method("noise").from_table(table, 1.0, relative_error=0.3)
    moved = torch.linalg.norm(noisy.weight - table, dim=1) / torch.linalg.norm(table, dim=1)
    assert torch.allclose(moved, torch.full((50,), 0.3), atol=1e-5)
    assert noisy.fit_report["fit_rel_error"] == pytest.approx(0.3, abs=1e-5)
    again = get_method("noise").from_table(table, 1.0, relative_error=0.3)
    other = get_method("noise").from_table(table, 1.0, relative_error=0.3, draw=1)
    assert torch.equal(noisy.weight, again.weight) and not torch.equal(noisy.weight, other.weight)
    assert noisy.byte_cr == 1.0
    with pytest.raises(ValueError, match="relative_error"):
        get_method("noise").from_table(table, 1.0, relative_error=0.0)
    with pytest.raises(ValueError, match="byte ratio 1"):
        get_method("noise").from_table(table, 10.0)
