"""Results store: one flat JSON row per measurement, appended atomically, resumable.

Layout (see CONTRACTS.md): results/runs/<run_id>/rows.jsonl. A cell (one model x method x
ratio x ... x task evaluation) writes all its rows in one append, keyed by `cell_key`, so a
killed run resumes in its own folder and skips the cells it finished. Reports read the runs
listed in results/PUBLISHED.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

# The cell key hashes these columns: every one can change a number. Everything else in a row
# is a measurement or provenance (run, commit, versions, device, threads, wait policy, times).
IDENTITY = (
    "model",
    "method",
    "method_options",
    "method_config",
    "target_cr",
    "head_policy",
    "tie_source",
    "sememe_source",
    "heal_stage",
    "heal_config",
    "task",
)
SETTINGS = (
    "limit",
    "max_length",
    "num_fewshot",
    "batch_size",
    "bootstrap_iters",
    "dtype",
    "chat_template",
    "perplexity_definition",
    "weights",
    "seed",
    "selection_tokens",
    "bench_settings",
)
# hashed only where set: columns added after rows were published, so earlier keys stay
OPTIONAL = ("finetune_config",)
PACKAGES = ("torch", "transformers", "lm_eval", "datasets", "numpy", "gguf", "see-bench")


def cell_key(cell: dict) -> str:
    """Hash of a cell's identity and settings (never of provenance)."""
    fields = {k: cell.get(k) for k in (*IDENTITY, *SETTINGS)}
    fields |= {k: cell[k] for k in OPTIONAL if cell.get(k) is not None}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


@cache
def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


@cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{cpu} x{os.cpu_count()}"


def provenance(run_id: str, device: str) -> dict:
    from see.runtime import settings

    row = {"run_id": run_id, "git_commit": git_commit(), "device": device, **settings()}
    row.update({f"versions.{k}": v for k, v in versions().items()})
    row["timestamp"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return row


def new_run_id(preset: str) -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{preset}"


def check_resumable(results_dir: str | Path, run_id: str) -> None:
    """`--resume RUN_ID` must name a run that exists (a typo must not start a new one)."""
    if not (Path(results_dir) / "runs" / run_id / "config.json").is_file():
        known = sorted(p.name for p in (Path(results_dir) / "runs").glob("*"))[-5:]
        raise ValueError(
            f"no run {run_id!r} to resume in {Path(results_dir) / 'runs'} "
            f"(latest: {known}); leave out --resume to start a new run"
        )


class ResultsWriteError(OSError):
    """The results folder cannot be written (full disk, read-only, ...): the run stops at
    once; every row written before stays, and the cell being written is measured again on
    resume."""


def open_run(
    results_dir: str | Path,
    config: dict,
    preset: str,
    run_id: str | None = None,
    force_config: bool = False,
    defaults: dict | None = None,
):
    """The run's store, locked for this process: a new folder (never an existing one), or run
    `run_id`: resumed when it exists (it must have been started with the same config), else
    created under that name. A setting the saved config lacks (added to the code later) is no
    change where its value is its default in `defaults`.

    config.json is written once, when the run starts. Resuming with another config is refused,
    naming the changed fields; `force_config` resumes anyway and appends the change to
    config-forced.jsonl (later resumes compare with the newest forced config). Rows stay apart:
    every setting that changes a number is in the cell key. The folder must be writable and no
    other process may hold the run (both checked here, before any heavy work)."""
    runs = Path(results_dir) / "runs"
    if run_id is None:
        run_id = new_run_id(preset)
        while (runs / run_id).exists():  # two runs started in the same second
            run_id = f"{run_id}-b"
    store = ResultStore(runs / run_id)
    store.lock()
    saved, forced = store.run_dir / "config.json", store.run_dir / "config-forced.jsonl"
    new = json.loads(json.dumps(config, default=str))
    if not saved.is_file():
        store.write_text(saved, json.dumps(config, indent=1, default=str))
    else:
        old = run_config(store.run_dir)
        defaults = json.loads(json.dumps(defaults or {}, default=str))
        changed = sorted(
            k
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k) and not (k not in old and new[k] == defaults.get(k, ...))
        )
        if changed and not force_config:
            raise ValueError(
                f"run {run_id!r} was started with another config (differs in "
                f"{changed}); start a new run instead, or resume with --force-config"
            )
        if changed:
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            record = {"forced_at": stamp, "changed": changed, "config": new}
            store.write_text(forced, json.dumps(record, sort_keys=True) + "\n", append=True)
            print(f"[see] run {run_id}: config forced (changed {changed}), recorded in {forced}")
    store.repair()
    print(f"[see] run {run_id}: {store.run_dir}", flush=True)
    return store


