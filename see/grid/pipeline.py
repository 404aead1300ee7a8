"""One cell's pipeline: load, compress, heal, evaluate; it yields the rows of each (stage, task).
`build_model` is the entry point scripts and the held-out check use."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from see.config import GridConfig
from see.evaluation.lmeval import evaluate
from see.grid.cells import Cell
from see.grid.rows import fewshot_setting, heal_key, identity, status_row
from see.heal import HealConfig, Healer, TeacherCache
from see.heal_text import healing_texts, teacher_samples
from see.results import cell_key, provenance

# Each model's input Fisher (see.compress.validation_fisher), computed once per process: a
# forward and backward over the validation tokens (`fisher_s` 52.7 s on Qwen2.5-Coder 1.5B on
# 2 cores, run 20261207-094421-pq-fit-time-sampled), the same for every cell of the model,
# since each cell loads it afresh from the same files.
_FISHER: dict[tuple, torch.Tensor] = {}


def model_fisher(cell: Cell, cfg: GridConfig, model, tok, spent: dict):
    """The Fisher of the cell's freshly loaded model, from _FISHER or computed there; the
    seconds a computation took go to spent["fisher_s"]."""
    from see.compress import validation_fisher

    key = (cell.model, cfg.dtype, cfg.tie_source, cfg.data_dir)

    def fisher() -> torch.Tensor:
        if key not in _FISHER:
            start = time.perf_counter()
            _FISHER[key] = validation_fisher(model, tok, cfg.data_dir)
            spent["fisher_s"] = time.perf_counter() - start
        return _FISHER[key]

    return fisher


def build_model(cell: Cell, cfg: GridConfig):
    """Load the model and install the cell's compressed embedding.

    Returns (model, tok, info, teacher): teacher = the original (input embedding, head) modules,
    which healing swaps back in to get the uncompressed model's outputs.
    """
    from see.compress import compress
    from see.models import compress_model, count_bytes, load_model
    from see.models.surgery import head_in_use

    start = time.perf_counter()
    model, tok = load_model(cell.model, getattr(torch, cfg.dtype), cfg.tie_source)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    compressed = None
    spent = {"fisher_s": 0.0}
    if cell.method != "baseline":
        compressed = compress(
            model,
            tok,
            cell.method,
            cell.target_cr,
            dict(cell.method_options),
            seed=cell.seed,
            head_policy=cell.head_policy,
            data_dir=cfg.data_dir,
            selection_tokens=cfg.selection_tokens,
            max_length=cfg.max_length,
            dtype=getattr(torch, cfg.dtype),
            input_fisher=model_fisher(cell, cfg, model, tok, spent),
        )
    teacher = (model.get_input_embeddings(), model.get_output_embeddings())
    compress_model(model, compressed, cell.head_policy)
    info = {"load_s": load_s, "compress_s": time.perf_counter() - start, **count_bytes(model)}
    info["fisher_s"] = spent["fisher_s"]  # of compress_s; 0 where cached or not used
    info["head_in_use"] = head_in_use(model, cell.head_policy)
    info["convert_s"] = zoo_convert_seconds(cell.model)
    if compressed is not None:
        info["reached_cr"] = compressed.reached_cr
        info["byte_cr"] = compressed.byte_cr
        info.update(compressed.fit_report)
        if getattr(compressed, "history", None):
            info["fit_history"] = json.dumps(compressed.history)
        info.update(compressed.report_columns(tok, cfg.data_dir))
    else:
        emb = model.get_input_embeddings()
        info["reached_cr"] = 1.0
        info["byte_cr"] = 1.0
        info["embedding_params"] = emb.weight.numel()
    return model, tok, info, teacher


def zoo_convert_seconds(name: str) -> float | None:
    """How long the one-time GGUF conversion of a zoo model took (None for other models)."""
    from see.models.zoo import ZOO, cache_dir

    marker = cache_dir() / "models" / name / "see_zoo.json"
    if name not in ZOO or not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("convert_s")


def adds_bos(tok) -> bool:
    ids = tok("a").input_ids
    return bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id)


def teacher_cache(cfg: GridConfig, cell: Cell, heal: HealConfig) -> TeacherCache | None:
    """The teacher's outputs (stage 2's top-k, stage 1's hidden states with `cache_hidden`),
    shared on disk by every cell healed on the same model."""
    if heal.teacher_top_k == 0 and not heal.cache_hidden:
        return None
    from see.models.zoo import cache_dir

    return TeacherCache(cache_dir() / "teacher", teacher_id(cfg, cell))


def teacher_id(cfg: GridConfig, cell: Cell) -> str:
    """What the uncompressed model's outputs depend on: the caches of its outputs key on it."""
    return f"{cell.model}|{cfg.dtype}|{cfg.tie_source}"


def sampler(cfg: GridConfig, cell: Cell, heal: HealConfig, model, tok, teacher):
    """tokens -> (ids, record): text sampled from the uncompressed model (the teacher's
    modules swapped in), cached per model and settings (see.heal_text)."""
    from see.models.surgery import swapped_modules
    from see.models.zoo import cache_dir

    def sample(tokens: int):
        with swapped_modules(model, *teacher):
            folder = cache_dir() / "heal-text"
            return teacher_samples(heal, tok, model, teacher_id(cfg, cell), tokens, folder)

    return sample


