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
