import hashlib

import pytest
import torch

from see.models import zoo
from see.models.zoo import ZOO, ModelLoadError, ZooModel, is_tied, load_model, verified_gguf


def test_short_names_cover_the_four_offline_models():
    assert set(ZOO) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert len(ZOO["qwen2.5-coder-1.5b"].parts) == 22 and len(ZOO["qwen2.5-coder-0.5b"].parts) == 6


def fake_parts(tmp_path):
    parts = []
    for i, blob in enumerate([b"GGUF-part-one|", b"part-two|", b"part-three"]):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(blob)
        parts.append(path)
    digest = hashlib.sha256(b"GGUF-part-one|part-two|part-three").hexdigest()
    spec = ZooModel("fake", "org/fake", tuple((f"fake-part{i}", "x") for i in range(3)), digest, "")
    return spec, parts


def test_parts_are_joined_in_order_and_verified(tmp_path):
    spec, parts = fake_parts(tmp_path)
    joined = verified_gguf(spec, parts, tmp_path)
    assert joined.read_bytes() == b"GGUF-part-one|part-two|part-three"


def test_corrupted_part_is_rejected_naming_the_package(tmp_path):
    spec, parts = fake_parts(tmp_path)
    parts[1].write_bytes(b"part-twX|")
    with pytest.raises(ModelLoadError, match="fake-part0.*expected"):
        verified_gguf(spec, parts, tmp_path)


def test_missing_package_says_how_to_install(monkeypatch):
    spec = ZooModel("fake", "org/fake", (("no-such-dist-xyz", "f.gguf"),), "0", "pip install x")
    with pytest.raises(ModelLoadError, match="no-such-dist-xyz.*pip install x"):
        zoo.locate_parts(spec)


def test_converted_folder_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))
    calls = []

    def fake_convert(spec, target):
        calls.append(spec.short_name)
        target.mkdir(parents=True)
        (target / "see_zoo.json").write_text("{}")

    monkeypatch.setattr(zoo, "convert_zoo_model", fake_convert)
    first = zoo.zoo_folder("smollm2-135m")
    assert zoo.zoo_folder("smollm2-135m") == first == tmp_path / "models" / "smollm2-135m"
    assert calls == ["smollm2-135m"]


@pytest.fixture
def untied_folder(tmp_path):
    """A tiny untied Qwen2 model (like the Qwen GGUFs as loaded) saved as a local folder."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(zoo.zoo_folder("smollm2-135m")).save_pretrained(tmp_path)
    return tmp_path


def test_head_policy_retied_gives_one_tensor_and_as_loaded_keeps_two(untied_folder):
    model, _ = load_model(str(untied_folder), tie_source="as_loaded")
    assert not is_tied(model)
    head = model.get_output_embeddings().weight.detach().clone()
    model, _ = load_model(str(untied_folder), tie_source="retied")
    assert is_tied(model) and model.config.tie_word_embeddings
    assert torch.equal(model.get_input_embeddings().weight, head)  # the head's copy serves both


def test_unknown_tie_source_is_rejected():
    with pytest.raises(ValueError, match="unknown tie_source 'both'"):
        load_model("smollm2-135m", tie_source="both")
