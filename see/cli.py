"""`python -m see ...` / `see ...`: run a grid preset, build reports."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """User errors (a bad preset, option, ratio, model, data folder, resume, a run held by
    another process) and a results folder that cannot be written print one line and exit with
    status 2; `--debug` shows the traceback instead."""
    from see.results import ResultsWriteError

    args = parse(argv)
    if not args.verbose:  # tqdm reads TQDM_* defaults; the grid's own bar sets disable=False
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        dispatch(args)
    except (ValueError, FileNotFoundError, ResultsWriteError) as err:
        if args.debug:
            raise
        print(f"see: error: {err}", file=sys.stderr)
        sys.exit(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="see", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every progress bar (fits, lm-eval's requests); default: the grid's bar and "
        "one line per finished cell",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a grid preset (benchmarks/<preset>.toml)")
    run.add_argument("--preset", default="smoke", help="preset name or TOML path")
    run.add_argument("--results-dir", default="results")
    run.add_argument(
        "--resume",
        "--run-id",
        dest="run_id",
        metavar="RUN_ID",
        help="resume this existing run (default: a new run folder)",
    )
    run.add_argument("--data-dir", help="local data folder (default: $SEE_DATA_DIR)")
    run.add_argument(
        "--force-config",
        action="store_true",
        help="resume even though the config changed (recorded in the run's config-forced.jsonl)",
    )
    run.add_argument("--publish", action="store_true", help="list the run in results/PUBLISHED")
    run.add_argument("--models", help="comma list: run only these of the preset's models")
    run.add_argument(
        "--reuse",
        help="comma list of earlier runs: copy their measured rows of the same cells "
        "(same cell key) instead of measuring again",
    )
    run.add_argument(
        "--copy-only",
        action="store_true",
        help="with --reuse: copy the rows and measure nothing; the cells left are listed",
    )
    run.add_argument(
        "--redo",
        help="comma list of METHOD or METHOD@RATIO: measure these cells again although the "
        "run has them (after a fix); the new rows supersede the old ones in reports, which "
        "stay in rows.jsonl",
    )
    run.add_argument(
        "--executor",
        default="local",
        choices=["local", "submitit-local", "slurm"],
        help="where cells run (submitit: local subprocesses or Slurm jobs)",
    )
    reproduce = sub.add_parser(
        "reproduce",
        help="run a preset into results/local and compare it with its published run",
    )
    reproduce.add_argument("--preset", default="smoke", help="preset name or TOML path")
    reproduce.add_argument("--results-dir", default="results")
    reproduce.add_argument("--reports-dir", default="reports", help="with --publish")
    reproduce.add_argument("--data-dir", help="local data folder (default: $SEE_DATA_DIR)")
    reproduce.add_argument("--models", help="comma list: run only these of the preset's models")
    reproduce.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="exit 0 even when the run does not reproduce the published one (default: exit 1)",
    )
    reproduce.add_argument(
        "--publish",
        action="store_true",
        help="run into results/runs, list it in results/PUBLISHED and rebuild reports/ "
        "(default: results/local/, untracked, with its report beside it)",
    )
    bench = sub.add_parser("bench", help="memory and throughput of a preset's cells")
    bench.add_argument("--preset", default="bench-cpu", help="preset name or TOML path")
    bench.add_argument("--results-dir", default="results")
    bench.add_argument(
        "--resume",
        "--run-id",
        dest="run_id",
        metavar="RUN_ID",
        help="resume this existing run (default: a new run folder)",
    )
    bench.add_argument("--publish", action="store_true", help="list the run in results/PUBLISHED")
    bench.add_argument(
        "--force-config",
        action="store_true",
        help="resume even though the config changed (recorded in the run's config-forced.jsonl)",
    )
    heal = sub.add_parser("bench-heal", help="healing tokens/s per stage, before/after levers")
    heal.add_argument("--model", default="smollm2-135m")
    heal.add_argument("--method", default="svd")
    heal.add_argument("--ratio", type=float, default=10.0)
    heal.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    heal.add_argument("--stages", default="stage1,stage2", help="comma list: stage1, stage2")
    heal.add_argument(
        "--only",
        default=None,
        help="regular expression: run only the variants whose name matches (and each stage's "
        "first, the 'before'); default all",
    )
    heal.add_argument("--results-dir", default="results")
    heal.add_argument("--publish", action="store_true", help="list the run in results/PUBLISHED")
    signal = sub.add_parser(
        "signal", help="baseline vs chance per (model, task) -> benchmarks/tables/signal.toml"
    )
    signal.add_argument("--models", default="smollm2-135m", help="comma list")
    signal.add_argument("--tasks", default="sst2,rte,qnli,wnli,mrpc,cola,squad")
    signal.add_argument("--docs", type=int, default=200, help="last N documents of each split")
    signal.add_argument("--fewshot", default="0,5", help="num_fewshot settings to try, in order")
    signal.add_argument(
        "--every-fewshot",
        action="store_true",
        help="measure every --fewshot setting (default: stop at the first informative one)",
    )
    signal.add_argument("--results-dir", default="results")
    signal.add_argument("--data-dir", help="local data folder (default: $SEE_DATA_DIR)")
    signal.add_argument("--resume", dest="run_id", metavar="RUN_ID", help="resume this run")
    signal.add_argument("--publish", action="store_true", help="list the run in results/PUBLISHED")
    for command in (run, reproduce, bench, heal, signal):
        command.add_argument(
            "--threads",
            help="torch threads (default: $SEE_THREADS, else every available core); OpenMP "
            "threads sleep while waiting (OMP_WAIT_POLICY=PASSIVE unless set)",
        )
    contention = sub.add_parser(
        "bench-contention", help="a preset's first cell alone and beside a busy process"
    )
    contention.add_argument("--preset", default="smoke")
    contention.add_argument(
        "--settings", default="spin,passive,1-thread", help="comma list (see/bench/contention.py)"
    )
    contention.add_argument("--results-dir", default="results")
    contention.add_argument("--publish", action="store_true", help="list it in results/PUBLISHED")
    sub.add_parser("presets", help="list the presets a user runs, one line each")
    comp = sub.add_parser("compress", help="compress a model's embedding and save it to a folder")
    comp.add_argument("--model", required=True, help="zoo short name, HF hub id or local folder")
    comp.add_argument("--method", required=True, help="a registered method, e.g. pq, see, svd")
    comp.add_argument("--ratio", required=True, type=float, help="target compression ratio")
    comp.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a method option"
    )
    comp.add_argument("--out", required=True, help="a new folder for the compressed model")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--head-policy", default="dense", choices=["dense", "shared"])
    comp.add_argument("--data-dir", help="local data folder (default: $SEE_DATA_DIR)")
    score = sub.add_parser("eval", help="score a `see compress` folder (or a model) with lm-eval")
    score.add_argument("model", help="a `see compress` folder, a zoo short name, hub id or folder")
    score.add_argument("--tasks", default="wikitext", help="comma list of lm-eval tasks")
    score.add_argument("--limit", type=float, help="documents per task (default: all)")
    score.add_argument("--num-fewshot", type=int)
    score.add_argument("--max-length", type=int, default=2048)
    score.add_argument("--data-dir", help="local data folder (default: $SEE_DATA_DIR)")
    for command in (comp, score):
        command.add_argument("--threads", help="torch threads (default: $SEE_THREADS, all cores)")
    report = sub.add_parser("report", help="rebuild reports/ from results/PUBLISHED")
    report.add_argument("--results-dir", default="results")
    report.add_argument("--reports-dir", default="reports")
    targets = sub.add_parser(
        "targets", help="print the SEE and frontier targets, met or missed, from published rows"
    )
    targets.add_argument("--results-dir", default="results")
    return parser.parse_args(argv)


def dispatch(args: argparse.Namespace) -> None:
    from see.results import check_resumable

    if args.command in ("run", "reproduce", "bench", "bench-heal", "signal", "compress", "eval"):
        from see.runtime import configure

        configure(args.threads)  # before torch is imported: the wait policy is read once
    if args.command == "run":
        from see.config import load_grid
        from see.grid import run_grid
        from see.results import export_csv

        cfg = load_grid(args.preset, data_dir=args.data_dir)
        models = args.models.split(",") if args.models else None
        if args.run_id:
            check_resumable(args.results_dir, args.run_id)
        reuse = args.reuse.split(",") if args.reuse else None
        redo = args.redo.split(",") if args.redo else None
        store = run_grid(
            cfg,
            args.results_dir,
            args.run_id,
            args.executor,
            args.force_config,
            models,
            reuse,
            redo,
            args.copy_only,
        )
        export_csv(store.run_dir)
        if args.publish:
            publish(Path(args.results_dir), store.run_dir)
    elif args.command == "reproduce":
        reproduce_preset(args)
    elif args.command == "bench":
        from see.bench.run import run_bench
        from see.config import load_grid

        if args.run_id:
            check_resumable(args.results_dir, args.run_id)
        store = run_bench(load_grid(args.preset), args.results_dir, args.run_id, args.force_config)
        if args.publish:
            publish(Path(args.results_dir), store.run_dir)
    elif args.command == "bench-heal":
        from see.bench.heal_speed import run_heal_speed

        run_dir = run_heal_speed(
            args.results_dir,
            model=args.model,
            method=args.method,
            ratio=args.ratio,
            steps=args.steps,
            stages=tuple(args.stages.split(",")),
            only=args.only,
        )
        if args.publish:
            publish(Path(args.results_dir), run_dir)
    elif args.command == "bench-contention":
        from see.bench.contention import check_settings, run_contention

        settings = check_settings(args.settings.split(","))
        run_dir = run_contention(args.results_dir, args.preset, settings)
        if args.publish:
            publish(Path(args.results_dir), run_dir)
    elif args.command == "signal":
        from see.evaluation.signal import run_signal

        if args.run_id:
            check_resumable(args.results_dir, args.run_id)
        run_dir = run_signal(
            args.models.split(","),
            args.tasks.split(","),
            args.docs,
            tuple(int(n) for n in args.fewshot.split(",")),
            args.results_dir,
            args.data_dir,
            args.run_id,
            every_fewshot=args.every_fewshot,
        )
        if args.publish:
            publish(Path(args.results_dir), run_dir)
    elif args.command == "compress":
        from see.grid.pipeline import compress_to_folder

        summary = compress_to_folder(
            args.model,
            args.method,
            args.ratio,
            parse_options(args.option),
            args.out,
            seed=args.seed,
            head_policy=args.head_policy,
            data_dir=args.data_dir,
        )
        print(
            f"[see] saved {args.out}: embedding {summary['embedding_bytes']:,} bytes instead of "
            f"{summary['dense_fp32_bytes']:,} (fp32), {summary['byte_cr']:.3g}x fewer; "
            f"fit {summary['compress_s']:.1f} s"
        )
    elif args.command == "eval":
        evaluate_folder(args)
    elif args.command == "presets":
        from see.config import EXPERIMENTS, presets

        for name, line in presets().items():
            print(f"{name:16s} {line}")
        finished = len(list(EXPERIMENTS.glob("*.toml")))
        print(f"\n{finished} finished experiments in {EXPERIMENTS} (each names its runs)")
    elif args.command == "report":
        from see.report import build_reports

        report = build_reports(args.results_dir, args.reports_dir, readme="README.md")
        print(f"[see] wrote {report}")
    elif args.command == "targets":
        from see.report.targets import (
            PQ_FIT_CR,
            PQ_FIT_MODEL,
            PQ_FIT_SECONDS,
            frontier_targets,
            pq_fit_time,
            targets_markdown,
        )
        from see.results import published_rows

        rows = published_rows(Path(args.results_dir))
        print(targets_markdown(rows) or "no see-strength rows")
        print("\nIssue 40, training-free frontier targets (newest frontier run per model):\n")
        print(frontier_targets(rows).to_markdown(index=False, floatfmt=".4g"))
        print(
            f"\nIssue 40, pq's fit on {PQ_FIT_MODEL} at byte ratio {PQ_FIT_CR:g} within "
            f"{PQ_FIT_SECONDS:g} s (the quantizer alone: compress_s less the Fisher pass):\n"
        )
        print(pq_fit_time(rows).to_markdown(index=False, floatfmt=".4g"))


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


def evaluate_folder(args: argparse.Namespace) -> list[dict]:
    """`see eval`: lm-eval on a saved compressed model with the grid's evaluation settings, so
    the numbers equal the grid cell's for the same limit; one line per metric."""
    import torch

    from see.evaluation.lmeval import check_tasks, evaluate
    from see.models.saving import is_compressed_folder, load_compressed
    from see.models.zoo import check_model, load_model

    tasks = [t for t in args.tasks.split(",") if t]
    limit = int(args.limit) if args.limit and args.limit == int(args.limit) else args.limit
    check_tasks(tasks, limit, args.data_dir)  # before any model loads
    if is_compressed_folder(args.model):
        model, tok, _ = load_compressed(args.model, torch.float32)
    else:
        check_model(args.model)
        model, tok = load_model(args.model)
    rows = []
    for task in tasks:  # one task per call, as a grid cell evaluates them
        rows += evaluate(
            model,
            tok,
            [task],
            limit=limit,
            num_fewshot=args.num_fewshot,
            max_length=args.max_length,
            data_dir=args.data_dir,
        )
    for row in rows:
        interval = (
            f" (95% CI {row['ci_low']:.4g}-{row['ci_high']:.4g})" if row.get("ci_low") else ""
        )
        stderr = f" +- {row['stderr']:.3g}" if row.get("stderr") is not None else ""
        print(f"{row['task']} {row['metric']} {row['value']:.6g}{stderr}{interval} n={row['n']}")
    return rows


