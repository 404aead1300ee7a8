"""Healing: two stages of training that give every compressed embedding the same chance.

- Stage 1, alignment: only the compressed module trains. Loss = MSE between hidden states of
  the model run with the new and with the original embedding at `align_layers` (default the
  last layer), divided by the teacher's mean square. `row_loss` adds MSE + (1 - cos) between
  the new and the original embedding rows of the batch's tokens, on raw rows (the earlier
  default) or centred rows (minus the table's mean row); the default is none: a fitted
  method's rows were chosen for perplexity, not for row error, and pulling them back towards
  the original rows undoes that (bench-heal measures it). An early align layer runs the body
  only up to that layer (`hidden_states_at`): cheaper per token, but it heals less per token.
- Stage 2, distillation: KL(teacher || student) of the next-token distributions at
  `temperature` (times T**2) plus cross-entropy on the text; the compressed module trains (and
  the head and norms with `train_head_norms`, off by default).
The teacher is the same model with its original embedding and head swapped back in: the body
is frozen, so no second copy is needed (with `train_head_norms` a frozen copy is kept).

Text (`see.heal_text`): WikiText-2 *validation* (`wikitext-2-valid`, detokenized) by default,
text sampled from the teacher, both, or a local text file; the evaluated test split is refused.
Budget in steps x batch x seq_len tokens, equal across the methods of a comparison; fp32 on
CPU, bf16 autocast on GPU (`autocast`; the frozen linear weights cast once per stage,
`frozen_linears_in`); gradient accumulation; seeded; resumable from its last checkpoint. The
student's forward and backward run compiled (`compile`, torch.compile; the model itself stays
eager for evaluation).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import zlib
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from see.config import STAGES, HealConfig
from see.models.surgery import swapped_modules

__all__ = ["HealConfig", "Healer", "TeacherCache"]


def check_layers(layers: tuple[int, ...], num_layers: int) -> tuple[int, ...]:
    """Hidden-state indices (1 = after the first decoder layer, num_layers = the model's last
    hidden state, after its final norm; negatives count from the end) -> positive indices."""
    for layer in layers:
        if not (1 <= layer <= num_layers or -num_layers <= layer <= -1):
            raise ValueError(
                f"unknown align layer {layer}: the model has hidden states 1..{num_layers} "
                f"(or -1..-{num_layers}) after its decoder layers"
            )
    return tuple(sorted({layer if layer > 0 else num_layers + 1 + layer for layer in layers}))


def top_k_teacher(logits: torch.Tensor, k: int, temperature: float):
    """(log-probs, ids) of the k most likely tokens at `temperature`: what stage 2 keeps."""
    log_q = nn.functional.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = log_q.topk(k, dim=-1)
    return values, ids.to(torch.int32)


def top_k_kl(
    student_logits: torch.Tensor, log_q: torch.Tensor, ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) per token (times T**2) over the teacher's top-k tokens plus one
    bucket holding the rest of both distributions: exact gradients on the top-k, the tail's
    mass matched as a whole."""
    log_p_all = nn.functional.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = log_p_all.gather(-1, ids.long())
    q_rest = (1 - log_q.exp().sum(-1)).clamp_min(1e-12)
    p_rest = (1 - log_p.exp().sum(-1)).clamp_min(1e-12)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1) + q_rest * (q_rest.log() - p_rest.log())
    return kl.mean() * temperature**2


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary name, then rename: a killed process (or another one writing
    the same file) never leaves a torn file under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class TeacherCache:
    """The teacher's outputs on disk, content-addressed by (model, token ids, what is kept):
    stage 2's top-k log-probs (`top64|T=2.0`) and stage 1's aligned hidden states
    (`hidden|layers=(30,)`).

    The teacher's outputs depend only on the model and the text, never on the method, ratio or
    seed, so one teacher forward serves every cell of a grid that heals on the same batches
    (the batches depend on the seed and the step only). `forwards` counts the misses."""

    def __init__(self, folder: str | Path, model_id: str):
        self.folder, self.model_id, self.forwards = Path(folder), model_id, 0

    def get(self, ids: torch.Tensor, kept: str, compute) -> tuple[torch.Tensor, ...]:
        blob = ids.cpu().numpy().tobytes() + f"{self.model_id}|{kept}".encode()
        path = self.folder / f"{hashlib.sha256(blob).hexdigest()[:32]}.pt"
        if path.is_file():
            return tuple(t.to(ids.device) for t in torch.load(path))
        self.forwards += 1
        tensors = tuple(compute())
        save_atomic(tuple(t.cpu() for t in tensors), path)
        return tensors


