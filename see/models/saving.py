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


def parse_options(pairs: list[str]) -> dict:
    """`k=v` strings -> options, each value read as a TOML value where it parses as one (so
    `steps=300` is an int and `loss=mse` a string), as the presets give them."""
    import tomllib

    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE, e.g. steps=300")
        try:
            options[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = text
    return options


def compress_to_folder(
    model_name: str,
    method: str,
    ratio: float,
    options: dict,
    out: str | Path,
    *,
    seed: int = 0,
    head_policy: str = "dense",
    data_dir: str | None = None,
) -> dict:
    """Compress `model_name`'s embedding exactly as a grid cell does (see.grid.build_model,
    the grid's default settings) and save it to `out`; returns the bytes and ratios."""
    from see.config import GridConfig
    from see.grid import Cell, build_model
    from see.grid.cells import check_methods
    from see.methods.base import check_target_cr
    from see.models.zoo import check_model

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {str(out)!r} exists and is not empty; choose a new folder")
    if method == "baseline":
        raise ValueError("method 'baseline' compresses nothing; choose a compression method")
    check_target_cr(ratio)
    cfg = GridConfig(
        name="compress",
        models=[model_name],
        methods=[method],
        ratios=[float(ratio)],
        tasks={"wikitext": None},
        head_policies=[head_policy],
        method_options={method: options} if options else {},
        data_dir=data_dir,
    )
    check_methods(cfg)  # the method exists and its options build (before any model loads)
    check_model(model_name)
    cell = Cell(model_name, method, float(ratio), head_policy, seed, tuple(sorted(options.items())))
    model, _, info, _ = build_model(cell, cfg)
    compressed = model.get_input_embeddings().compressed
    dense_bytes = compressed.num_embeddings * compressed.embedding_dim * 4
    summary = {
        "embedding_bytes": info["embedding_bytes"],
        "dense_fp32_bytes": dense_bytes,
        "byte_cr": info["byte_cr"],
        "reached_cr": info["reached_cr"],
        "compress_s": round(info["compress_s"], 2),
    }
    save_compressed(
        out,
        compressed,
        base_model=model_name,
        head_policy=head_policy,
        tie_source=cfg.tie_source,
        target_cr=float(ratio),
        build_info=summary,
    )
    return summary
