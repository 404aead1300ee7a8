import pytest
import torch

from see.methods import get_method
from see.methods.autoencoder import _AutoEncoder, ae_code_size, ae_loss, alpha_at

AE = get_method("autoencoder")


def structured_table(vocab: int = 600, dim: int = 32, rank: int = 4) -> torch.Tensor:
    """Rows on a low-rank subspace plus a little noise: a compressible table."""
    gen = torch.Generator().manual_seed(1)
    return torch.randn(vocab, rank, generator=gen) @ torch.randn(rank, dim, generator=gen) + (
        0.01 * torch.randn(vocab, dim, generator=gen)
    )


def test_code_size_and_cr_match_stored_tensors():
    table = structured_table()
    module = AE.from_table(table, 5, epochs=1)
    vocab, dim = table.shape
    k = ae_code_size(vocab, dim, 5)
    stored = sum(p.numel() for p in module.parameters())
    assert module.codes.shape == (vocab, k)
    assert module.num_params() == stored == vocab * k + k * dim + dim
    assert module.reached_cr == pytest.approx(vocab * dim / stored)
    assert stored <= vocab * dim / 5 < stored + vocab + dim  # k is the largest that fits


def test_training_beats_random_initialisation_on_structured_table():
    table = structured_table()
    torch.manual_seed(0)
    untrained = AE._deploy(_AutoEncoder(32, ae_code_size(600, 32, 5), "none"), table)
    trained = AE.from_table(table, 5, epochs=6, seed=0, lr=1e-2)
    random_cos = untrained.reconstruction_report(table)["fit_mean_cos"]
    assert random_cos < 0.5
    assert trained.fit_report["fit_mean_cos"] > 0.95
    assert len(trained.history) == 6 and trained.fit_report["fit_checkpoint_by"] == "mean_cos"


def test_checkpoint_is_the_lowest_score():
    scores = iter([3.0, 1.0, 2.0])
    module = AE.from_table(structured_table(), 5, epochs=3, checkpoint_score=lambda m: next(scores))
    assert module.fit_report["fit_epoch"] == 2
    assert [h["score"] for h in module.history] == [3.0, 1.0, 2.0]


def test_seeded_training_is_deterministic_on_cpu():
    a = AE.from_table(structured_table(), 5, epochs=2, seed=3)
    b = AE.from_table(structured_table(), 5, epochs=2, seed=3)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.weight, b.weight)


def test_elu_variant_and_shared_head_are_exact():
    module = AE.from_table(structured_table(), 5, epochs=1, nonlinear="elu")
    hidden = torch.randn(2, 3, 32)
    torch.testing.assert_close(
        module.head_logits(hidden), hidden @ module.materialize().T, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(module(torch.tensor([5, 7])), module.materialize()[[5, 7]])


def test_alpha_is_annealed_linearly_from_one_to_a_tenth_over_the_papers_20_epochs():
    assert alpha_at(0, 20) == 1.0
    assert alpha_at(19, 20) == pytest.approx(0.1)
    assert alpha_at(10, 21) == pytest.approx(0.55)
    assert alpha_at(1, 2) == pytest.approx(1 - 0.9 / 19)  # a short fit only begins the anneal
    assert alpha_at(0, 1) == 1.0


def test_a_two_epoch_fit_of_real_rows_does_not_worsen_and_keeps_the_best_checkpoint(smollm):
    """Issue 38: at 2 epochs alpha jumped from 1.0 to 0.1 and the second epoch worsened the
    fit of SmolLM2's table (mean cosine 0.748 -> 0.728, relative error 0.76 -> 1.43). Now
    the second epoch improves the cosine the loss is made of, and the chosen checkpoint is
    never worse than one before it."""
    from see.models.surgery import input_table

    rows = input_table(smollm[0]).float()
    module = AE.from_table(rows, 10, epochs=2, seed=0)
    first, second = module.history
    assert second["fit_mean_cos"] >= first["fit_mean_cos"]
    assert second["fit_rel_error"] < 1.2 * first["fit_rel_error"]
    scores = iter([2.0, 3.0])  # a worse second checkpoint is never the one kept
    kept = AE.from_table(rows, 10, epochs=2, seed=0, checkpoint_score=lambda m: next(scores))
    assert kept.fit_report["fit_epoch"] == 1


def test_loss_presets_compute_the_documented_formulas():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x_hat = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # cos 0 and 1 -> mean(1 - cos) = 0.5
    abs_diff = torch.tensor([1.0, 1.0, 0.0, 1.0])
    assert ae_loss(x_hat, x, "mse").item() == pytest.approx(0.75)
    assert ae_loss(x_hat, x, "revisited").item() == pytest.approx(0.9091 * 0.5 + 0.0909 * 0.75)
    expected = 0.1995 * 0.5 + 0.0025 * ((abs_diff + 1e-10) ** 0.5).mean().item()
    assert ae_loss(x_hat, x, "direction", alpha=0.5).item() == pytest.approx(expected)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="code size would be 0 < 1"):
        AE.from_table(torch.randn(100, 8), 9)
    with pytest.raises(ValueError, match="unknown autoencoder loss preset 'l1'"):
        AE.from_table(torch.randn(100, 8), 2, loss="l1")
    bad = torch.randn(100, 8)
    bad[7, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        AE.from_table(bad, 2)


def test_non_finite_loss_stops_with_epoch_and_step():
    huge = structured_table() * 1e25  # finite rows whose squared error overflows float32
    with pytest.raises(FloatingPointError, match="loss is inf at epoch 1, step 0"):
        AE.from_table(huge, 5, epochs=1, loss="mse")
