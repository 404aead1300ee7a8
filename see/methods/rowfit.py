"""Fitting a compressed table to the teacher's rows: one loop for every gradient-fitted method.

SEE, `see_morph`, word2ketXS and SVD's optional fine-tuning all fit `module(ids)` to the
original rows `E[ids]` with the same levers (`RowFit`), so a comparison between them is fair:

- sampling: which rows a minibatch holds. `uniform` over the vocabulary, `freq` in proportion to
  (count + 1) ** freq_weight on WikiText-2 *validation* text (never the reported test text),
  or `mixed`: half of each batch uniform, half by frequency. Pure frequency sampling starves
  rare tokens that test text still uses; pure uniform spends capacity on rows text never uses.
- objective: mean(1 - cos) + MSE / mean(x**2), both on rows minus the table's mean row (the
  shared mean direction alone gives a cosine of ~0.66 on SmolLM2, and a loss on raw rows
  stalls there), plus `id_weight` x a token-identification term: cross-entropy of
  `e_hat(t) @ E_c^T / id_temperature` with target t, over the batch's distinct tokens and
  `id_negatives` random rows (sampled softmax; a full softmax over 49k-262k rows per step costs
  seconds on CPU). It asks that the model's own (tied) head still recognises every rebuilt
  row: what breaks compressed models is similar tokens that become indistinguishable, not the
  average angle (METHODS.md, "What to expect"). The temperature is raw, not in units of the
  table's scale, although Gemma 3's rows have a mean |e|^2 of 1.06 and SmolLM2's 10.6: a
  temperature relative to that scale (0.2, a raw 2.1 on SmolLM2) was measured and left SmolLM2
  alone (1,199 vs 1,182 for SEE at CR 10) but made Gemma worse (3,739 vs 2,154; runs
  `20261201-133016-see-id-scale`, `20261201-134332-see-gemma-id`): a sharper term is not
  what Gemma needs.
- dimensions: `dim_weight` `fisher` (or `auto`) compares rows with each dimension scaled by
  the square root of the model's input Fisher (dimweight.py); `none` (default) alike.
- schedule: Adam with `onecycle` (5% warm-up to `lr`, then cosine down) or `cosine` decay.
- checkpoint choice: `checkpoints` evenly spaced states (and the start) are scored by the
  harness's `checkpoint_score` (initial perplexity on a validation slice; lower is better),
  or, without a scorer, by mean row cosine.
- restarts: a non-finite loss or a checkpoint whose row error is over RESTART_RATIO times the
  start's means the lr is too high for this start (a closed-form start at a high rank: its
  tail factors are tiny and Adam moves every entry by about lr), so the fit starts again from
  the start at RESTART_LR_FACTOR x the lr, at most MAX_RESTARTS times. Every state seen stays a
  checkpoint candidate. A fit that never crosses the ratio runs exactly as without restarts:
  the highest ratio in the published fits that recovered was 2.7 (word2ketXS, Gemma 3, CR
  10), the ones that did not were 35 and 50 (word2ketXS at CR 10 on Qwen2.5-Coder 0.5B, CR 4
  on Gemma 3: runs 20261202-005229-sizes, 20261202-200910-frontier).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from see.methods.base import KEYED_WHEN_SET, FitContext
from see.methods.dimweight import check_dim_weight

SAMPLINGS = ("uniform", "freq", "mixed")
SCHEDULES = ("onecycle", "cosine")
RESTART_RATIO = 4.0
RESTART_LR_FACTOR = 0.25
MAX_RESTARTS = 2


@dataclass(frozen=True)
class RowFit:
    """The fit levers every gradient-fitted method offers (defaults: see each method)."""

    steps: int = 600
    batch_tokens: int = 2048
    lr: float = 2e-2
    schedule: str = "onecycle"
    sampling: str = "mixed"
    freq_weight: float = 1.0
    id_weight: float = 0.0
    id_temperature: float = 2.0
    id_negatives: int = 1024
    checkpoints: int = 4
    # the row error measured with Fisher-weighted dimensions (dimweight.py); the fit's
    # caller turns it into `fit_rows(..., dim_scale=...)`, as only it knows the target ratio
    # (`none`: for SEE and word2ketXS `fisher` lost at 10x, 20x and 40x in domain and out of
    # it, heldout-sweep runs 20261206-231409 and 20261206-233920)
    dim_weight: str = field(default="none", metadata={KEYED_WHEN_SET: True})

    def __post_init__(self):
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"fit option {name}={getattr(self, name)!r}; allowed: {allowed}")

        need(isinstance(self.steps, int) and self.steps >= 1, "steps", "an int >= 1")
        need(
            isinstance(self.batch_tokens, int) and self.batch_tokens >= 1,
            "batch_tokens",
            "an int >= 1",
        )
        need(self.lr > 0, "lr", "a number > 0")
        need(self.schedule in SCHEDULES, "schedule", str(SCHEDULES))
        need(self.sampling in SAMPLINGS, "sampling", str(SAMPLINGS))
        need(self.freq_weight >= 0, "freq_weight", "a number >= 0")
        need(self.id_weight >= 0, "id_weight", "a number >= 0 (0 = no identification term)")
        need(self.id_temperature > 0, "id_temperature", "a number > 0")
        need(
            isinstance(self.id_negatives, int) and self.id_negatives >= 0,
            "id_negatives",
            "an int >= 0",
        )
        need(
            isinstance(self.checkpoints, int) and self.checkpoints >= 1,
            "checkpoints",
            "an int >= 1",
        )
        check_dim_weight("row fit", self.dim_weight)

    @property
    def needs_counts(self) -> bool:
        return self.sampling != "uniform" and self.freq_weight > 0


def check_counts(
    counts: torch.Tensor | None, vocab: int, what: str, instead: str = ""
) -> torch.Tensor:
    """The validation token counts `what` needs, one per row, or a clear error."""
    if counts is None or len(counts) != vocab:
        got = None if counts is None else len(counts)
        raise ValueError(
            f"{what} needs token_counts of length {vocab} (got {got}); the grid counts "
            f"WikiText-2 validation{instead}"
        )
    return counts


def frequency_probs(counts: torch.Tensor | None, freq_weight: float, vocab: int) -> torch.Tensor:
    """P(row) ~ (count + 1) ** freq_weight, counts from validation text."""
    counts = check_counts(counts, vocab, "frequency sampling", ", or set sampling='uniform'")
    weights = (counts.double() + 1) ** freq_weight
    return weights / weights.sum()


def row_probs(fit: RowFit, counts: torch.Tensor | None, vocab: int) -> torch.Tensor | None:
    """The distribution rows are drawn from (None = uniform): mixed = (uniform + freq) / 2."""
    if fit.sampling == "uniform" or fit.freq_weight == 0:
        return None
    freq = frequency_probs(counts, fit.freq_weight, vocab)
    return freq if fit.sampling == "freq" else 0.5 * freq + 0.5 / vocab


def draw_rows(fit: RowFit, probs: torch.Tensor | None, vocab: int, generator) -> torch.Tensor:
    """One minibatch of row ids; `mixed` draws its two halves separately (exact halves)."""
    n = fit.batch_tokens
    if probs is None:
        return torch.randint(vocab, (n,), generator=generator)
    if fit.sampling == "freq":
        return torch.multinomial(probs, n, True, generator=generator)
    freq = 2 * probs - 1 / vocab  # undo the mixture: the frequency half alone
    uniform = torch.randint(vocab, (n - n // 2,), generator=generator)
    return torch.cat([uniform, torch.multinomial(freq, n // 2, True, generator=generator)])


def identification_loss(
    out: torch.Tensor,
    ids: torch.Tensor,
    rows: torch.Tensor,
    fit: RowFit,
    generator,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled-softmax cross-entropy of out @ E_c^T / T with target = each row's own token.
    `weights`: how often each row stands in the batch (rows given once each, as fit_rows
    does), which is the same mean as over the repeated rows at a fraction of the matmul."""
    unique, target = torch.unique(ids, return_inverse=True)
    negatives = torch.randint(len(rows), (fit.id_negatives,), generator=generator).to(ids.device)
    negatives = negatives[~torch.isin(negatives, unique)]
    candidates = rows[torch.cat([unique, negatives])]
    logits = out @ candidates.T / fit.id_temperature
    if weights is None:
        return nn.functional.cross_entropy(logits, target)
    losses = nn.functional.cross_entropy(logits, target, reduction="none")
    return (losses * weights).sum() / weights.sum()