class _StopForward(Exception):
    """Raised by a hook once the deepest aligned layer has run: the rest is never computed."""


def hidden_states_at(
    model, ids: torch.Tensor, layers: tuple[int, ...], decoder=None
) -> dict[int, torch.Tensor]:
    """Hidden states at positive indices `layers`, running the body no further than needed.

    Index i < num_layers is the output of decoder layer i (as in HF's `hidden_states[i]`),
    caught by a forward hook that stops the forward there: aligning at layer 2 of 30 costs
    2/30 of a forward and backward. Index num_layers (the last, after the final norm) needs
    the whole body and comes from `output_hidden_states`, run by `decoder` when given (the
    model's decoder compiled).
    """
    num_layers = model.config.get_text_config().num_hidden_layers
    if max(layers) == num_layers:
        run = model.get_decoder() if decoder is None else decoder
        states = run(input_ids=ids, output_hidden_states=True).hidden_states
        return {i: states[i] for i in layers}
    blocks, captured = model.get_decoder().layers, {}

    def catch(index: int):
        def hook(module, args, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
            if index == max(layers):
                raise _StopForward

        return hook

    handles = [blocks[i - 1].register_forward_hook(catch(i)) for i in layers]
    try:
        model.get_decoder()(input_ids=ids)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


@contextmanager
def frozen_linears_in(model: nn.Module, dtype: torch.dtype, keep: set[int]):
    """The nn.Linear weights (and biases) held in `dtype` for the block, restored after; the
    parameters whose ids are in `keep` (the trainable ones) stay as they are.

    Under bf16 autocast each matmul casts its fp32 weight to bf16 on every forward: for a
    frozen body that is the same rounding redone at every step. Cast once, the matmuls get the
    same bf16 operands (the same numbers) without the casts; the fp32 originals come back
    afterwards, bit for bit, for evaluation and saving."""
    originals = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            for p in module.parameters(recurse=False):
                if id(p) not in keep and p.dtype != dtype and id(p) not in originals:
                    originals[id(p)] = (p, p.data)
                    p.data = p.data.to(dtype)
    try:
        yield
    finally:
        for p, data in originals.values():
            p.data = data


class Healer:
    """Trains a compressed model against its teacher (the original embedding and head)."""

    def __init__(
        self,
        model,
        teacher_input: nn.Module,
        teacher_head: nn.Module,
        cfg: HealConfig,
        texts: torch.Tensor | list[torch.Tensor],
        seed: int = 0,
        cache: TeacherCache | None = None,
    ):
        num_layers = model.config.get_text_config().num_hidden_layers
        self.layers = check_layers(cfg.align_layers, num_layers)
        if cfg.compile and cfg.stage1_steps and max(self.layers) < num_layers:
            raise ValueError(
                f"healing compile with align_layers {cfg.align_layers}: compile needs stage 1 "
                f"aligned at the last layer ({num_layers} or -1; an early layer stops the "
                "forward by a hook): set compile = false to align earlier"
            )
        self.model, self.cfg, self.seed = model, cfg, seed
        self.texts = [texts] if isinstance(texts, torch.Tensor) else list(texts)
        self.cache = cache
        self.teacher_input, self.teacher_head = teacher_input, teacher_head
        self.teacher = None
        if cfg.train_head_norms:  # the body changes: keep a frozen teacher copy
            self.teacher = copy.deepcopy(model)
            self.teacher.set_input_embeddings(teacher_input)
            self.teacher.set_output_embeddings(teacher_head)
        self.device = next(model.parameters()).device
        with torch.no_grad():  # the original table's mean row (centred row terms)
            self.mean_row = teacher_input.weight.float().mean(0)
        self.step = {stage: 0 for stage in STAGES}
        # the student's forward (and so its backward) compiled; the wrappers share the model's
        # parameters and leave the model itself eager (evaluation, the teacher's runs)
        self.student = torch.compile(model) if cfg.compile else model
        self.student_decoder = torch.compile(model.get_decoder()) if cfg.compile else None

    def trainable(self, stage: str) -> list[nn.Parameter]:
        params = list(self.model.get_input_embeddings().parameters())
        if stage == "stage2" and self.cfg.train_head_norms:
            head = self.model.get_output_embeddings()
            norms = [m for m in self.model.modules() if "norm" in type(m).__name__.lower()]
            params += [p for m in [head, *norms] for p in m.parameters()]
        unique = {id(p): p for p in params}
        return list(unique.values())

    def batch(self, stage: str, step: int) -> torch.Tensor:
        """Random windows of seq_len tokens; with two texts, half of the windows from each."""
        gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{stage}:{step}".encode()))
        per_text, windows = self.cfg.batch_size // len(self.texts), []
        for text in self.texts:
            starts = torch.randint(0, len(text) - self.cfg.seq_len, (per_text,), generator=gen)
            windows += [text[s : s + self.cfg.seq_len] for s in starts]
        return torch.stack(windows).to(self.device)

    @torch.no_grad()
    def teacher_run(self, forward):
        """forward(model) with the teacher's modules: the original embedding and head."""
        if self.teacher is not None:
            return forward(self.teacher)
        with swapped_modules(self.model, self.teacher_input, self.teacher_head):
            return forward(self.model)

    def loss(self, stage: str, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        parts = self.stage1_parts(ids) if stage == "stage1" else self.stage2_parts(ids)
        return sum(parts.values()), {k: v.item() for k, v in parts.items()}

    @staticmethod
    def kept(ids: torch.Tensor, what: str) -> str:
        """The cache tag of a teacher output: what is kept, and whether bf16 computed it."""
        return f"{what}|bf16={torch.is_autocast_enabled(ids.device.type)}"

    def stage1_parts(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        def compute() -> tuple[torch.Tensor, ...]:
            states = self.teacher_run(lambda model: hidden_states_at(model, ids, self.layers))
            return tuple(states[i].float() for i in self.layers)

        kept = self.kept(ids, f"hidden|layers={self.layers}")
        cached = self.cache is not None and self.cfg.cache_hidden
        states = self.cache.get(ids, kept, compute) if cached else compute()
        teacher = dict(zip(self.layers, states, strict=True))
        student = hidden_states_at(self.model, ids, self.layers, self.student_decoder)
        parts = {
            "hidden_mse": sum(
                (student[i].float() - teacher[i].float()).pow(2).mean()
                / teacher[i].float().pow(2).mean()
                for i in self.layers
            )
        }
        if self.cfg.row_loss != "none":
            new = self.model.get_input_embeddings()(ids).float()
            old = self.teacher_input(ids).float()
            if self.cfg.row_loss == "centred":
                new, old = new - self.mean_row, old - self.mean_row
            parts["emb_mse"] = (new - old).pow(2).mean() / old.pow(2).mean()
            cos = nn.functional.cosine_similarity(new, old, dim=-1).mean()
            parts["emb_cos"] = 1 - cos
        return parts

    def stage2_parts(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        t, k = self.cfg.temperature, self.cfg.teacher_top_k
        if k > 0:

            def compute():
                logits = self.teacher_run(lambda model: model(input_ids=ids).logits)
                return top_k_teacher(logits, k, t)

            kept = self.kept(ids, f"top{k}|T={t}")
            log_q, top = self.cache.get(ids, kept, compute) if self.cache else compute()
            student = self.student(input_ids=ids, labels=ids)
            kl = top_k_kl(student.logits, log_q, top, t)
        else:
            teacher_logits = self.teacher_run(lambda model: model(input_ids=ids).logits)
            student = self.student(input_ids=ids, labels=ids)
            log_p = nn.functional.log_softmax(student.logits.float() / t, dim=-1)
            log_q = nn.functional.log_softmax(teacher_logits.float() / t, dim=-1)
            kl = nn.functional.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
            kl = kl / ids.shape[1] * t * t  # per token
        return {"kl": kl, "ce": student.loss.float() * self.cfg.ce_weight}

    def run(self, label: str, checkpoint: Path | None = None) -> dict:
        """Train a stage to its budget (`stage2@T`: to T tokens in all), resuming from
        `checkpoint`; returns its summary."""
        stage, steps = self.cfg.stage_steps(label)
        params = self.trainable(stage)
        trainable_ids = {id(p) for p in params}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable_ids)
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=0.0)
        start = 0
        if checkpoint is not None and checkpoint.is_file():
            state = torch.load(checkpoint, map_location=self.device)
            for p, saved in zip(params, state["params"], strict=True):
                p.data.copy_(saved)
            opt.load_state_dict(state["optimizer"])
            start = state["step"]
            if start > steps:
                raise ValueError(
                    f"{checkpoint} is at {stage} step {start}, past {label}'s step {steps}: "
                    "its state cannot be evaluated any more; delete the checkpoint to redo it"
                )
        bf16 = self.cfg.autocast == "bf16" or (
            self.cfg.autocast == "auto" and self.device.type == "cuda"
        )
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        # a tied dense head shares storage, not its Parameter, with the teacher's embedding
        # (`compress_model`): casting the head leaves the teacher's embedding in fp32
        frozen = (
            frozen_linears_in(self.model, torch.bfloat16, trainable_ids) if bf16 else nullcontext()
        )
        began = time.perf_counter()
        self.model.train()
        bar = tqdm(range(start, steps), desc=f"heal {stage}", initial=start, total=steps)
        parts, first = {}, None
        with frozen:
            for step in bar:
                opt.zero_grad(set_to_none=True)
                for micro in range(self.cfg.grad_accum):
                    with autocast:
                        ids = self.batch(stage, step * self.cfg.grad_accum + micro)
                        loss, parts = self.loss(stage, ids)
                    if not math.isfinite(loss.item()):
                        raise FloatingPointError(
                            f"healing {stage} loss is {loss.item()} at step {step}"
                        )
                    (loss / self.cfg.grad_accum).backward()
                opt.step()
                first = first or {**parts, "loss": loss.item()}
                bar.set_postfix(loss=f"{loss.item():.4f}")
                self.step[stage] = step + 1
                done = step + 1
                if checkpoint is not None and (done % self.cfg.save_every == 0 or done == steps):
                    state = {
                        "params": [p.detach() for p in params],
                        "step": step + 1,
                        "optimizer": opt.state_dict(),
                    }
                    save_atomic(state, checkpoint)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return {
            "heal_steps": steps,
            "heal_tokens": steps * self.cfg.tokens_per_step(),
            "heal_total_tokens": steps * self.cfg.tokens_per_step()
            + (self.cfg.stage1_steps * self.cfg.tokens_per_step() if stage == "stage2" else 0),
            "heal_wall_s": time.perf_counter() - began,
            "heal_resumed_from": start,
            "heal_compiled": self.cfg.compile,
            "heal_first_loss": (first or {}).get("loss"),
            "heal_last_loss": sum(parts.values()) if parts else None,
            **{f"heal_last_{k}": v for k, v in parts.items()},
        }
