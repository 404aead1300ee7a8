import os
import shutil
import subprocess
import sys

import torch
from conftest import needs_data

from see.methods import get_method
from see.models import compress_model
from see.models.saving import load_compressed, save_compressed
from see.models.surgery import input_table


def test_saved_svd_model_reloads_with_identical_logits(fresh_smollm, sample_ids, tmp_path):
    model, tok = fresh_smollm
    compressed = get_method("svd").from_table(input_table(model).float(), 10)
    compress_model(model, compressed, "shared")
    with torch.no_grad():
        expected = model(sample_ids).logits
    save_compressed(tmp_path / "svd10", compressed, base_model="smollm2-135m",
                    head_policy="shared", target_cr=10)  # fmt: skip
    reloaded, _, module = load_compressed(tmp_path / "svd10")
    with torch.no_grad():
        assert torch.equal(reloaded(sample_ids).logits, expected)
    assert module.reached_cr == compressed.reached_cr
    assert (tmp_path / "svd10" / "embedding.safetensors").stat().st_size < 4 * 49152 * 576 / 9


@needs_data
def test_saved_see_model_reloads_with_identical_logits(fresh_smollm, sample_ids, tmp_path):
    model, tok = fresh_smollm
    compressed = get_method("see").from_table(
        input_table(model).float(), 20, tokenizer=tok, steps=2, sememe_source="wordnet"
    )
    compress_model(model, compressed, "dense")
    with torch.no_grad():
        expected = model(sample_ids).logits
    save_compressed(tmp_path / "see20", compressed, base_model="smollm2-135m")
    reloaded, _, module = load_compressed(tmp_path / "see20")
    assert torch.equal(module.token_units, compressed.token_units)
    with torch.no_grad():
        assert torch.equal(reloaded(sample_ids).logits, expected)


@needs_data
def test_see_lm_eval_cli_runs_a_compressed_model(tmp_path):
    script = shutil.which("see-lm-eval")
    command = [script] if script else [sys.executable, "-m", "see.evaluation.lm_eval_model"]
    command += ["run", "--model", "see", "--model_args",
                "pretrained=smollm2-135m,method=svd,ratio=10", "--tasks", "sst2", "--limit", "4",
                "--output_path", str(tmp_path)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sst2" in out.stdout and "acc" in out.stdout
    assert "'method': 'svd', 'ratio': 10" in out.stdout
    assert list(tmp_path.rglob("results_*.json"))  # lm-eval wrote its own results file
