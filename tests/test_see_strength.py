"""SEE at full strength: the token slot, the shared row-fit levers, the sememe control."""

from collections import Counter

import pytest
import torch
from conftest import needs_data

from see.methods import get_method
from see.methods.base import FitContext, UnreachableCR
from see.methods.rowfit import (
    RowFit,
    draw_rows,
    fit_rows,
    identification_loss,
    identification_rate,
    row_probs,
)
from see.methods.see import SEEOptions, slot_shapes, token_buckets_of, token_texts
from see.sememes.units import build_unit_map


@pytest.mark.slow
def test_token_slot_gives_every_token_of_the_real_vocabulary_its_own_unit_tuple(smollm):
    _, tok = smollm
    texts = token_texts(tok, len(tok))
    shared = build_unit_map(texts, n=2, separate=False).token_units  # morphemes, forms, chars
    assert max(Counter(map(tuple, shared.tolist())).values()) > 1  # shared units collide
    buckets = token_buckets_of(shared, 2000)
    full = torch.cat([shared, buckets[:, None].int()], dim=1)
    assert len(set(map(tuple, full.tolist()))) == len(texts)
    assert 1000 < len(set(buckets.tolist())) <= 2000  # hashed over the buckets, not one bucket


def test_identification_loss_on_distinct_rows_weighted_by_repeats_is_the_batch_mean():
    torch.manual_seed(0)
    rows, rebuilt = torch.randn(300, 16), torch.randn(300, 16)
    ids = torch.cat([torch.randint(300, (200,)), torch.full((56,), 7)])  # row 7 repeated
    fit = RowFit(id_negatives=64)
    batch = identification_loss(rebuilt[ids], ids, rows, fit, torch.Generator().manual_seed(1))
    unique, repeats = torch.unique(ids, return_counts=True)
    distinct = identification_loss(
        rebuilt[unique], unique, rows, fit, torch.Generator().manual_seed(1), repeats.float()
    )
    unweighted = identification_loss(
        rebuilt[unique], unique, rows, fit, torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(distinct, batch)
    assert abs(unweighted - batch) > 1e-3  # the weights matter: row 7 counts 57 times


def test_token_buckets_follow_the_budget():
    shapes = {
        cr: slot_shapes(49152 * 576 / cr - 3 * 49152, 8704, 9, 0, -1, 32, "see")
        for cr in (10, 20, 40)
    }
    for cr, (rank, buckets) in shapes.items():
        assert rank * (8704 + buckets) * 9 <= 49152 * 576 / cr - 3 * 49152
        assert buckets >= 8704  # auto R leaves at least as many buckets as shared units
    assert shapes[10][0] > shapes[20][0] > shapes[40][0]  # the rank moves with the budget
    rank, buckets = slot_shapes(1_000_000, 1000, 9, 4, -1, 32, "see")
    assert rank == 4 and buckets == 1_000_000 // 36 - 1000  # fixed R: H fills the budget
    with pytest.raises(UnreachableCR, match="token buckets"):
        slot_shapes(1000, 1000, 9, 0, -1, 32, "see")


def test_mixed_sampler_draws_half_uniform_half_by_frequency():
    counts = torch.zeros(1000)
    counts[7] = 1e9  # one token holds all the text
    fit = RowFit(batch_tokens=1000, sampling="mixed")
    probs = row_probs(fit, counts, 1000)
    generator = torch.Generator().manual_seed(0)
    ids = torch.cat([draw_rows(fit, probs, 1000, generator) for _ in range(20)])
    share = (ids == 7).float().mean().item()
    assert 0.49 < share < 0.52  # the frequency half (and 1/1000 of the uniform half)
    assert len(ids.unique()) > 900  # the uniform half reaches rare rows
    freq = torch.cat(
        [
            draw_rows(
                RowFit(batch_tokens=1000, sampling="freq"),
                row_probs(RowFit(sampling="freq"), counts, 1000),
                1000,
                generator,
            )
            for _ in range(5)
        ]
    )
    assert (freq == 7).float().mean().item() > 0.99


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"sampling": "zipf"}, "sampling='zipf'"),
        ({"schedule": "linear"}, "schedule='linear'"),
        ({"id_weight": -1.0}, "id_weight=-1.0"),
        ({"id_temperature": 0.0}, "id_temperature=0.0"),
        ({"id_negatives": -5}, "id_negatives=-5"),
        ({"steps": 0}, "steps=0"),
        ({"freq_weight": -0.5}, "freq_weight=-0.5"),
    ],
)
def test_fit_options_out_of_range_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        RowFit(**bad)


