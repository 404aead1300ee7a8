"""Run configuration: a grid (benchmarks/<preset>.toml), its healing and benchmark tables.

Parsed and validated here without torch or any subsystem, so that a bad preset fails in a
second and the report can read configs. The method layer checks what only it knows (method
names and their options dataclasses) when a grid is expanded into cells (see.grid.cells).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
EXPERIMENTS = BENCHMARKS / "experiments"  # finished experiments, kept for their published runs
DTYPES = ("float32", "bfloat16", "float16")
# Zoo models whose released tokenizer has no BOS token while their GGUF file names one
# (`<|endoftext|>`): the zoo drops it, so lm-eval starts each WikiText document with the
# release's EOS, as it does for the hub model. Led by `<|endoftext|>`, Qwen2.5-Coder 0.5B lost
# 17-21% in token log-likelihood and swung by +-8% under tiny changes of that one row (int4
# "improved" it by 11%); led by its EOS it is within 1% of no prefix (issue 38, RESULTS.md).
RELEASE_HAS_NO_BOS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
PERPLEXITY_DEFINITION = "lm-eval loglikelihood_rolling over documents, max_length={max_length}"
NO_BOS_PREFIX = "; prefix: the release's EOS (its tokenizer has no BOS)"


def perplexity_definition(model: str, max_length: int) -> str:
    """How a WikiText perplexity is measured for `model` (part of the cell key): a model whose
    prefix token changed (see.config.RELEASE_HAS_NO_BOS) gets new cells, never mixed ones."""
    definition = PERPLEXITY_DEFINITION.format(max_length=max_length)
    return definition + (NO_BOS_PREFIX if model in RELEASE_HAS_NO_BOS else "")


HEAD_POLICIES = ("dense", "shared")  # the LM head: kept dense, or rebuilt from the new table
TIE_SOURCES = ("as_loaded", "retied")


@dataclass(frozen=True)
class GridConfig:
    name: str
    models: list[str]
    methods: list[str]
    ratios: list[float]
    tasks: dict[str, int | None]  # task -> limit (documents); None = the whole split
    head_policies: list[str] = field(default_factory=lambda: ["dense"])
    tie_source: str = "as_loaded"
    # method -> options, or a list of option sets (one cell per set: variants of a method)
    method_options: dict[str, dict | list[dict]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    max_length: int = 2048
    batch_size: int | str = 1  # an int, or "auto" (lm-eval's search; GPU only, CONTRACTS.md)
    bootstrap_iters: int = 1000
    # few-shot examples per task: an int for every task, None = each task's own default, or
    # "signal": per (model, task) from benchmarks/tables/signal.toml (see/evaluation/signal.py)
    num_fewshot: int | str | None = None
    # with num_fewshot "signal": (model, task) pairs the table calls uninformative get a
    # `skipped` row naming the signal numbers instead of an evaluation (hours on large models)
    skip_uninformative: bool = False
    dtype: str = "float32"
    data_dir: str | None = None
    # trained methods pick their checkpoint by token perplexity on this many WikiText-2
    # validation tokens (the paper's "initial perplexity" selection; never the test split)
    selection_tokens: int = 2048
    # healing (HealConfig fields, below); None = initial quality only
    heal: dict | None = None
    # memory/throughput benchmark settings (BenchSettings fields, below)
    bench: dict | None = None
    # task fine-tuning (FinetuneConfig fields, below); None = no fine-tuned rows
    finetune: dict | None = None

    def __post_init__(self):
        validate(self)

    def config_hash(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def grid_defaults() -> dict:
    """GridConfig's default settings (a run started before a setting existed ran with it)."""
    return {
        f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(GridConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


def validate(cfg: GridConfig) -> None:
    for name in ("models", "methods", "ratios", "tasks", "head_policies", "seeds"):
        if not getattr(cfg, name):
            raise ValueError(f"grid {cfg.name!r}: {name} must not be empty")
    for method, variants in cfg.method_options.items():
        if method not in cfg.methods:
            raise ValueError(f"grid {cfg.name!r}: method_options for {method!r}, not in methods")
        for options in variants if isinstance(variants, list) else [variants]:
            if not isinstance(options, dict):
                raise ValueError(
                    f"grid {cfg.name!r}: options of {method!r} must be a table, got {options!r}"
                )
    for ratio in cfg.ratios:
        if not isinstance(ratio, (int, float)) or not 1 < ratio < float("inf"):
            raise ValueError(
                f"grid {cfg.name!r}: compression ratio must be a finite number > 1, got {ratio!r}"
            )
    for policy in cfg.head_policies:
        if policy not in HEAD_POLICIES:
            raise ValueError(f"grid {cfg.name!r}: unknown head policy {policy!r}; {HEAD_POLICIES}")
    if cfg.tie_source not in TIE_SOURCES:
        raise ValueError(f"grid {cfg.name!r}: unknown tie_source {cfg.tie_source!r}; {TIE_SOURCES}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"grid {cfg.name!r}: unknown dtype {cfg.dtype!r}; allowed: {DTYPES}")
    for task, limit in cfg.tasks.items():
        if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
            raise ValueError(
                f"grid {cfg.name!r}: limit of task {task!r} must be > 0, got {limit!r}"
            )
    if cfg.heal is not None:
        try:
            HealConfig(**cfg.heal)
        except TypeError as err:
            raise ValueError(f"grid {cfg.name!r}: bad [heal] table: {err}") from err
    if cfg.finetune is not None:
        try:
            FinetuneConfig(**cfg.finetune)
        except TypeError as err:
            raise ValueError(f"grid {cfg.name!r}: bad [finetune] table: {err}") from err
    if cfg.bench is not None:
        try:
            BenchSettings(**cfg.bench)
        except (TypeError, ValueError) as err:
            raise ValueError(f"grid {cfg.name!r}: bad [bench] table: {err}") from err
    if cfg.batch_size != "auto" and not (isinstance(cfg.batch_size, int) and cfg.batch_size >= 1):
        raise ValueError(
            f"grid {cfg.name!r}: batch_size must be >= 1 or 'auto', got {cfg.batch_size!r}"
        )
    if not (
        cfg.num_fewshot in (None, "signal")
        or (isinstance(cfg.num_fewshot, int) and cfg.num_fewshot >= 0)
    ):
        raise ValueError(
            f"grid {cfg.name!r}: num_fewshot must be an int >= 0 or 'signal', got "
            f"{cfg.num_fewshot!r}"
        )
    if cfg.skip_uninformative and cfg.num_fewshot != "signal":
        raise ValueError(
            f"grid {cfg.name!r}: skip_uninformative needs num_fewshot = 'signal' (the table "
            f"that says which tasks are informative), got num_fewshot {cfg.num_fewshot!r}"
        )
    if cfg.selection_tokens < 16:
        raise ValueError(
            f"grid {cfg.name!r}: selection_tokens must be >= 16, got {cfg.selection_tokens}"
        )
    if cfg.max_length < 16:
        raise ValueError(f"grid {cfg.name!r}: max_length must be >= 16, got {cfg.max_length}")


def preset_path(preset: str | Path) -> Path:
    """A preset name -> benchmarks/<name>.toml, or benchmarks/experiments/<name>.toml for a
    finished experiment (published runs keep resolving their preset); a path as given."""
    path = Path(preset)
    if path.suffix:
        return path
    for folder in (BENCHMARKS, EXPERIMENTS):
        if (folder / f"{preset}.toml").is_file():
            return folder / f"{preset}.toml"
    return BENCHMARKS / f"{preset}.toml"


def presets() -> dict[str, str]:
    """The presets a user runs (benchmarks/*.toml) -> the first line of each one's header."""
    out = {}
    for path in sorted(BENCHMARKS.glob("*.toml")):
        first = next(iter(path.read_text().splitlines()), "")
        out[path.stem] = first.removeprefix("#").strip()
    return out


def load_grid(preset: str | Path, **overrides) -> GridConfig:
    """A preset name (benchmarks/<name>.toml, or a finished experiment in
    benchmarks/experiments/) or a TOML path -> validated GridConfig."""
    path = preset_path(preset)
    if not path.is_file():
        known = sorted(presets())
        raise FileNotFoundError(
            f"no grid config {str(path)!r}; presets: {known} (and benchmarks/experiments/)"
        )
    raw = tomllib.loads(path.read_text())
    raw.setdefault("name", path.stem)
    # TOML has no null: a task limit of 0 or "all" means the whole split
    raw["tasks"] = {t: (None if v in (0, "all") else v) for t, v in raw.get("tasks", {}).items()}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    allowed = {f.name for f in dataclasses.fields(GridConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return GridConfig(**raw)


STAGES = ("stage1", "stage2")
ROW_LOSSES = ("centred", "raw", "none")
AUTOCASTS = ("auto", "bf16", "off")
DEFAULT_TEXT = "wikitext-2-valid"
SAMPLED_TEXT = "teacher-samples"  # text sampled from the uncompressed model (see.heal_text)
NAMED_TEXTS = (DEFAULT_TEXT, SAMPLED_TEXT, f"{DEFAULT_TEXT}+{SAMPLED_TEXT}")
TEST_TEXTS = ("wikitext-2-raw/wiki.test.raw", "wikitext-2/test.txt", "wiki.test", "test.txt")


@dataclass(frozen=True)
class HealConfig:
    # stage 2 alone by default: at 8k and 32k tokens in all it healed more than stage 1 +
    # stage 2 in 4 of 6 comparisons (SVD, the autoencoder, SEE at CR 10; runs
    # heal-curve-stage2 vs heal-curve), and stage 1 raised the autoencoder's perplexity
    stage1_steps: int = 0
    stage2_steps: int = 100
    batch_size: int = 4
    seq_len: int = 256
    grad_accum: int = 1
    lr: float = 1e-3
    align_layers: tuple[int, ...] = (-1,)
    # stage 1's embedding-row terms, MSE + (1 - cos): none (default), on raw rows ("raw", the
    # earlier default), or on rows minus the original table's mean row ("centred")
    row_loss: str = "none"
    temperature: float = 2.0
    ce_weight: float = 1.0
    train_head_norms: bool = False
    text: str = DEFAULT_TEXT
    save_every: int = 25
    # bf16 autocast: "auto" = on a GPU only; "bf16" also on CPU (faster where the CPU has
    # bf16 instructions: `python -m see bench-heal` measures it); "off" = fp32 everywhere
    autocast: str = "auto"
    # stage 2's KL on the teacher's top-k tokens plus one bucket for the rest (0 = the full
    # distribution, computed live); with k > 0 the teacher's top-k are kept on disk and reused
    # by every method, ratio and seed healed on the same model and text (TeacherCache). 64:
    # faster and no worse per token than the full KL in the bench-heal runs
    teacher_top_k: int = 64
    # stage 1: keep the teacher's aligned hidden states on the same disk cache (d floats per
    # token and aligned layer: 2.4 MB per step of 1,024 SmolLM2 tokens, GBs for GPU budgets)
    cache_hidden: bool = False
    # torch.compile of the student's forward and backward (the teacher runs eager: its outputs
    # come from the cache). Run 20261205-021022-bench-heal (SmolLM2, 2 CPU threads): stage 2
    # 457 vs 309 tokens/s eager at the same token perplexity, after a one-off compile of about
    # 40 s per healed cell, so faster from about 60 steps on; `compile = false` where no C++
    # compiler (CPU) or Triton (GPU) is at hand. Stage 1 must then align at the last layer (an
    # early layer stops the forward by a hook)
    compile: bool = True
    # tokens-to-recover curves: total healing tokens (stage 1 + stage 2) at which the cell is
    # evaluated, increasing; stage 2 then runs to the last one (stage2_steps must be 0)
    curve_tokens: tuple[int, ...] = ()
    # `teacher-samples` (see.heal_text): tokens to sample (0 = as many as the budget reads, so
    # that no window is read twice on average), tokens per sample, samples per generated chunk
    # (the chunks are the unit of caching and seeding), temperature and seed
    sample_tokens: int = 0
    sample_length: int = 512
    sample_batch: int = 32
    sample_temperature: float = 1.0
    sample_seed: int = 0

    def __post_init__(self):
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ValueError(f"healing steps must be >= 0: {self.stage1_steps}/{self.stage2_steps}")
        if self.stage1_steps + self.stage2_steps == 0 and not self.curve_tokens:
            raise ValueError("healing budget is zero: set stage1_steps and/or stage2_steps > 0")
        self.check_curve()
        if min(self.batch_size, self.seq_len, self.grad_accum, self.save_every) < 1:
            raise ValueError("healing batch_size, seq_len, grad_accum, save_every must be >= 1")
        if not isinstance(self.teacher_top_k, int) or self.teacher_top_k < 0:
            raise ValueError(f"teacher_top_k={self.teacher_top_k!r}; allowed: an int >= 0")
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"healing autocast={self.autocast!r}; allowed: {AUTOCASTS}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"healing compile={self.compile!r}; allowed: true or false")
        if self.row_loss not in ROW_LOSSES:
            raise ValueError(f"healing row_loss={self.row_loss!r}; allowed: {ROW_LOSSES}")
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError(f"temperature and lr must be > 0: {self.temperature}, {self.lr}")
        self.check_samples()
        name = self.text.replace("\\", "/")
        if any(name.endswith(t) for t in TEST_TEXTS) or name in ("wikitext", "wikitext-2-test"):
            raise ValueError(
                f"healing text {self.text!r} is the evaluated test split; train on "
                f"{DEFAULT_TEXT!r} (WikiText-2 validation) or another text file"
            )

    def check_samples(self) -> None:
        sizes = {
            "sample_tokens": (self.sample_tokens, 0),
            "sample_length": (self.sample_length, 2),
            "sample_batch": (self.sample_batch, 1),
            "sample_seed": (self.sample_seed, 0),
        }
        for name, (value, least) in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"healing {name}={value!r}; allowed: an int >= {least}")
        if not isinstance(self.sample_temperature, (int, float)) or self.sample_temperature <= 0:
            raise ValueError(
                f"healing sample_temperature={self.sample_temperature!r}; allowed: a number > 0"
            )
        if "+" in self.text and self.text != NAMED_TEXTS[2]:
            raise ValueError(f"healing text {self.text!r}; allowed: {NAMED_TEXTS} or a text file")
        if self.text == NAMED_TEXTS[2] and self.batch_size % 2:
            raise ValueError(
                f"healing text {self.text!r} gives each text half of every batch: batch_size "
                f"must be even, got {self.batch_size}"
            )

    def total_tokens(self) -> int:
        """Tokens the whole budget trains on (stage 1 + stage 2, or the curve's last point)."""
        if self.curve_tokens:
            return self.curve_tokens[-1]
        return (self.stage1_steps + self.stage2_steps) * self.tokens_per_step()

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum

    def check_curve(self) -> None:
        curve, per_step = list(self.curve_tokens), self.tokens_per_step()
        if not curve:
            return
        stage1 = self.stage1_steps * per_step
        bad = [b for b in curve if not isinstance(b, int) or b <= stage1 or (b - stage1) % per_step]
        if bad or curve != sorted(set(curve)):
            raise ValueError(
                f"curve_tokens {curve} must be increasing token counts, each above stage 1's "
                f"{stage1} tokens by a multiple of {per_step} tokens per step (bad: {bad})"
            )
        if self.stage2_steps:
            raise ValueError(
                f"stage2_steps={self.stage2_steps} with curve_tokens: stage 2 runs to the last "
                f"budget ({curve[-1]} tokens); set stage2_steps = 0"
            )

    def stages(self) -> list[str]:
        """The healing stages a cell is evaluated after; `stage2@T` = after T tokens in all."""
        names = [s for s in STAGES if getattr(self, f"{s}_steps") > 0]
        return names + [f"stage2@{tokens}" for tokens in self.curve_tokens]

    def stage_steps(self, label: str) -> tuple[str, int]:
        """`stage1` / `stage2` / `stage2@T` -> (stage, the step it trains to)."""
        stage, _, tokens = label.partition("@")
        if tokens:
            return stage, (int(tokens) - self.stage1_steps * self.tokens_per_step()) // (
                self.tokens_per_step()
            )
        return stage, getattr(self, f"{stage}_steps")


FINETUNE_PARTS = ("all", "lora")


@dataclass(frozen=True)
class FinetuneConfig:
    """Task fine-tuning (see/finetune.py): the same budget for every method of a comparison.

    Each task trains a fresh copy of the cell's model on `examples` documents of its training
    split (drawn in a seeded order), `epochs` passes, in the prompt lm-eval scores it with
    (zero-shot context; loss on the answer tokens), then lm-eval evaluates it zero-shot."""

    examples: int = 1000
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 8
    max_tokens: int = 256  # longer examples lose the start of their context (answers kept)
    warmup_ratio: float = 0.06  # linear warmup, then linear decay to 0 (BERT's schedule)
    weight_decay: float = 0.0
    # "all": every parameter (the paper's setting); "lora": PEFT LoRA adapters on every
    # linear layer of the body plus the compressed embedding's own parameters
    train: str = "all"
    lora_rank: int = 16
    # each gold answer of a multiple-choice task drawn equally often (see finetune.task_pairs)
    balanced: bool = False
    # per-task `examples` (e.g. {"cola": 4000}: a task a small budget cannot teach)
    task_examples: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("examples", "epochs", "batch_size", "max_tokens", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"finetune {name}={value!r}; allowed: an int >= 1")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"finetune lr={self.lr!r}; allowed: a number > 0")
        for name in ("warmup_ratio", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"finetune {name}={value!r}; allowed: a number in [0, 1)")
        if self.train not in FINETUNE_PARTS:
            raise ValueError(f"finetune train={self.train!r}; allowed: {FINETUNE_PARTS}")
        if not isinstance(self.balanced, bool):
            raise ValueError(f"finetune balanced={self.balanced!r}; allowed: true or false")
        if not isinstance(self.task_examples, dict):
            raise ValueError(
                f"finetune task_examples={self.task_examples!r}; allowed: a table task = int"
            )
        for task, value in self.task_examples.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"finetune task_examples.{task}={value!r}; allowed: an int >= 1")

    def examples_for(self, task: str) -> int:
        return self.task_examples.get(task, self.examples)


@dataclass(frozen=True)
class BenchSettings:
    embedding_shape: tuple[int, int] = (8, 512)
    prefill: list[tuple[int, int]] = field(default_factory=lambda: [(1, 512), (8, 512), (32, 2048)])
    decode_batches: list[int] = field(default_factory=lambda: [1, 16])
    decode_prompt: int = 32
    new_tokens: int = 128
    repeats: int = 10
    warmup: int = 2
    device: str = "auto"  # cuda when available, else cpu
    head_cache: bool = True  # a shared head keeps its rebuilt table between calls
    compile: bool = False  # torch.compile the compressed module's forward (fused gather+kron)
    # CPU only: glibc's malloc threshold (bytes) above which blocks are mmapped and so handed
    # back on free. Fixed, because glibc's default raises it to the size of each large block
    # freed, after which a chunked head's dequantized rows (8192 x d floats) stay in the heap
    # and read as the method's peak memory; 0 keeps glibc's default
    cpu_mmap_threshold: int = 65536

    def __post_init__(self):
        threshold = self.cpu_mmap_threshold
        if not isinstance(threshold, int) or not 0 <= threshold <= 32 * 2**20:
            raise ValueError(
                f"cpu_mmap_threshold={threshold!r}; allowed: 0 (glibc's default) or a byte "
                "count up to 33554432 (glibc's largest)"
            )