def reproduce_preset(args: argparse.Namespace) -> None:
    """Run the preset, build its report, and print whether it reproduced the published run of
    the same preset (see/report/verdict.py). Without --publish everything goes under
    results/local/ (git-ignored): the checkout stays clean."""
    from see.config import load_grid
    from see.grid import run_grid
    from see.report import build_reports
    from see.report.verdict import (
        compare_run_dirs,
        published_run,
        stale_reference,
        verdict_markdown,
    )
    from see.results import export_csv

    cfg = load_grid(args.preset, data_dir=args.data_dir)
    root = Path(args.results_dir)
    models = args.models.split(",") if args.models else None
    reference = published_run(root, cfg.name)
    if reference is not None and not args.publish:
        stale = stale_reference(cfg, reference, models)
        if stale["new"] or stale["gone"]:
            print(
                f"[see] warning: published {reference.name} is stale: {len(stale['new'])} cell "
                f"keys of preset {cfg.name!r} are not in it and {len(stale['gone'])} of its keys "
                "are no longer made (a default changed since it was published); the verdict "
                "cannot be REPRODUCED until it is republished (`reproduce --publish`)",
                flush=True,
            )
    out = root if args.publish else root / "local"
    store = run_grid(cfg, out, models=models)
    export_csv(store.run_dir)
    run = store.run_dir.relative_to(out).as_posix()
    if args.publish:
        publish(root, store.run_dir)
        report = build_reports(root, args.reports_dir, readme="README.md")
    else:
        report = build_reports(out, store.run_dir / "report", runs=[run])
    print(f"[see] report: {report}")
    reference = published_run(root, cfg.name, exclude=store.run_dir)
    if reference is None:
        print(f"[see] no published run of preset {cfg.name!r} in {root / 'PUBLISHED'} to compare")
        return
    result = compare_run_dirs(store.run_dir, reference, models=models)
    verdict = verdict_markdown(result)
    (store.run_dir / "verdict.md").write_text(verdict + "\n")
    print(verdict)
    # publishing a new reference (after a default changed) differs from the old one on purpose
    if not result["reproduced"] and not args.allow_mismatch and not args.publish:
        sys.exit(1)


def publish(results_dir: Path, run_dir: Path) -> None:
    listing = results_dir / "PUBLISHED"
    entry = run_dir.relative_to(results_dir).as_posix()
    existing = listing.read_text().splitlines() if listing.is_file() else []
    if entry not in existing:
        listing.write_text("\n".join([*existing, entry]) + "\n")


if __name__ == "__main__":
    main()
