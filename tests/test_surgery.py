import pytest
import torch

from see.methods import get_method
from see.models import compress_model, count_bytes
from see.models.surgery import EmbeddingAdapter, SharedHead, input_table


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_baseline_surgery_leaves_logits_bitwise_identical(fresh_smollm, sample_ids):
    model, _ = fresh_smollm
    before = logits(model, sample_ids)
    dense = get_method("baseline").from_table(input_table(model).clone())
    compress_model(model, dense, "dense")
    assert isinstance(model.get_input_embeddings(), EmbeddingAdapter)
    assert torch.equal(logits(model, sample_ids), before)


def test_gemma_embed_scale_is_kept():
    """Gemma 3 multiplies looked-up rows by sqrt(hidden); the adapter must keep that."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    ids = torch.randint(0, 300, (1, 12))
    before = logits(model, ids)
    dense = get_method("baseline").from_table(input_table(model).clone())
    compress_model(model, dense, "dense")
    assert model.get_input_embeddings().embed_scale is not None
    assert torch.equal(logits(model, ids), before)


@pytest.mark.parametrize("policy", ["dense", "shared"])
def test_svd_changes_logits_and_counts_bytes(fresh_smollm, sample_ids, policy):
    model, _ = fresh_smollm
    vocab, dim = input_table(model).shape
    before_logits, before = logits(model, sample_ids), count_bytes(model)
    svd = get_method("svd").from_table(input_table(model).clone(), 10, dim_weight="none")
    rank = svd.left.shape[1]
    compress_model(model, svd, policy)
    after = count_bytes(model)
    assert not torch.allclose(logits(model, sample_ids), before_logits)
    assert after["embedding_params"] == rank * (vocab + dim)
    assert after["embedding_bytes"] == rank * (vocab + dim) * 4
    if policy == "shared":  # the tied V x d table is gone from the model
        assert isinstance(model.get_output_embeddings(), SharedHead)
        assert after["head_bytes"] == 0
        saved = before["model_param_bytes"] - after["model_param_bytes"]
        assert saved == (vocab * dim - rank * (vocab + dim)) * 4
    else:  # the head keeps the dense table: a tied model grows by the factors
        assert after["head_bytes"] == vocab * dim * 4
        grown = after["model_param_bytes"] - before["model_param_bytes"]
        assert grown == rank * (vocab + dim) * 4


def test_shared_svd_head_is_exact_for_the_factorised_table(fresh_smollm, sample_ids):
    model, _ = fresh_smollm
    svd = get_method("svd").from_table(input_table(model).clone(), 10, dim_weight="none")
    compress_model(model, svd, "shared")
    with torch.no_grad():
        hidden = model.model(sample_ids).last_hidden_state
        expected = hidden @ svd.materialize().T
    torch.testing.assert_close(logits(model, sample_ids), expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("policy", ["dense", "shared"])
def test_hflm_does_not_retie_a_compressed_model(fresh_smollm, policy):
    from lm_eval.models.huggingface import HFLM

    model, tok = fresh_smollm
    head_weight = model.get_output_embeddings().weight
    svd = get_method("svd").from_table(input_table(model).clone(), 10, dim_weight="none")
    compress_model(model, svd, policy)
    HFLM(pretrained=model, tokenizer=tok, max_length=256, batch_size=1)  # calls tie_weights()
    assert model.get_input_embeddings().compressed is svd
    head = model.get_output_embeddings()
    if policy == "shared":
        assert isinstance(head, SharedHead) and head.compressed is svd
    else:
        assert torch.equal(head.weight, head_weight)


def test_unknown_head_policy_is_rejected(fresh_smollm):
    model, _ = fresh_smollm
    with pytest.raises(ValueError, match="unknown head_policy 'both'"):
        compress_model(model, None, "both")