# run folder -> the store of this process holding its lock
_HELD: dict[Path, ResultStore] = {}


class ResultStore:
    """Append-only JSONL rows of one run, with the set of finished cell keys.

    Durability: the rows of one cell key go in one append, each row carrying `cell_rows`
    (the number of rows of that append), and are fsynced. A cell counts as done only when all
    its rows are whole, so a torn or short write (a kill, a full disk) makes it run again;
    `repair` cuts such a tail off before a resumed run appends."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "rows.jsonl"
        self._lock_fd: int | None = None

    def rows(self) -> list[dict]:
        return read_rows(self.path)

    def done_keys(self) -> set[str]:
        return {row["cell_key"] for row in self.rows()}

    def lock(self) -> None:
        """Hold the run for this process (released when it exits): a second process on the
        same run is refused, so no cell is measured twice."""
        import fcntl

        earlier = _HELD.pop(self.run_dir.resolve(), None)
        if earlier is not None:  # this process opens the run again (a resume in one session)
            earlier.unlock()
        lock_path = self.run_dir / "lock"
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ResultsWriteError(
                f"results folder {self.run_dir.parent} is not writable: {err.strerror}"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"run {self.run_dir.name!r} is in use by another process (pid {holder}); "
                "wait for it to finish, or run the other models into a new run and bring the "
                "rows together with `run --resume RUN --reuse OTHER_RUN --copy-only`"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:
            os.close(fd)
            raise ResultsWriteError(
                f"results folder {self.run_dir} is not writable: {err.strerror}"
            ) from err
        self._lock_fd = fd
        _HELD[self.run_dir.resolve()] = self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def write_text(self, path: Path, text: str, append: bool = False) -> None:
        """A small file of the run (its config), with a one-line error if it cannot be written."""
        try:
            with path.open("a" if append else "w") as out:
                out.write(text)
        except OSError as err:
            raise ResultsWriteError(f"cannot write {path}: {err.strerror}") from err

    def append(self, rows: list[dict]) -> None:
        """Write the rows of one cell in a single O_APPEND write, then fsync. On a write error
        the file is cut back to where it was (rows written before stay) and the run stops."""
        if not rows:
            return
        data = "".join(
            json.dumps({**row, "cell_rows": len(rows)}, sort_keys=True, default=str) + "\n"
            for row in rows
        ).encode()
        if self.torn():
            self.repair()
        fd = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass  # the torn tail is cut by `repair` on resume
                raise
        except OSError as err:
            raise ResultsWriteError(
                f"cannot write results to {self.run_dir}: {err.strerror or err}; the rows "
                f"written before are kept: resume with --resume {self.run_dir.name} once "
                "the folder is writable"
            ) from err
        finally:
            if fd is not None:
                os.close(fd)

    def torn(self) -> bool:
        """Does rows.jsonl end inside a line (a killed write)? One byte read."""
        if not self.path.is_file() or not self.path.stat().st_size:
            return False
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"

    def repair(self) -> None:
        """Cut off a tail of rows.jsonl that is not whole cells (a run killed mid-write, a full
        disk), so that those cells run again and new rows start on a fresh line."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = whole_cells_end(data)
        if end < len(data):
            print(
                f"[see] {self.path}: {len(data) - end} bytes of an unfinished cell removed "
                "(a killed or failed write); that cell runs again",
                flush=True,
            )
            try:
                with open(self.path, "rb+") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            except OSError as err:
                raise ResultsWriteError(f"cannot repair {self.path}: {err.strerror}") from err