@torch.no_grad()
def identification_rate(
    module: nn.Module, rows: torch.Tensor, sample: int = 2048, seed: int = 0
) -> float:
    """Share of `sample` random tokens whose rebuilt row's top dot product in E is its own."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randperm(len(rows), generator=generator)[:sample].to(rows.device)
    out = module(ids).float()
    pairs = zip(out.split(512), ids.split(512), strict=True)
    hits = [(o @ rows.T).argmax(-1) == i for o, i in pairs]
    return torch.cat(hits).float().mean().item()


@torch.no_grad()
def reconstruction_report(module: nn.Module, rows: torch.Tensor) -> dict[str, float]:
    report = module.reconstruction_report(rows)
    report["fit_id_rate"] = identification_rate(module, rows)
    return report


def warmup_share(steps: int) -> float:
    """OneCycle's warm-up share: 5%, except where 5% is exactly one step (OneCycleLR divides
    by zero there, e.g. 20 steps)."""
    return 0.05 if abs(0.05 * steps - 1) > 1e-9 else 0.1


def fit_rows(
    module: nn.Module,
    table: torch.Tensor,
    fit: RowFit,
    ctx: FitContext,
    name: str = "fit",
    dim_scale: torch.Tensor | None = None,
) -> nn.Module:
    """Fit `module(ids) ~ table[ids]`; returns the chosen checkpoint (on CPU, eval mode).
    From `ctx`: the seed, the device, token counts (frequency sampling) and the scorer that
    picks the checkpoint (else the best mean cosine). `dim_scale` (d,): the loss compares
    rows with each dimension scaled by it (dimweight.py)."""
    device = ctx.device or ("cuda" if torch.cuda.is_available() else "cpu")
    seed, checkpoint_score = ctx.seed, ctx.checkpoint_score
    token_counts = ctx.token_counts if fit.needs_counts else None
    module = module.to(device)
    rows = table.float().to(device)
    vocab = len(rows)
    center = rows.mean(0)
    scale = 1.0 if dim_scale is None else dim_scale.float().to(device)  # x * 1.0 is exact
    mean_sq = ((rows - center) * scale).pow(2).mean()
    probs = row_probs(fit, token_counts, vocab)
    generator = torch.Generator().manual_seed(seed)
    save_at = {round(fit.steps * (i + 1) / fit.checkpoints) for i in range(fit.checkpoints)}
    history, best = [], {"score": math.inf, "module": None}

    def consider(step: int, loss: float | None, lr: float) -> dict:
        """Log this state as a checkpoint and keep it if it scores best so far."""
        module.eval()
        entry = {"step": step, "loss": loss, "lr": lr, **reconstruction_report(module, rows)}
        if checkpoint_score is not None:
            entry["score"] = checkpoint_score(module)
        history.append(entry)
        shown = " ".join(f"{k}={v:.4g}" for k, v in entry.items() if v is not None)
        tqdm.write(f"[{name}] {shown}")
        score = entry.get("score", -entry["fit_mean_cos"])
        if score < best["score"]:
            best.update(score=score, module=copy.deepcopy(module).cpu())
        module.train()
        return entry

    def train(lr: float, last_try: bool) -> bool:
        """One run of the schedule at peak `lr`; False as soon as a checkpoint diverges."""
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        if fit.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=fit.steps, pct_start=warmup_share(fit.steps)
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, fit.steps)
        bar = tqdm(range(1, fit.steps + 1), desc=f"{name} lr={lr:.3g}", mininterval=2)
        for step in bar:
            ids = draw_rows(fit, probs, vocab, generator).to(device)
            # each distinct row is built once (frequency sampling repeats the frequent rows):
            # the same loss and gradient as building every drawn row, at a fraction of the cost
            unique, inverse, repeats = torch.unique(ids, return_inverse=True, return_counts=True)
            built = module(unique)
            out, x = built[inverse], rows[ids]
            cos = nn.functional.cosine_similarity(
                (out - center) * scale, (x - center) * scale, dim=1
            ).mean()
            loss = (1 - cos) + ((out - x) * scale).pow(2).mean() / mean_sq
            if fit.id_weight > 0:
                loss = loss + fit.id_weight * identification_loss(
                    built, unique, rows, fit, generator, weights=repeats.float()
                )
            if not torch.isfinite(loss):
                if last_try:
                    raise FloatingPointError(f"{name} loss is {loss.item()} at step {step}")
                tqdm.write(f"[{name}] loss {loss.item()} at step {step}: restart")
                return False
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", cos=f"{cos.item():.3f}")
            if step in save_at:
                error = consider(step, loss.item(), lr)["fit_rel_error"]
                if not last_try and error > RESTART_RATIO * history[0]["fit_rel_error"]:
                    tqdm.write(f"[{name}] row error {error:.4g} at step {step}: restart")
                    return False
        return True

    start = copy.deepcopy(module.state_dict())
    consider(0, None, 0.0)  # the start (closed forms: SVD, word2ketXS n=2) is a candidate too
    lr, restarts = fit.lr, 0
    while not train(lr, last_try=restarts == MAX_RESTARTS):
        module.load_state_dict(start)
        lr, restarts = lr * RESTART_LR_FACTOR, restarts + 1
    chosen = min(history, key=lambda h: h.get("score", -h["fit_mean_cos"]))
    fitted = best["module"]
    fitted.fit_report = {
        **reconstruction_report(fitted, table.float()),
        "fit_step": chosen["step"],
        "fit_checkpoint_by": "score" if checkpoint_score is not None else "mean_cos",
        "fit_restarts": restarts,
        "fit_lr": chosen["lr"],
    }
    fitted.history = history
    return fitted.eval()
