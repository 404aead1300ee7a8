"""Bootstrap intervals over WikiText documents (see/intervals.py), checked by hand."""

import math

import numpy as np
import pytest

from see import intervals


def test_perplexity_interval_matches_a_hand_computed_bootstrap(monkeypatch):
    loglik, words = [-10.0, -20.0, -40.0], [5.0, 5.0, 10.0]
    draws = np.array([[0, 0, 0], [1, 2, 2], [0, 1, 2], [2, 2, 2], [1, 1, 0]])
    monkeypatch.setattr(intervals, "resamples", lambda n, iters, seed: draws)
    by_hand = sorted(
        [
            math.exp(30 / 15),  # docs 0, 0, 0: 3 * 10 nats over 3 * 5 words
            math.exp(100 / 25),  # 1, 2, 2
            math.exp(70 / 20),  # 0, 1, 2: the plain perplexity
            math.exp(120 / 30),  # 2, 2, 2
            math.exp(50 / 15),  # 1, 1, 0
        ]
    )
    low, high = intervals.perplexity_interval(loglik, words, level=0.5)
    assert low == pytest.approx(np.percentile(by_hand, 25))
    assert high == pytest.approx(np.percentile(by_hand, 75))
    assert intervals.perplexity(loglik, words) == pytest.approx(math.exp(3.5))


def test_paired_ratio_interval_resamples_the_same_documents_for_both(monkeypatch):
    a, b, words = [-12.0, -30.0], [-10.0, -20.0], [5.0, 10.0]
    draws = np.array([[0, 0], [1, 1], [0, 1]])
    monkeypatch.setattr(intervals, "resamples", lambda n, iters, seed: draws)
    # per draw: exp((sum(-a) - sum(-b)) / sum(words)) on the same documents
    by_hand = [math.exp(4 / 10), math.exp(20 / 20), math.exp(12 / 15)]
    ratio, low, high = intervals.ratio_interval(a, words, b, words, level=1.0)
    assert ratio == pytest.approx(math.exp(12 / 15))
    assert (low, high) == pytest.approx((min(by_hand), max(by_hand)))


def test_a_uniform_shift_gives_a_point_interval_and_noise_a_tie():
    words = [100.0] * 20
    base = [-300.0] * 20
    shifted = [-310.0] * 20  # every document 0.1 nats per word worse
    ratio, low, high = intervals.ratio_interval(shifted, words, base, words)
    assert ratio == low == pytest.approx(high) == pytest.approx(math.exp(0.1))
    noisy = [-300.0 + (5 if i % 2 else -5) for i in range(20)]
    _, low, high = intervals.ratio_interval(noisy, words, base, words)
    assert low < 1 < high


def test_unpaired_documents_are_refused():
    with pytest.raises(ValueError, match="paired documents needed"):
        intervals.ratio_interval([-1.0], [1.0], [-1.0, -2.0], [1.0, 1.0])


def test_margin_auc_equals_a_hand_count_and_ignores_a_shift_of_every_margin():
    margin, target = np.array([2.0, 0.5, -1.0, 0.5, -3.0]), np.array([1, 1, 1, 0, 0])
    # pairs (label 1, label 0): 2>0.5, 2>-3, 0.5=0.5 (half), 0.5>-3, -1<0.5, -1>-3 -> 4.5 / 6
    assert intervals.margin_auc(margin, target) == pytest.approx(4.5 / 6)
    shifted = margin + 1.5  # answers label 1 more often: the accuracy moves, the AUC does not
    assert ((shifted > 0) == target).mean() != ((margin > 0) == target).mean()
    assert intervals.margin_auc(shifted, target) == intervals.margin_auc(margin, target)
    diff, low, high = intervals.auc_difference_interval(shifted, margin, target)
    assert (diff, low, high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="both labels"):
        intervals.margin_auc(margin, np.ones(5, int))
    with pytest.raises(ValueError, match="two choices"):
        intervals.margins([[0.0, 1.0, 2.0]])
