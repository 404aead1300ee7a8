import pickle
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, needs_data

from see.methods import get_method
from see.methods.base import FitContext, UnreachableCR
from see.methods.kronecker import KroneckerEmbedding, kron_rows, unit_dim
from see.methods.rowfit import RowFit
from see.sememes.units import PAD, build_unit_map, morphemes, normalize_token


def test_unit_dim_is_the_smallest_q_with_q_to_the_n_at_least_d():
    assert unit_dim(768, 3) == 10 and unit_dim(576, 3) == 9 and unit_dim(64, 3) == 4
    assert unit_dim(49152, 3) == 37 and unit_dim(1000, 3) == 10


def test_kron_forward_equals_an_explicit_loop():
    torch.manual_seed(0)
    vectors = torch.randn(5, 3, 2, 4)  # 5 tokens, n=3 units, R=2, q=4
    expected = torch.zeros(5, 50)
    for t in range(5):
        for r in range(2):
            a, b, c = vectors[t, 0, r], vectors[t, 1, r], vectors[t, 2, r]
            expected[t] += torch.kron(torch.kron(a, b), c)[:50]
    torch.testing.assert_close(kron_rows(vectors, 50), expected)


class TinyKron(KroneckerEmbedding):
    name = "tiny"

    def __init__(self, units: torch.Tensor, num_units: int, dim: int, rank: int):
        super().__init__(units.shape[0], dim, units.shape[1], rank, num_units)
        self.register_buffer("token_units", units)

    def unit_ids(self, ids):
        return self.token_units[ids]


def test_batch_forward_equals_rows_of_materialize_and_counts_are_exact():
    torch.manual_seed(0)
    units = torch.randint(0, 7, (40, 3), dtype=torch.int32)
    module = TinyKron(units, 7, 30, 2)
    ids = torch.tensor([[3, 9, 3], [0, 39, 12]])
    torch.testing.assert_close(module(ids), module.materialize()[ids])
    stored = sum(t.numel() for t in [*module.parameters(), *module.buffers()])
    assert module.num_params() == stored == 2 * 7 * unit_dim(30, 3) + 2 * 30 + 40 * 3


