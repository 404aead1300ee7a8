"""Offline lm-eval task configs, rendered with the resolved data directory.

Each YAML here is lm-eval's own task config with only the data source changed; `${DATA_DIR}`
is replaced by the data folder and the result goes into a cache folder that lm-eval reads as
`include_path`. Tasks of the same name override lm-eval's hub-backed ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from see.data import data_dir as resolve_data_dir
from see.data import data_file
from see.models.zoo import cache_dir

TEMPLATES = Path(__file__).parent
_DATA_FILES = re.compile(r"# see_data_files: \[(.*)\]")


# stock lm-eval tasks with no local copy in the data dir: they need the Hugging Face hub
HUB_ONLY_TASKS = ("mnli", "mnli_mismatch", "qqp", "squadv2", "squad_completion")


def hub_offline() -> bool:
    return any(
        os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def skipped_tasks(tasks: list[str]) -> dict[str, str]:
    """Tasks this run cannot evaluate offline -> the reason (reported, not dropped)."""
    if not hub_offline():
        return {}
    return {
        t: f"{t} needs the Hugging Face hub (no local copy under the data dir) and "
        "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"
        for t in tasks
        if t in HUB_ONLY_TASKS
    }


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def offline_task_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


def required_files(task: str) -> list[str]:
    """Data files (relative to the data dir) that an offline task reads."""
    match = _DATA_FILES.search((TEMPLATES / f"{task}.yaml").read_text())
    return [f.strip().strip("\"'") for f in match.group(1).split(",")] if match else []


def render_tasks(data_dir: str | Path | None = None) -> Path | None:
    """Render the offline configs for `data_dir` (default $SEE_DATA_DIR) and return the folder
    to pass as TaskManager(include_path=...); None when no data dir is set (hub tasks)."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return None
    files = {
        template.name: template.read_text()
        .replace("${DATA_DIR}", str(root))
        .replace("${LM_EVAL_TASKS}", str(lm_eval_tasks_dir()))
        for template in TEMPLATES.glob("*.yaml")
    }
    files["see_tasks.py"] = (TEMPLATES / "see_tasks.py").read_text()
    # content-addressed, so a rendered folder never changes: concurrent runs (two grids, the
    # submitit workers) share it and never delete a folder another one is reading
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:12]
    out = cache_dir() / "tasks" / digest
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{digest}.tmp"))
    for name, text in files.items():
        (tmp / name).write_text(text)
    try:
        tmp.rename(out)
    except OSError:  # another process rendered the same folder first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_task_data(tasks: list[str], data_dir: str | Path | None = None) -> None:
    """Fail fast, before any model is loaded, if an offline task's data file is missing."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return
    for task in tasks:
        if task in offline_task_names():
            for relative in required_files(task):
                data_file(relative, root)


def task_hash(task: str, include_path: Path | None) -> str:
    """Hash of the rendered task config plus the sha256 of the data files it reads."""
    digest = hashlib.sha256()
    if include_path is not None and (include_path / f"{task}.yaml").is_file():
        digest.update((include_path / f"{task}.yaml").read_bytes())
        from see.data import DATA_FILES

        for relative in required_files(task):
            digest.update(DATA_FILES.get(relative, relative).encode())
    else:
        digest.update(f"lm-eval:{task}".encode())
    return digest.hexdigest()[:16]
