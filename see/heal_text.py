"""Healing text: WikiText-2 validation, text sampled from the uncompressed model, both, or a file.

WikiText-2 validation holds about 217k tokens: a 1M-token healing budget passes over it more
than four times, so a long curve would measure memorising it as much as healing. Text sampled
from the teacher (the same model with its original embedding and head) does not run out:

- `teacher-samples`: sequences of `sample_length` tokens, each started by the tokenizer's BOS
  token (EOS where it has none) and sampled at `sample_temperature` with a KV cache, in chunks
  of `sample_batch` sequences; chunk i is drawn from a generator seeded by (sample_seed, i), so
  a longer text extends a shorter one and a killed generation resumes at its last chunk.
- `wikitext-2-valid+teacher-samples`: half of each batch's windows from each text.

The samples are cached on disk per (model, settings) under `$SEE_CACHE_DIR/heal-text/`, with
the settings and the sha256 of the token ids beside them (`samples.json`); rows carry the hash
(`heal_text_hash`). How many passes the budget makes over each text is reported
(`heal_text_passes`) and warned about above one.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from see.config import DEFAULT_TEXT, SAMPLED_TEXT, HealConfig
from see.heal import save_atomic

__all__ = ["healing_texts", "passes", "sample_teacher", "teacher_samples", "text_hash"]


def text_hash(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()


def file_ids(cfg: HealConfig, tokenizer, data_dir: str | None) -> torch.Tensor:
    """The validation text or a local text file as one 1-D tensor of token ids."""
    if cfg.text in (DEFAULT_TEXT, f"{DEFAULT_TEXT}+{SAMPLED_TEXT}"):
        from see.evaluation.validation import validation_ids

        return validation_ids(tokenizer, None, data_dir)
    path = Path(cfg.text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"healing text file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]


@torch.no_grad()
def sample_teacher(
    model, start_id: int, batch: int, length: int, temperature: float, seed: int
) -> torch.Tensor:
    """`batch` sequences of `length` tokens (the first is `start_id`) sampled from `model` with
    a KV cache; one seeded generator, so the same arguments give the same tokens."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    tokens = torch.full((batch, 1), start_id, dtype=torch.long, device=device)
    out, past = [tokens], None
    for _ in range(length - 1):
        step = model(input_ids=tokens, past_key_values=past, use_cache=True)
        past = step.past_key_values
        probs = torch.softmax(step.logits[:, -1].float() / temperature, dim=-1).cpu()
        tokens = torch.multinomial(probs, 1, generator=gen).to(device)
        out.append(tokens)
    return torch.cat(out, dim=1).cpu()


def start_token(tokenizer) -> int:
    start = tokenizer.bos_token_id
    start = start if start is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("teacher-samples needs a BOS or EOS token to start each sample")
    return start


def teacher_samples(
    cfg: HealConfig, tokenizer, model, model_id: str, tokens: int, folder: Path
) -> tuple[torch.Tensor, dict]:
    """At least `tokens` tokens sampled from `model` (the teacher), from the cache where
    present; returns the 1-D ids and their record (settings, hash)."""
    settings = {
        "model": model_id,
        "start_id": start_token(tokenizer),
        "sample_length": cfg.sample_length,
        "sample_batch": cfg.sample_batch,
        "sample_temperature": cfg.sample_temperature,
        "sample_seed": cfg.sample_seed,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    folder = folder / key
    folder.mkdir(parents=True, exist_ok=True)
    per_chunk = cfg.sample_batch * cfg.sample_length
    chunks = -(-tokens // per_chunk)
    began = time.perf_counter()
    parts = []
    for index in tqdm(range(chunks), desc="teacher samples", unit="chunk"):
        path = folder / f"chunk-{index:05d}.pt"
        if not path.is_file():
            seed = zlib.crc32(f"{cfg.sample_seed}:{index}".encode())
            ids = sample_teacher(
                model,
                settings["start_id"],
                cfg.sample_batch,
                cfg.sample_length,
                cfg.sample_temperature,
                seed,
            )
            save_atomic(ids.to(torch.int32), path)
        parts.append(torch.load(path).flatten().long())
    ids = torch.cat(parts)
    record = {**settings, "tokens": len(ids), "sha256": text_hash(ids)}
    (folder / "samples.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    record["seconds"] = time.perf_counter() - began
    return ids, record


def healing_texts(
    cfg: HealConfig,
    tokenizer,
    data_dir: str | None = None,
    sampler=None,
) -> tuple[list[torch.Tensor], dict]:
    """The healing texts (one, or two sharing each batch) and the columns that describe them.

    `sampler(tokens)` -> (ids, record) samples the teacher (needed for `teacher-samples`)."""
    texts, info = [], {}
    if cfg.text != SAMPLED_TEXT:
        texts.append(file_ids(cfg, tokenizer, data_dir))
    if SAMPLED_TEXT in cfg.text.split("+"):
        if sampler is None:
            raise ValueError(f"healing text {cfg.text!r} needs the teacher to sample from")
        wanted = cfg.sample_tokens or -(-cfg.total_tokens() // (len(texts) + 1))
        ids, record = sampler(wanted)
        texts.append(ids)
        info = {"heal_text_hash": record["sha256"], "heal_text_sample_s": record.get("seconds")}
    for ids in texts:
        if len(ids) <= cfg.seq_len:
            raise ValueError(
                f"healing text has {len(ids)} tokens, fewer than seq_len {cfg.seq_len}"
            )
    info["heal_text_tokens"] = sum(len(ids) for ids in texts)
    info["heal_text_passes"] = passes(cfg, [len(ids) for ids in texts])
    if info["heal_text_passes"] > 1:
        warnings.warn(
            f"healing {cfg.total_tokens():,} tokens makes {info['heal_text_passes']:.2f} passes "
            f"over the healing text {cfg.text!r} ({info['heal_text_tokens']:,} tokens): it is "
            f"seen more than once",
            stacklevel=2,
        )
    return texts, info


def passes(cfg: HealConfig, lengths: list[int]) -> float:
    """Passes over the most-read text: each text gets an equal share of every batch."""
    share = cfg.total_tokens() / len(lengths)
    return max(share / length for length in lengths)
