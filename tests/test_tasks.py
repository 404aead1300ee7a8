"""Offline task configs: document counts, label mapping, and equality with lm-eval's own."""

import pytest
from conftest import needs_data

# split sizes and label counts (label 0, label 1) from shared/data/MANIFEST.md
EXPECTED = {
    "sst2": (872, (428, 444)),
    "rte": (277, (146, 131)),
    "mrpc": (408, (129, 279)),
    "cola": (1043, (322, 721)),
    "qnli": (5463, (2702, 2761)),
    "wnli": (71, (40, 31)),
    "wikitext": (62, None),
}


@pytest.fixture(scope="module")
def offline_tasks():
    from see.evaluation.lmeval import check_tasks, task_manager

    include = check_tasks(list(EXPECTED), None)
    return task_manager(include).load(list(EXPECTED))["tasks"]


def stock_task(name, dataset):
    """lm-eval's installed config for `name`, fed our documents instead of the hub's."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = TaskManager().task_index[name]
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    cfg["custom_dataset"] = lambda **_: dataset
    cfg.pop("training_split", None) if "train" not in dataset else None
    if name == "wikitext":
        cfg["validation_split"] = None
    return ConfigurableTask(config=cfg)


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_offline_task_sizes_and_labels(offline_tasks, name):
    docs = list(offline_tasks[name].eval_docs)
    size, labels = EXPECTED[name]
    assert len(docs) == size
    if labels:
        assert tuple(sum(d["label"] == k for d in docs) for k in (0, 1)) == labels


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_offline_config_renders_like_lm_evals_own(offline_tasks, name):
    ours = offline_tasks[name]
    stock = stock_task(name, ours.dataset)
    assert ours.OUTPUT_TYPE == stock.OUTPUT_TYPE
    assert ours.config.metric_list == stock.config.metric_list
    assert ours.config.target_delimiter == stock.config.target_delimiter
    for doc in list(ours.eval_docs)[:5]:
        assert ours.doc_to_text(doc) == stock.doc_to_text(doc)
        assert ours.doc_to_target(doc) == stock.doc_to_target(doc)
        if ours.OUTPUT_TYPE == "multiple_choice":
            assert ours.doc_to_choice(doc) == stock.doc_to_choice(doc)
            # every field the prompt uses is filled (a mis-mapped column renders empty)
            assert all(part.strip() for part in ours.doc_to_text(doc).split("\n")[:2])


@needs_data
def test_squad_v1_task_uses_squadv2_prompt_and_official_scoring():
    from lm_eval.tasks.squadv2.task import SQuAD2

    from see.evaluation.lmeval import check_tasks, task_manager

    include = check_tasks(["squad"], None)
    squad = task_manager(include).load(["squad"])["tasks"]["squad"]
    docs = list(squad.eval_docs)
    assert len(docs) == 10570  # SQuAD v1.1 dev questions
    doc = docs[0]
    assert squad.doc_to_text(doc) == SQuAD2.doc_to_text(None, doc)
    assert squad.doc_to_target(doc) == SQuAD2.doc_to_target(None, doc)
    assert squad.OUTPUT_TYPE == "generate_until"
    see_tasks = squad.config.process_results.__globals__
    assert see_tasks["normalize_answer"]("The  Denver Broncos!") == "denver broncos"
    scores = squad.process_results(doc, [" the Denver Broncos\n"])
    assert scores == {"exact_match": 1.0, "f1": 1.0}
    assert squad.process_results(doc, ["Broncos of Denver"])["f1"] == pytest.approx(0.8)
    assert squad.process_results(doc, ["no idea"]) == {"exact_match": 0.0, "f1": 0.0}


def test_hub_only_tasks_are_reported_as_skipped_offline(monkeypatch):
    from see.evaluation.tasks import skipped_tasks

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    skipped = skipped_tasks(["mnli", "sst2", "qqp"])
    assert sorted(skipped) == ["mnli", "qqp"] and "HF_HUB_OFFLINE" in skipped["mnli"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert skipped_tasks(["mnli"]) == {}


@needs_data
def test_rendered_task_folder_is_reused_not_rewritten(tmp_path, monkeypatch):
    """Concurrent runs share the rendered configs: a second render must not replace them."""
    from see.evaluation.tasks import render_tasks

    monkeypatch.setenv("SEE_CACHE_DIR", str(tmp_path))
    first = render_tasks()
    inode = (first / "sst2.yaml").stat().st_ino
    assert render_tasks() == first and (first / "sst2.yaml").stat().st_ino == inode
    assert [p.name for p in (tmp_path / "tasks").iterdir()] == [first.name]  # no tmp left
