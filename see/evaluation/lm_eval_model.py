"""`see` as an lm-eval model type, and the `see-lm-eval` console script.

    see-lm-eval run --model see --model_args pretrained=smollm2-135m,method=svd,ratio=10 \
        --tasks sst2 --limit 20

`pretrained` is a zoo short name, a local HF folder, a hub id, or a folder written by
`save_compressed` (then method/ratio come from the folder). Other model args: `method`
(default baseline), `ratio`, `head_policy` (dense|shared), `tie_source`, `dtype`, `seed`, and
any method option (e.g. `loss=mse`, `steps=300`). lm-eval finds model types through its
registry, not through entry points, so `see-lm-eval` imports this module (which registers
`see`) and then runs lm-eval's own CLI; with $SEE_DATA_DIR set it adds `--include_path` for
the offline task configs unless one is given.
"""

from __future__ import annotations

import os
import sys

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

HFLM_ARGS = ("max_length", "batch_size", "max_batch_size", "device", "backend", "trust_remote_code")


def quiet() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")


class TailLogitsHFLM(HFLM):
    """HFLM that asks the model for the logits of the scored positions only.

    lm-eval scores a continuation from the logits of its last len(continuation) positions, but
    HFLM has the model compute (and then log-softmaxes) V logits at every position: with
    Gemma 3's V = 262,144 the head is most of a 5-shot SST-2 forward. With one request per
    forward (batch size 1, the grid's setting) the last K positions, K = the longest
    continuation of the call, hold every row lm-eval reads: its slice
    `logits[ctx_len - contlen : ctx_len]`, ctx_len = inplen + (logits length - padded length),
    picks the same rows from the tail. Batches of several requests are right-padded, so their
    scored rows need not be in the tail: they keep every position. Rolling perplexity scores
    every position, so it computes them all as before.
    """

    _logits_to_keep = 0

    # lm-eval's per-request bars pass `disable` explicitly, so TQDM_DISABLE (set by the CLI
    # unless --verbose) cannot reach them: the methods that draw them take it here instead
    # (`loglikelihood` draws none: its bar is `_loglikelihood_tokens`')
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or quiet())

    def generate_until(self, requests, disable_tqdm: bool = False):
        return super().generate_until(requests, disable_tqdm=disable_tqdm or quiet())

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        # quiet() also here: loglikelihood_rolling passes disable_tqdm=False itself
        self._logits_to_keep = max((len(cont) for _, _, cont in requests), default=0)
        try:
            return super()._loglikelihood_tokens(
                requests, disable_tqdm=disable_tqdm or quiet(), override_bs=override_bs
            )
        finally:
            self._logits_to_keep = 0

    def _model_call(self, inps, attn_mask=None, labels=None):
        if not self._logits_to_keep or inps.shape[0] != 1 or attn_mask is not None:
            return super()._model_call(inps, attn_mask, labels)
        precision = self.mixed_precision_dtype
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, dtype=precision, enabled=precision is not None),
        ):
            return self.model(inps, logits_to_keep=self._logits_to_keep).logits


@register_model("see")
class SEELM(TailLogitsHFLM):
    def __init__(
        self,
        pretrained: str,
        method: str = "baseline",
        ratio: float | None = None,
        head_policy: str = "dense",
        tie_source: str = "as_loaded",
        dtype: str = "float32",
        seed: int = 0,
        max_length: int = 2048,
        **kwargs,
    ):
        from see.compress import compress
        from see.models import compress_model, load_model
        from see.models.saving import is_compressed_folder, load_compressed
        from see.runtime import apply_threads

        apply_threads()  # the grid's thread count: the same spec gives the same numbers
        hf_args = {k: kwargs.pop(k) for k in list(kwargs) if k in HFLM_ARGS}
        torch_dtype = getattr(torch, dtype)
        if is_compressed_folder(pretrained):
            model, tok, _ = load_compressed(pretrained, torch_dtype)
        else:
            model, tok = load_model(pretrained, torch_dtype, tie_source)
            compressed = None
            if method != "baseline":
                if ratio is None:
                    raise ValueError(f"method {method!r} needs ratio=<target CR> in model_args")
                # data_dir None: $SEE_DATA_DIR, as in a grid with no data_dir in its config
                compressed = compress(
                    model,
                    tok,
                    method,
                    float(ratio),
                    kwargs,
                    seed=seed,
                    head_policy=head_policy,
                    max_length=max_length,
                    dtype=torch_dtype,
                )
            elif kwargs:
                raise ValueError(f"unknown model_args for the baseline: {sorted(kwargs)}")
            compress_model(model, compressed, head_policy)
        super().__init__(pretrained=model, tokenizer=tok, max_length=max_length, **hf_args)


def cli() -> None:
    import os

    from lm_eval.__main__ import cli_evaluate

    if os.environ.get("SEE_DATA_DIR") and "--include_path" not in sys.argv:
        from see.evaluation.tasks import render_tasks

        sys.argv += ["--include_path", str(render_tasks())]
    cli_evaluate()


if __name__ == "__main__":
    cli()