def cell_stages(cfg: GridConfig, cell: Cell) -> list[str]:
    """`initial`, `finetune` with a [finetune] table (each task fine-tuned from the initial
    model), then the healing stages with a budget (none for the baseline)."""
    stages = ["initial"] + (["finetune"] if cfg.finetune is not None else [])
    if cfg.heal is None or cell.method == "baseline":
        return stages
    return [*stages, *HealConfig(**cfg.heal).stages()]


def run_cell(
    cell: Cell,
    cfg: GridConfig,
    pending: dict[str, list[str]],
    run_id: str,
    device: str,
    run_dir: Path | None = None,
) -> Iterator[list[dict]]:
    """Compress, heal and evaluate one cell; yields the rows of each (stage, task) when done.

    A target CR the method cannot reach gives one row per task with value None and the reason.
    Healing checkpoints go to run_dir/heal/<cell>/<stage>.pt, so a killed run resumes there.
    """
    from see.methods.base import UnreachableCR

    try:
        model, tok, info, teacher = build_model(cell, cfg)
    except UnreachableCR as err:
        print(f"[see] {cell.model} {cell.method} CR {cell.target_cr:g}: {err}")
        for stage, tasks in pending.items():
            for task in tasks:
                yield [status_row(cfg, cell, task, run_id, device, "unreachable", str(err), stage)]
        return
    healer, heal_info = None, {}
    for stage in cell_stages(cfg, cell):
        if stage == "finetune":  # trains the whole model: an integer-coded table is no bar
            yield from finetuned_rows(cell, cfg, pending.get(stage, []), run_id, device, model, tok)
            continue
        if stage != "initial" and not any(True for _ in model.get_input_embeddings().parameters()):
            reason = f"{cell.method} has no trainable parameters: healing leaves it as it is"
            for task in pending.get(stage, []):
                yield [status_row(cfg, cell, task, run_id, device, "untrainable", reason, stage)]
            continue
        if stage != "initial":
            if healer is None:
                heal_cfg = HealConfig(**cfg.heal)
                texts, text_info = healing_texts(
                    heal_cfg, tok, cfg.data_dir, sampler(cfg, cell, heal_cfg, model, tok, teacher)
                )
                healer = Healer(
                    model,
                    *teacher,
                    heal_cfg,
                    texts,
                    seed=cell.seed,
                    cache=teacher_cache(cfg, cell, heal_cfg),
                )
            # the points of a curve continue one stage-2 run: one checkpoint for all of them
            name = stage.partition("@")[0]
            key = heal_key(cfg, cell, name)
            checkpoint = run_dir / "heal" / key / f"{name}.pt" if run_dir else None
            heal_info = {**text_info, **healer.run(stage, checkpoint)}
        for task in pending.get(stage, []):
            num_fewshot = fewshot_setting(cfg, cell.model, task)
            yield task_rows(
                cell, cfg, task, stage, run_id, device, model, tok, num_fewshot, info | heal_info
            )


def task_rows(cell, cfg, task, stage, run_id, device, model, tok, num_fewshot, info) -> list:
    """lm-eval's rows of one (cell, stage, task) with the cell's identity and settings."""
    metric_rows = evaluate(
        model,
        tok,
        [task],
        limit=cfg.tasks[task],
        num_fewshot=num_fewshot,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        bootstrap_iters=cfg.bootstrap_iters,
        seed=cell.seed,
        data_dir=cfg.data_dir,
    )
    base = identity(cfg, cell, task, stage)
    common = {**base, **info, "cell_key": cell_key(base), "config_hash": cfg.config_hash()}
    common["add_bos"] = adds_bos(tok)  # a fact of the model's tokenizer, not a setting
    common.update(provenance(run_id, device))
    return [{**common, **row, "task": task} for row in metric_rows]


def finetuned_rows(cell, cfg, tasks, run_id, device, model, tok) -> Iterator[list[dict]]:
    """Each task fine-tuned from the cell's initial model (restored after it) and evaluated
    zero-shot; a task with nothing to train on (WikiText) gets a `skipped` row."""
    from see.finetune import (
        FinetuneConfig,
        NotFinetunable,
        encode_pairs,
        finetune,
        restored,
        task_pairs,
    )

    ft = FinetuneConfig(**cfg.finetune)
    for task in tasks:
        try:
            pairs = task_pairs(task, ft.examples_for(task), cell.seed, cfg.data_dir, ft.balanced)
        except NotFinetunable as err:
            yield [status_row(cfg, cell, task, run_id, device, "skipped", str(err), "finetune")]
            continue
        with restored(model):
            summary = finetune(model, encode_pairs(tok, pairs, ft.max_tokens), ft, cell.seed)
            yield task_rows(cell, cfg, task, "finetune", run_id, device, model, tok, 0, summary)


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
    from see.grid.cells import check_methods
    from see.methods.base import check_target_cr
    from see.models.saving import save_compressed
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
