"""Keep what you compressed: a folder with the method's config and tensors, reloadable.

Layout: `see_compressed.json` (method, its constructor shapes, the base model it replaces the
embedding of, head policy, tie source, target/reached CR, fit report) and
`embedding.safetensors` (the compressed module's parameters and buffers). The rest of the model
is the unchanged base model, loaded by name (zoo short name, local folder or hub id), so the
folder stays small. `load_compressed` gives logits identical to the model that was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from see.methods import CompressedEmbedding, get_method
from see.models.surgery import compress_model
from see.models.zoo import load_model

CONFIG = "see_compressed.json"
TENSORS = "embedding.safetensors"


def save_compressed(
    folder: str | Path,
    compressed: CompressedEmbedding,
    *,
    base_model: str,
    head_policy: str = "dense",
    tie_source: str = "as_loaded",
    target_cr: float | None = None,
    build_info: dict | None = None,
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    init = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        if isinstance(v, torch.Tensor)
        else v
        for k, v in compressed.init_kwargs().items()
    }
    config = {
        "method": compressed.name,
        "init": init,
        "base_model": base_model,
        "head_policy": head_policy,
        "tie_source": tie_source,
        "target_cr": target_cr,
        "reached_cr": compressed.reached_cr,
        "options": compressed.options,
        "fit_report": compressed.fit_report,
        "build_info": build_info or {},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in compressed.state_dict().items()}
    save_file(state, folder / TENSORS)
    (folder / CONFIG).write_text(json.dumps(config, indent=1, default=str))
    return folder


def is_compressed_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def load_compressed(folder: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer, compressed module) rebuilt from a `save_compressed` folder."""
    folder = Path(folder)
    if not is_compressed_folder(folder):
        raise FileNotFoundError(f"{folder} has no {CONFIG}: not a saved compressed model")
    config = json.loads((folder / CONFIG).read_text())
    init = {
        k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"])) if isinstance(v, dict) else v
        for k, v in config["init"].items()
    }
    compressed = get_method(config["method"])(**init)
    compressed.load_state_dict(load_file(folder / TENSORS))
    compressed.fit_report = config.get("fit_report", {})
    model, tok = load_model(config["base_model"], dtype, config["tie_source"])
    compress_model(model, compressed.to(dtype).eval(), config["head_policy"])
    return model, tok, compressed
