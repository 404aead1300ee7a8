"""Bootstrap confidence intervals for perplexities over documents (numpy only: the report
uses it without torch).

lm-eval gives no stderr for WikiText: a perplexity is exp(-sum(loglik) / sum(units)) over the
documents (units: words or bytes), and each document's loglik and units are stored in its rows
(`doc_loglik`, `doc_words`, `doc_bytes`, `doc_ids`). Resampling the documents with replacement
gives a percentile interval for one perplexity; resampling the *same* documents for two cells
evaluated on the same text (paired bootstrap) gives an interval for their ratio, which is far
narrower than two separate intervals because the documents' difficulty cancels.
"""

from __future__ import annotations

import math

import numpy as np

ITERS = 1000
LEVEL = 0.95
SEED = 0


def perplexity(loglik, units) -> float:
    return math.exp(-float(np.sum(loglik)) / float(np.sum(units)))


def resamples(n: int, iters: int = ITERS, seed: int = SEED) -> np.ndarray:
    """(iters, n) document indices drawn with replacement; the same seed, the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(iters, n))


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def perplexity_interval(
    loglik, units, iters: int = ITERS, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile interval of one perplexity over resampled documents."""
    loglik, units = np.asarray(loglik, float), np.asarray(units, float)
    draws = resamples(len(loglik), iters, seed)
    samples = np.exp(-loglik[draws].sum(1) / units[draws].sum(1))
    return percentile_interval(samples, level)


def ratio_interval(
    loglik_a, units_a, loglik_b, units_b, iters: int = ITERS, seed: int = SEED, level=LEVEL
) -> tuple[float, float, float]:
    """Perplexity of a over perplexity of b on the same documents (paired bootstrap):
    (ratio, low, high). The documents must be the same, in the same order."""
    arrays = [np.asarray(x, float) for x in (loglik_a, units_a, loglik_b, units_b)]
    if len({len(x) for x in arrays}) != 1 or not len(arrays[0]):
        raise ValueError(f"paired documents needed, got lengths {[len(x) for x in arrays]}")
    la, ua, lb, ub = arrays
    draws = resamples(len(la), iters, seed)
    log_ratio = -la[draws].sum(1) / ua[draws].sum(1) + lb[draws].sum(1) / ub[draws].sum(1)
    low, high = percentile_interval(np.exp(log_ratio), level)
    return perplexity(la, ua) / perplexity(lb, ub), low, high


def margins(choice_loglik) -> np.ndarray:
    """A two-choice task's answer margins: log-likelihood of choice 1 minus choice 0."""
    loglik = np.asarray(choice_loglik, float)
    if loglik.ndim != 2 or loglik.shape[1] != 2:
        raise ValueError(f"two choices per document needed, got shape {loglik.shape}")
    return loglik[:, 1] - loglik[:, 0]


def margin_auc(margin, target) -> float:
    """How well the margin separates the labels, whatever threshold is used: the chance that
    a label-1 document gets a larger margin than a label-0 one (ties count half). A shift of
    every margin (a preferred label) changes accuracy but not this."""
    margin, target = np.asarray(margin, float), np.asarray(target)
    pos, neg = margin[target == 1], margin[target == 0]
    if not len(pos) or not len(neg):
        raise ValueError("both labels needed for a margin AUC")
    greater = (pos[:, None] > neg[None, :]).mean()
    equal = (pos[:, None] == neg[None, :]).mean()
    return float(greater + equal / 2)


def auc_difference_interval(
    margin_a, margin_b, target, iters: int = ITERS, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float, float]:
    """margin_auc(a) - margin_auc(b) on the same documents with its paired bootstrap interval:
    (difference, low, high). Resamples that miss a label are dropped."""
    a, b, target = (np.asarray(x) for x in (margin_a, margin_b, target))
    if not len(a) == len(b) == len(target) or not len(a):
        raise ValueError(f"paired documents needed, got lengths {len(a)}, {len(b)}, {len(target)}")
    diffs = [
        margin_auc(a[draw], target[draw]) - margin_auc(b[draw], target[draw])
        for draw in resamples(len(a), iters, seed)
        if 0 < target[draw].sum() < len(draw)
    ]
    low, high = percentile_interval(np.asarray(diffs), level)
    return margin_auc(a, target) - margin_auc(b, target), low, high