def test_see_options_out_of_range_are_rejected():
    see = get_method("see")
    with pytest.raises(ValueError, match="token_buckets must be >= -1"):
        see.from_table(torch.randn(50, 8), 2, tokenizer=object(), token_buckets=-3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stepz'\] for method 'see'"):
        see.from_table(torch.randn(50, 8), 2, tokenizer=object(), stepz=3)
    for bad, match in [
        ({"n": 1}, r"order n must be an int >= 2 or 0 \(auto\), got 1"),
        ({"norm": "batchnorm"}, "unknown norm 'batchnorm'"),
        ({"sememe_source": "cilin"}, "unknown sememe source 'cilin'"),
        ({"token_slots": "digits", "n": 2}, "needs n >= 3"),
        ({"lr": 0}, "fit option lr=0"),
    ]:
        with pytest.raises(ValueError, match=match):  # at config time, before any fit
            see.make_options(bad)
    with pytest.raises(ValueError, match="frequency sampling needs token_counts"):
        get_method("word2ketxs").from_table(torch.randn(100, 16), 4, steps=2)


@needs_data
def test_identification_term_lowers_identification_error_on_a_real_table(smollm):
    model, _ = smollm
    table = model.get_input_embeddings().weight.detach()[:3000].float()
    svd = get_method("svd")
    rates = {}
    for weight in (0.0, 1.0):
        fit = RowFit(
            steps=80,
            batch_tokens=512,
            lr=1e-2,
            sampling="uniform",
            id_weight=weight,
            id_temperature=1.0,
            id_negatives=1024,
            checkpoints=2,
        )
        start = svd.from_table(table, 20, dim_weight="none")
        # checkpoints scored by identification (the start is a candidate too)
        fitted = fit_rows(
            start,
            table,
            fit,
            FitContext(device="cpu", checkpoint_score=lambda m: -identification_rate(m, table)),
        )
        rates[weight] = identification_rate(fitted, table)
    assert rates[1.0] > rates[0.0] + 0.1, rates


@needs_data
def test_random_sememe_control_keeps_the_number_of_sememes_per_token(smollm):
    from see.sememes import get_source

    _, tok = smollm
    texts = token_texts(tok, 3000)
    source = get_source("wordnet")
    real = build_unit_map(texts, n=2, source=source, separate=False)
    shuffled = build_unit_map(texts, n=2, source=source, separate=False, random_sememes=True)

    def sememes(unit_map):
        return [[u for u in row if u.startswith("s:")] for row in unit_map.token_unit_names]

    assert [len(r) for r in sememes(real)] == [len(r) for r in sememes(shuffled)]
    changed = sum(a != b for a, b in zip(sememes(real), sememes(shuffled), strict=True) if a)
    assert changed > 0.9 * sum(1 for r in sememes(real) if r)
    assert shuffled.report["sememe_source"].startswith("random")


def test_frequency_ordered_buckets_give_the_most_frequent_tokens_a_bucket_each():
    shared = torch.tensor([[0], [0], [0], [1], [1], [0], [1], [1]])  # two groups of four
    counts = torch.tensor([0, 50, 3, 40, 0, 7, 0, 0])
    buckets = token_buckets_of(shared, 4, counts)
    assert [buckets[t].item() for t in (1, 3, 5, 2)] == [0, 1, 2, 3]  # by frequency
    full = set(map(tuple, torch.cat([shared, buckets[:, None]], dim=1).tolist()))
    assert len(full) == len(shared)  # still no two tokens with all units equal
    with pytest.raises(ValueError, match="token_slots='bogus'"):
        SEEOptions(token_slots="bogus")


def test_a_diverging_row_fit_restarts_from_the_start_at_a_lower_lr():
    """At an lr far too high for its closed-form start, word2ketXS's row error jumps above 4x
    the start's at the first checkpoint: the fit restarts from the start at lr / 4 (recorded);
    a fit that never crosses the ratio runs one schedule at its lr."""
    from see.methods.rowfit import RESTART_LR_FACTOR, RESTART_RATIO

    torch.manual_seed(0)
    table = torch.randn(400, 16) @ torch.randn(16, 16)
    word2ketxs = get_method("word2ketxs")
    options = {"steps": 40, "sampling": "uniform", "batch_tokens": 128, "checkpoints": 4}
    wild = word2ketxs.from_table(table, 2, lr=3.0, **options)
    start, diverged = wild.history[0], wild.history[1]
    assert diverged["lr"] == 3.0
    assert diverged["fit_rel_error"] > RESTART_RATIO * start["fit_rel_error"]
    assert wild.fit_report["fit_restarts"] == 1
    assert {h["lr"] for h in wild.history[2:]} == {3.0 * RESTART_LR_FACTOR}
    assert len(wild.history) == 1 + 1 + 4  # the start, the diverged checkpoint, a full rerun
    tame = word2ketxs.from_table(table, 2, lr=1e-2, **options)
    assert tame.fit_report["fit_restarts"] == 0
    assert [h["lr"] for h in tame.history] == [0.0] + [1e-2] * 4