def appends(data: bytes, path: Path | str = "rows.jsonl") -> Iterator[tuple[list[dict], int, bool]]:
    """The appends that wrote a rows.jsonl, in order: runs of consecutive rows of one cell key,
    `cell_rows` of them (rows written before that column existed: one each). Yields (rows, byte
    offset after the append's last line, whole). A corrupt or unterminated line (a killed
    write) is skipped with a warning and does not end the append it sits in. The one rule
    `read_rows` (what is done) and `ResultStore.repair` (what is cut) both follow."""
    group, size, end, offset = [], 0, 0, 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        offset += len(line)
        try:
            row = json.loads(line) if line.endswith(b"\n") else None
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            if line.strip():
                warnings.warn(
                    f"{path}:{number}: corrupt row skipped (a killed write?)", stacklevel=3
                )
            continue
        if group and (row.get("cell_key") != group[0].get("cell_key") or len(group) == size):
            yield group, end, len(group) >= size
            group = []
        if not group:
            size = int(row.get("cell_rows") or 1)
        group.append(row)
        end = offset
    if group:
        yield group, end, len(group) >= size


def whole_cells_end(data: bytes) -> int:
    """Byte offset after the last whole cell of a rows.jsonl (see `appends`): an unfinished
    tail after it is cut by `repair`; an unfinished cell followed by whole ones stays (read
    as not done)."""
    return max((end for _, end, whole in appends(data) if whole), default=0)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; corrupt lines (a killed write) are reported and skipped, and so
    are the rows of a cell that lacks some of its `cell_rows` (it is measured again)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for group, _, whole in appends(path.read_bytes(), path):
        if whole:
            rows += group
        else:
            key, size = group[0].get("cell_key"), group[0].get("cell_rows")
            warnings.warn(
                f"{path}: cell {key} has {len(group)} of its {size} rows: skipped", stacklevel=2
            )
    return rows


def measured_rows(results_dir: str | Path, run_ids: list[str]) -> dict[str, list[dict]]:
    """The measured rows (no status) of earlier runs by cell key, the first run listed that
    has a key winning: what `run --reuse` copies instead of measuring the cell again (a key
    hashes a cell's identity and settings, never its run or preset)."""
    by_key: dict[str, list[dict]] = {}
    for run_id in run_ids:
        path = Path(results_dir) / "runs" / run_id / "rows.jsonl"
        if not path.is_file():
            raise ValueError(
                f"--reuse {run_id!r}: no {path}; allowed: a run in {path.parent.parent}"
            )
        mine: dict[str, list[dict]] = {}
        for row in read_rows(path):
            if not row.get("status") and row["cell_key"] not in by_key:
                mine.setdefault(row["cell_key"], []).append(row)
        by_key.update(mine)
    return by_key


def published_rows(results_dir: str | Path = "results", runs: list[str] | None = None):
    """All rows of the runs listed in results/PUBLISHED (or of `runs`, paths relative to
    results_dir), as a pandas DataFrame."""
    import pandas as pd

    results_dir = Path(results_dir)
    listing = results_dir / "PUBLISHED"
    if runs is None:
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} lists the runs to report; it does not exist")
        runs = [line.strip() for line in listing.read_text().splitlines()]
    rows = []
    for run in runs:
        if run and not run.startswith("#"):
            planned = run_methods(results_dir / run)
            rows += [
                {**row, "run_methods": planned}
                for row in read_rows(results_dir / run / "rows.jsonl")
            ]
    return pd.DataFrame(rows)


def run_config(run_dir: Path) -> dict | None:
    """The config a run goes on with: the newest forced one (config-forced.jsonl), else
    config.json as it started; None without either."""
    forced, saved = run_dir / "config-forced.jsonl", run_dir / "config.json"
    history = read_rows(forced) if forced.is_file() else []
    if history:
        return history[-1]["config"]
    return json.loads(saved.read_text()) if saved.is_file() else None


def run_methods(run_dir: Path) -> str | None:
    """The methods a run's config plans (run_config), comma-joined; None without a config: a
    report can name the cells a run has not measured yet."""
    config = run_config(run_dir)
    methods = config.get("methods") if isinstance(config, dict) else None
    return ",".join(methods) if isinstance(methods, list) else None


def export_csv(run_dir: str | Path) -> Path:
    import pandas as pd

    run_dir = Path(run_dir)
    out = run_dir / "rows.csv"
    pd.DataFrame(read_rows(run_dir / "rows.jsonl")).to_csv(out, index=False)
    return out
