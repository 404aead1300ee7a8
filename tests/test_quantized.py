"""int8 / int4 / pq: what practitioners pick instead of factorising."""

import pytest
import torch
from conftest import needs_data

from see.methods import get_method
from see.methods.base import UnreachableCR
from see.methods.quantized import pack_int4, unpack_int4

# plain product quantization: no frequency weights, no residual stage (those need token counts)
PLAIN = {
    "freq_weight": 0.0,
    "residual_share": 0.0,
    "codebook_dtype": "float32",
    "dim_weight": "none",
}


def test_int4_packs_two_values_per_byte_and_round_trips_representable_values():
    codes = torch.randint(-8, 8, (50, 64), dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (50, 32)
    assert torch.equal(unpack_int4(packed), codes)
    scales = torch.rand(50, 2) + 0.5  # per-group scales, group 32
    table = codes[:, :].clamp(-7, 7).float().reshape(50, 2, 32) * scales.half().float()[..., None]
    module = get_method("int4").from_table(table.reshape(50, 64), 2)
    torch.testing.assert_close(module.materialize(), table.reshape(50, 64), rtol=2e-3, atol=0)


@pytest.mark.parametrize("method, qmax", [("int8", 127), ("int4", 7)])
def test_quantized_rows_are_within_half_a_step_of_the_originals(method, qmax):
    torch.manual_seed(0)
    table = torch.randn(300, 96) * torch.rand(300, 1) * 3
    module = get_method(method).from_table(table, 2, group_size=32)
    groups = table.reshape(300, 3, 32)
    step = (groups.abs().amax(-1, keepdim=True) / qmax).half().float()
    error = (module.materialize().reshape(300, 3, 32) - groups).abs()
    assert (error <= step / 2 * 1.01 + 1e-6).all()


def test_byte_ratio_is_computed_from_the_stored_tensors():
    table = torch.randn(256, 64)
    int8 = get_method("int8").from_table(table, 2)
    int4 = get_method("int4").from_table(table, 2)
    assert int8.byte_cr == pytest.approx(256 * 64 * 4 / (256 * 64 + 256 * 2 * 2))
    assert int4.byte_cr == pytest.approx(256 * 64 * 4 / (256 * 32 + 256 * 2 * 2))
    int8.codes = int8.codes.to(torch.int16)  # a wider storage dtype: the ratio must drop
    assert int8.byte_cr < 3.0
    assert int8.to(torch.float32).scale_bits.dtype == torch.int16  # fp16 scales stay 2 bytes


def test_pq_with_as_many_centroids_as_distinct_subvectors_is_exact():
    torch.manual_seed(0)
    atoms = torch.randn(4, 16, 8)  # 4 distinct sub-vectors per sub-space
    picks = torch.randint(0, 4, (200, 16))
    table = atoms[picks, torch.arange(16)].reshape(200, 128)
    module = get_method("pq").from_table(table, 1.5, bits=2, subvectors=16, iters=10, **PLAIN)
    torch.testing.assert_close(module.materialize(), table)
    assert module.codes.dtype == torch.uint8


def test_pq_k_means_gives_the_same_codes_on_one_thread_and_on_two():
    # the sub-spaces are fitted on parallel threads: the threads must not change the fit
    from see.methods.pq import product_quantize

    torch.manual_seed(0)
    rows, weights = torch.randn(600, 32), torch.rand(600)
    threads = torch.get_num_threads()
    fits = []
    for count in (1, 2):
        torch.set_num_threads(count)
        fits.append(product_quantize(rows, 8, 4, 10, weights, seed=0))
    torch.set_num_threads(threads)
    assert torch.equal(fits[0][0], fits[1][0])
    assert torch.equal(fits[0][1], fits[1][1])


def test_pq_with_16_centroids_packs_two_codes_per_byte():
    torch.manual_seed(0)
    atoms = torch.randn(16, 8, 4)  # 16 distinct sub-vectors per sub-space: 4 bits are exact
    table = atoms[torch.randint(0, 16, (300, 8)), torch.arange(8)].reshape(300, 32)
    four = get_method("pq").from_table(table, 1.5, bits=4, subvectors=8, iters=10, **PLAIN)
    torch.testing.assert_close(four.materialize(), table)
    assert four.codes.shape == (300, 4) and four.codes.dtype == torch.uint8
    eight = get_method("pq").from_table(table, 1.05, bits=8, subvectors=8, iters=2, **PLAIN)
    codebooks = 8 * 4 * 4  # m x 2**bits x d/m fp32 values
    assert four.num_bytes() == 300 * 4 + 16 * codebooks
    assert eight.num_bytes() == 300 * 8 + 256 * codebooks
    with pytest.raises(ValueError, match="subvectors=1 must divide d=32 and be even"):
        get_method("pq").from_table(table, 1.5, bits=4, subvectors=1, **PLAIN)


def test_impossible_targets_are_unreachable_with_the_reason():
    table = torch.randn(500, 64)
    with pytest.raises(UnreachableCR, match="int8 with group_size 32 stores 3.76x"):
        get_method("int8").from_table(table, 10)
    with pytest.raises(UnreachableCR, match="pq with 256 centroids: the table .* out of reach"):
        get_method("pq").from_table(table, 100, bits=8, **PLAIN)
    with pytest.raises(ValueError, match="group_size=48 must divide d=64"):
        get_method("int4").from_table(table, 2, group_size=48)


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize(
    "method, ratio, options",
    [
        ("int4", 6, {}),
        # the default: weighted k-means, a residual stage for the frequent tokens, Fisher-weighted
        # dimensions (codebooks scaled back before they are saved)
        (
            "pq",
            20,
            {
                "iters": 2,
                "token_counts": torch.arange(49152).flip(0),
                "dim_fisher": torch.linspace(0.5, 2.0, 576, dtype=torch.float64),
            },
        ),
        ("pq", 40, {"iters": 2, "bits": 4, **PLAIN}),
        (
            "svd",
            10,
            {
                "codes_dtype": "int8",
                "dim_fisher": torch.linspace(0.5, 2.0, 576, dtype=torch.float64),
            },
        ),
        ("word2ketxs", 20, {"steps": 2, "sampling": "uniform", "row_order": "pca"}),
    ],
)
def test_saved_quantized_model_reloads_with_identical_logits(
    method, ratio, options, fresh_smollm, sample_ids, tmp_path
):
    from see.models import compress_model
    from see.models.saving import load_compressed, save_compressed
    from see.models.surgery import input_table

    model, _ = fresh_smollm
    compressed = get_method(method).from_table(input_table(model).float(), ratio, **options)
    assert compressed.byte_cr >= ratio
    compress_model(model, compressed, "shared")
    with torch.no_grad():
        expected = model(sample_ids).logits
    save_compressed(tmp_path / method, compressed, base_model="smollm2-135m", head_policy="shared")
    reloaded, _, _ = load_compressed(tmp_path / method)
    with torch.no_grad():
        assert torch.equal(reloaded(sample_ids).logits, expected)


@pytest.mark.parametrize(
    "method, options", [("svd", {"dim_weight": "none"}), ("autoencoder", {"epochs": 1})]
)
def test_int8_factor_codes_buy_rank_within_the_byte_budget(method, options):
    from see.methods.quantized import Int8Rows

    table = torch.randn(2000, 64)
    fp32 = get_method(method).from_table(table, 8, **options)
    int8 = get_method(method).from_table(table, 8, codes_dtype="int8", **options)
    factor = int8.left if method == "svd" else int8.codes
    assert isinstance(factor, Int8Rows) and factor.codes.dtype == torch.int8
    one_more_rank = 2000 + 64 * 4  # an int8 code per row, a column of fp32 decoder
    assert int8.reached_cr == int8.byte_cr >= 8 > 2000 * 64 * 4 / (int8.num_bytes() + one_more_rank)
    assert factor.codes.shape[1] > (fp32.left if method == "svd" else fp32.codes).shape[1]
    assert fp32.byte_cr == pytest.approx(fp32.reached_cr)


def test_int8_rows_error_is_within_half_a_step_per_entry():
    from see.methods.quantized import Int8Rows

    matrix = torch.randn(300, 7) * torch.logspace(-3, 2, 300)[:, None]
    rows = Int8Rows.quantize(matrix)
    step = matrix.abs().amax(1, keepdim=True) / 127
    assert ((rows() - matrix).abs() <= step * 0.5 + step * 1e-3).all()  # + fp16 scale rounding
    assert torch.equal(rows(torch.tensor([3, 5])), rows()[[3, 5]])


def test_bad_codes_dtype_is_named():
    with pytest.raises(ValueError, match="codes_dtype='int4'; allowed: \\('float32', 'int8'\\)"):
        get_method("svd").from_table(torch.randn(100, 16), 4, codes_dtype="int4", dim_weight="none")


def test_int8_and_int4_get_one_cell_at_their_own_ratio():
    from see.config import GridConfig
    from see.grid import expand

    cfg = GridConfig(
        name="t",
        models=["m"],
        methods=["int8", "int4", "svd"],
        ratios=[4, 10],
        tasks={"wikitext": 1},
        method_options={"int4": {"group_size": 64}},
    )
    ratios = {(c.method, c.target_cr) for c in expand(cfg)}
    assert ratios == {("int8", 32 / 8.5), ("int4", 32 / 4.25), ("svd", 4.0), ("svd", 10.0)}


@pytest.mark.parametrize("method", ["int8", "int4", "pq"])
def test_shared_head_of_a_quantizer_never_holds_a_dense_table(method):
    """The quantized table serves as the head chunk by chunk: the logits equal the dequantized
    table's, and no V x d table is kept, even with head_cache on (else no bytes are saved)."""
    torch.manual_seed(0)
    table = torch.randn(3000, 64)
    options = {"iters": 2, **PLAIN} if method == "pq" else {}
    module = get_method(method).from_table(table, 2, **options)
    hidden = torch.randn(2, 5, 64)
    expected = hidden @ module.materialize().T
    assert module.head_cache  # the default: only the cheap-to-rebuild methods opt out
    torch.testing.assert_close(module.head_logits(hidden), expected, rtol=1e-5, atol=1e-4)
    assert module._head_table is None
    torch.testing.assert_close(module.chunked_logits(hidden, chunk_size=700), expected)


def test_cached_shared_head_is_the_exception_not_the_rule():
    svd = get_method("svd").from_table(torch.randn(500, 32), 4, dim_weight="none")
    see_like = get_method("word2ketxs").from_table(
        torch.randn(500, 32), 4, steps=2, sampling="uniform"
    )
    assert not get_method("int4").caches_head and see_like.caches_head
    hidden = torch.randn(3, 32)
    see_like.head_logits(hidden)
    assert see_like._head_table is not None  # rebuilding costly rows once is worth a table
    see_like.head_cache = False
    torch.testing.assert_close(see_like.head_logits(hidden), hidden @ see_like.materialize().T)
    torch.testing.assert_close(svd.head_logits(hidden), hidden @ svd.materialize().T)


def test_threshold_sample_keeps_heavy_rows_and_each_rows_expected_weight():
    # weights 10 and six 1s, about 4 rows: t solves 1 + 6 / t = 4, so t = 2: the heavy row is
    # always kept at its own weight, each light one half the time at weight 2 (expected 1)
    import numpy as np

    from see.methods.pq import threshold_sample

    weights = np.array([10, 1, 1, 1, 1, 1, 1], dtype=np.float32)
    kept = []
    for seed in range(2000):
        keep, sampled = threshold_sample(weights, 7, 4, seed)
        assert keep[0] == 0 and sampled[0] == 10
        np.testing.assert_allclose(sampled[1:], 2.0, rtol=1e-6)
        kept.append(len(keep))
    assert abs(np.mean(kept) - 4) < 0.1  # its standard error: 0.027
    keep, sampled = threshold_sample(weights, 7, 7, 0)  # room for every row: all, as they are
    assert keep is None and sampled is weights
    keep, sampled = threshold_sample(None, 7, 3, 0)  # unweighted: a uniform sample
    assert len(keep) == 3 and sampled is None


def test_pq_kmeans_rows_fits_on_a_sample_and_encodes_every_row():
    torch.manual_seed(0)
    table, counts = torch.randn(2000, 32), torch.randint(0, 50, (2000,))
    options = {**PLAIN, "bits": 4, "subvectors": 8, "iters": 10, "freq_weight": 1.0}
    full = get_method("pq").from_table(table, 8, token_counts=counts, **options)
    roomy = get_method("pq").from_table(table, 8, token_counts=counts, kmeans_rows=2000, **options)
    assert torch.equal(roomy.codes, full.codes)  # a sample of every row is the full fit
    sampled = get_method("pq").from_table(table, 8, token_counts=counts, kmeans_rows=500, **options)
    assert sampled.codes.shape == full.codes.shape and sampled.num_bytes() == full.num_bytes()
    weight = (counts + 1).float()

    def weighted_error(module) -> float:
        return float((weight * (module.materialize() - table).pow(2).sum(1)).sum())

    # a quarter of the rows, the frequent ones among them, costs little in weighted error
    assert weighted_error(sampled) < 1.1 * weighted_error(full)
    with pytest.raises(ValueError, match="pq kmeans_rows=32; allowed: 0 .* or at least 64"):
        get_method("pq").from_table(table, 8, token_counts=counts, kmeans_rows=32, **options)
