import math

import pytest
import torch
from conftest import needs_data

from see.data import DataFileError


@pytest.fixture(scope="module")
def wikitext_docs():
    """The 62 offline WikiText documents, through the rendered `see_tasks.py` loader."""
    import importlib.util

    from see.data import data_file
    from see.evaluation.tasks import render_tasks

    spec = importlib.util.spec_from_file_location("see_tasks", render_tasks() / "see_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.wikitext_documents(str(data_file("wikitext-2-raw/wiki.test.raw")))["test"]


@needs_data
def test_offline_wikitext_has_62_documents(wikitext_docs):
    docs = wikitext_docs
    assert len(docs) == 62
    assert docs[0]["page"].startswith(" = Robert Boulter = \n")


@needs_data
def test_wikitext_perplexity_matches_direct_torch_computation(smollm, wikitext_docs):
    """lm-eval's rolling word perplexity on one document (shorter than max_length) equals
    exp(-sum log p / words) computed directly with the same prefix token."""
    from see.evaluation.lmeval import evaluate

    model, tok = smollm
    rows = evaluate(model, tok, ["wikitext"], limit=1, max_length=2048)
    word_ppl = next(r for r in rows if r["metric"] == "word_perplexity")
    assert word_ppl["n"] == 1 and math.isfinite(word_ppl["value"])

    doc = wikitext_docs[0]
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    target = wikitext_detokenizer(doc)  # the stock task's doc_to_target
    ids = tok(target).input_ids
    assert len(ids) < 2048
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    inputs = torch.tensor([[prefix, *ids[:-1]]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(inputs).logits.double(), -1)[0]
    loglik = logprobs.gather(1, torch.tensor(ids)[:, None]).sum().item()
    words = len(__import__("re").split(r"\s+", doc["page"]))
    assert word_ppl["value"] == pytest.approx(math.exp(-loglik / words), rel=1e-3)
    # the per-document terms the intervals resample (see/intervals.py)
    assert word_ppl["doc_ids"] == [0] and word_ppl["doc_units"] == [words]
    assert word_ppl["doc_loglik"][0] == pytest.approx(loglik, rel=1e-4)
    assert word_ppl["ci_low"] == pytest.approx(word_ppl["value"]) == word_ppl["ci_high"]


@needs_data
def test_bad_task_inputs_fail_before_any_model_is_loaded(tmp_path):
    from see.evaluation.lmeval import check_tasks

    with pytest.raises(ValueError, match="unknown lm-eval task.*no_such_task"):
        check_tasks(["no_such_task"], None)
    with pytest.raises(ValueError, match="limit must be > 0"):
        check_tasks(["wikitext"], 0)
    with pytest.raises(DataFileError, match="missing data file .*wiki.test.raw"):
        check_tasks(["wikitext"], 2, data_dir=tmp_path)


def test_data_dir_that_does_not_exist_is_named(tmp_path, monkeypatch):
    from see.data import data_dir

    with pytest.raises(DataFileError, match="does-not-exist.*from --data-dir or the config"):
        data_dir(tmp_path / "does-not-exist")  # not blamed on $SEE_DATA_DIR (issue 38)
    monkeypatch.setenv("SEE_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataFileError, match="gone.*from \\$SEE_DATA_DIR"):
        data_dir()


def test_altered_data_file_is_rejected(tmp_path):
    from see.data import data_file

    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v1.1.json").write_text("{}")
    with pytest.raises(DataFileError, match="not the published copy"):
        data_file("squad/dev-v1.1.json", tmp_path)


def test_tail_logits_score_like_hflm_and_compute_only_the_scored_positions(smollm):
    """The grid's lm-eval model gives HFLM's log-likelihoods (one- and multi-token
    continuations, one request per forward) while the head sees only the last K positions,
    K = the longest continuation; a batch of several requests keeps every position."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from see.evaluation.lm_eval_model import TailLogitsHFLM

    model, tok = smollm
    pairs = [
        ("Review: a warm, funny film.\nSentiment:", " positive"),
        ("Review: dull and far too long.\nSentiment:", " negative"),
        ("The capital of France is", " Paris, a city on the Seine"),
    ]
    requests = [
        Instance("loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)
    ]
    longest = max(len(tok(cont).input_ids) for _, cont in pairs)
    seen = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape))
    try:
        reference = HFLM(pretrained=model, tokenizer=tok, batch_size=1).loglikelihood(requests)
        full = list(seen)
        seen.clear()
        tail = TailLogitsHFLM(pretrained=model, tokenizer=tok, batch_size=1)
        scored = tail.loglikelihood(requests)
        tail_shapes = list(seen)
        seen.clear()
        batched = TailLogitsHFLM(pretrained=model, tokenizer=tok, batch_size=3)
        batched_scores = batched.loglikelihood(requests)
    finally:
        hook.remove()
    for (ll, greedy), (ref_ll, ref_greedy) in zip(scored, reference, strict=True):
        assert ll == pytest.approx(ref_ll, abs=1e-4) and greedy == ref_greedy
    for (ll, _), (ref_ll, _) in zip(batched_scores, reference, strict=True):
        assert ll == pytest.approx(ref_ll, abs=1e-4)
    assert all(shape[1] > longest for shape in full)
    assert tail_shapes and all(shape[1] == longest for shape in tail_shapes)
    assert seen and all(shape[1] > longest for shape in seen)


def test_multiple_choice_rows_keep_each_documents_choice_logliks_and_perplexity_rows_do_not():
    from see.evaluation.lmeval import choice_columns

    choice = [
        {"doc_id": 1, "target": 0, "filtered_resps": [(-1.5, False), (-2.0, False)]},
        {"doc_id": 0, "target": 1, "filtered_resps": [(-3.0, False), (-0.5, True)]},
    ]
    assert choice_columns(choice) == {
        "doc_ids": [0, 1],
        "doc_choice_loglik": [[-3.0, -0.5], [-1.5, -2.0]],
        "doc_target": [1, 0],
    }
    rolling = [{"doc_id": 0, "target": "text", "filtered_resps": [-120.5]}]
    assert choice_columns(rolling) == {}


@needs_data
def test_sst2_rows_store_answers_that_give_back_the_accuracy(smollm):
    from see.evaluation.lmeval import evaluate

    model, tok = smollm
    (row,) = [r for r in evaluate(model, tok, ["sst2"], limit=6) if r["metric"] == "acc"]
    loglik, target = row["doc_choice_loglik"], row["doc_target"]
    assert len(loglik) == len(target) == 6 and all(len(choices) == 2 for choices in loglik)
    answers = [int(choices[1] > choices[0]) for choices in loglik]
    assert row["value"] == pytest.approx(
        sum(a == t for a, t in zip(answers, target, strict=True)) / 6
    )
