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

import sys

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

HFLM_ARGS = ("max_length", "batch_size", "max_batch_size", "device", "backend", "trust_remote_code")


@register_model("see")
class SEELM(HFLM):
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