def test_fit_improves_cosine_over_initialisation():
    torch.manual_seed(0)
    table = torch.randn(60, 16)
    units = torch.stack([torch.arange(60) % 10, torch.arange(60) // 10 + 10, torch.zeros(60)], 1)
    module = TinyKron(units.int(), 16, 16, 4)
    before = module.reconstruction_report(table)["fit_mean_cos"]
    fit = RowFit(steps=150, batch_tokens=60, checkpoints=2, sampling="uniform", lr=3e-2)
    fitted = module.fit_to(table, fit, FitContext(), target_cr=4.0)
    assert fitted.fit_report["fit_mean_cos"] > before + 0.3
    assert [h["step"] for h in fitted.history] == [0, 75, 150]  # the start is a candidate


def test_token_normalisation_and_morphemes():
    assert [normalize_token(t) for t in ["Ġapple", "##ing", "▁water", " The"]] == [
        "apple",
        "ing",
        "water",
        "the",
    ]
    lexicon = frozenset({"play", "happy", "make"})
    assert morphemes("playing", lexicon) == ["m:play", "m:-ing"]
    assert morphemes("unhappy", lexicon) == ["m:happy", "m:un-"]
    assert morphemes("making", lexicon) == ["m:make", "m:-ing"]
    assert morphemes("water", lexicon) == ["m:water"]  # "wat" is no word: no split


@needs_data
def test_known_words_get_documented_units_from_wordnet():
    from see.sememes import get_source

    unit_map = build_unit_map(["Ġapple", "##ing", "▁water", "42"], source=get_source("wordnet"))
    names = unit_map.token_unit_names
    assert names[0] == ("s:fruit|水果", "s:tree|树", "m:apple")
    assert names[1] == ("m:ing", PAD, PAD)
    assert names[2] == ("s:water|水", "s:chemical|化学物", "m:water")
    assert names[3] == ("c:4", "c:2", PAD)  # no sememes: character units
    assert unit_map.report["tokens_with_sememes"] == 2
    assert unit_map.report["sememe_source"] == "wordnet"


def test_collision_separation_leaves_no_shared_tuples():
    texts = ["Ġplay", "play", "ĠPlay", "Play", "Ġplay", "!!", "!!"]
    together = build_unit_map(texts, separate=False)
    apart = build_unit_map(texts)
    assert together.report["collision_rate_before"] > 0
    assert together.report["collision_rate_after"] > 0
    assert apart.report["collision_rate_after"] == 0
    assert max(Counter(map(tuple, apart.token_units.tolist())).values()) == 1


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="number of unit slots must be >= 1"):
        build_unit_map(["a"], n=0)
    with pytest.raises(ValueError, match="rank R must be >= 1"):
        TinyKron(torch.zeros(4, 3, dtype=torch.int32), 2, 8, 0)
    with pytest.raises(UnreachableCR, match="R would be 0 < 1"):
        get_method("word2ketxs").from_table(torch.randn(1000, 64), 600, n=3)


def test_word2ketxs_svd_start_is_exact_at_full_rank():
    torch.manual_seed(0)
    table = torch.randn(100, 16)  # v = 10, q = 4: full rank of the 40 x 40 reshaped table is 40
    module = get_method("word2ketxs")(100, 16, 2, 40, norm="none")
    module.svd_init(table)
    torch.testing.assert_close(module.materialize(), table, atol=1e-4, rtol=1e-4)


def test_word2ketxs_pca_row_order_places_every_row_and_starts_exact_at_full_rank():
    from see.methods.word2ket import pca_places

    torch.manual_seed(0)
    table = torch.randn(90, 16)  # v = 10: 90 rows on a 100-place grid
    table[:, 3] *= 20  # the first principal component is (about) dimension 3
    places = pca_places(table, 2, 10)
    assert sorted(places.tolist()) == list(range(90))  # distinct places, each on the grid
    first_digit = places // 10
    blocks = [table[first_digit == k, 3] for k in range(9)]
    ascending = all(a.max() < b.min() for a, b in zip(blocks[:-1], blocks[1:], strict=True))
    descending = all(a.min() > b.max() for a, b in zip(blocks[:-1], blocks[1:], strict=True))
    assert ascending or descending  # the first digit splits the rows along that component
    module = get_method("word2ketxs")(90, 16, 2, 40, norm="none", places=places)
    module.svd_init(table)  # the grid of svd_init and the digits of unit_ids agree
    torch.testing.assert_close(module.materialize(), table, atol=1e-4, rtol=1e-4)
    fitted = get_method("word2ketxs").from_table(
        torch.randn(1000, 64), 10, steps=2, sampling="uniform", row_order="pca"
    )
    id_order = get_method("word2ketxs").from_table(
        torch.randn(1000, 64), 10, steps=2, sampling="uniform"
    )
    assert fitted.places is not None and id_order.places is None
    assert fitted.num_params() <= 1000 * 64 / 10  # the 1,000 stored places are counted
    assert fitted.fit_report["see_rank"] < id_order.fit_report["see_rank"]
    with pytest.raises(ValueError, match=r"row_order='ids'; allowed: \('id', 'pca'\)"):
        get_method("word2ketxs").from_table(torch.randn(100, 16), 4, row_order="ids")


def test_word2ketxs_digits_and_parameter_count():
    module = get_method("word2ketxs")(1000, 64, 3, 2)  # n=3, R=2
    assert module.radix == 10
    assert module.unit_ids(torch.tensor([0, 123, 999])).tolist() == [
        [0, 10, 20],
        [1, 12, 23],
        [9, 19, 29],
    ]
    assert module.num_params() == 2 * 3 * 10 * 4 + 2 * 64
    fitted = get_method("word2ketxs").from_table(
        torch.randn(1000, 64), 20, steps=2, n=3, sampling="uniform"
    )
    assert fitted.reached_cr >= 20 and fitted.fit_report["see_rank"] >= 1


def write_hownet_fixture(root: Path) -> None:
    """A two-word HowNet dictionary in OpenHowNet 2.0's exact pickle format."""
    resources = root / "resources"
    resources.mkdir(parents=True)
    for name in ("sememe_all", "sememe_triples_taxonomy.txt"):
        shutil.copy(Path(DATA_DIR) / "hownet" / "resources" / name, resources / name)
    senses = {
        "000001": {
            "No": "000001",
            "en_word": "apple",
            "en_grammar": "noun",
            "ch_word": "苹果",
            "ch_grammar": "noun",
            "Def": "{fruit|水果}",
        },
        "000002": {
            "No": "000002",
            "en_word": "apple",
            "en_grammar": "noun",
            "ch_word": "苹果",
            "ch_grammar": "noun",
            "Def": "{computer|电脑:modifier={PatternValue|样式值:CoEvent={able|能:"
            "scope={bring|携带:patient={$}}}}}",
        },
        "000003": {
            "No": "000003",
            "en_word": "water",
            "en_grammar": "noun",
            "ch_word": "水",
            "ch_grammar": "noun",
            "Def": "{water|水}",
        },
    }
    (resources / "HowNet_dict_complete").write_bytes(pickle.dumps(senses))


@needs_data
def test_hownet_source_reads_openhownet_files(tmp_path, monkeypatch):
    from OpenHowNet import Download

    from see.sememes import get_source, resolve_source_name

    monkeypatch.setattr(Download, "OPENHOWNET_RESOURCE_PATH", str(tmp_path))
    assert resolve_source_name("auto") == "wordnet"
    with pytest.raises(FileNotFoundError, match="HowNet_dict_complete.*OpenHowNet.download"):
        get_source("hownet")
    write_hownet_fixture(tmp_path)
    assert resolve_source_name("auto") == "hownet"
    source = get_source("auto")
    assert source.sememes("apple") == [
        "fruit|水果",
        "computer|电脑",
        "PatternValue|样式值",
        "able|能",
        "bring|携带",
    ]
    assert source.sememes("apples") == source.sememes("apple")  # lemma lookup
    assert source.sememes("zzz") == []
    units = build_unit_map(["Ġapple", "▁water"], source=source).token_unit_names
    assert units == [
        ("s:fruit|水果", "s:computer|电脑", "m:apple"),
        ("s:water|水", "m:water", "f:space"),
    ]


@needs_data
def test_see_from_table_on_real_tokens(smollm):
    model, tok = smollm
    table = model.get_input_embeddings().weight.detach()[:400]
    counts = torch.arange(400)
    module = get_method("see").from_table(
        table, 4, tokenizer=tok, steps=3, sememe_source="wordnet", token_counts=counts
    )
    assert module.reached_cr >= 4
    assert module.fit_report["map_collision_rate_after"] == 0
    assert module.num_params() == sum(t.numel() for t in [*module.parameters(), *module.buffers()])
    morph = get_method("see_morph").from_table(
        table, 4, tokenizer=tok, steps=3, sampling="uniform", token_slots="hash"
    )
    assert morph.fit_report["map_tokens_with_sememes"] == 0
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        get_method("see").from_table(table, 4)


@needs_data
def test_auto_order_is_two_while_its_rank_reaches_half_its_unit_dimension(smollm):
    from see.methods.base import FitContext

    model, tok = smollm
    table = model.get_input_embeddings().weight.detach()[:2000]  # d = 576: q = 24 at order 2
    morph = get_method("see_morph")
    options = morph.make_options({"n": 0, "steps": 2, "sampling": "uniform", "token_slots": "hash"})
    ranks = {
        cr: morph.layout(table, cr, options, FitContext(tokenizer=tok), 2).rank for cr in (8, 32)
    }
    assert 2 * ranks[8] >= 24 > 2 * ranks[32]  # the budget leaves order 2 rank at 8, not at 32
    for cr, order in ((8, 2), (32, 3)):
        fitted = morph.from_table(
            table, cr, tokenizer=tok, n=0, steps=2, sampling="uniform", token_slots="hash"
        )
        assert fitted.fit_report["see_order"] == fitted.n == order
        assert fitted.reached_cr >= cr


def test_large_groups_of_look_alike_tokens_are_separated():
    # Gemma has 6,243 `<unusedN>` tokens whose character units are identical
    texts = [f"<unused{i}>" for i in range(3000)]
    unit_map = build_unit_map(texts, hash_buckets=64)
    assert unit_map.report["collision_rate_before"] == 1.0
    assert unit_map.report["collision_rate_after"] == 0
