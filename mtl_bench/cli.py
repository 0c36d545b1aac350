"""The ``mtl-bench`` command line: the only place that maps names to objects for users.

Every user-fixable error is printed as one line, ``mtl-bench: error: ...``, with exit code 2; a run stopped by its
surroundings (:class:`~mtl_bench.errors.RunStopped`) likewise, with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtl_bench import experiments
from mtl_bench.cli_parser import _RESUME_FLAGS, _RUN_FLAGS, _build_parser
from mtl_bench.errors import RunStopped, UserInputError

EXIT_USAGE = 2
EXIT_FAILED = 1  # the run ran but every cell failed: scripts must see it


def _suite_flags(args: argparse.Namespace, data: dict[str, Any], default_params: dict[str, Any]) -> None:
    """Sets ``data``'s suite and suite parameters from the suite flags of ``run`` and ``tune``.

    ``default_params`` are the suite parameters when neither a config nor ``--suite`` names a suite.
    """
    if args.suite and args.suite != data.get("suite"):
        data["suite"] = args.suite
        data["suite_params"] = {}
    params = dict(data.get("suite_params", default_params if "suite" not in data else {}))
    if args.group:
        params["group"] = args.group
    if args.table:
        params["table"] = args.table
    if args.data_dir:  # absolute, so that --config from another directory and a cluster's workers find it
        params["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    for name, value in args.param:
        params[name] = value
    if data.get("suite") == "table" and isinstance(params.get("table"), str) and params["table"]:
        from mtl_bench.tasks.table import fingerprint  # no TensorFlow

        # Absolute, so that --config runs/<id>/config.toml finds the table from any directory; the
        # fingerprint of a table read from a config is kept, so that its loader can say when the data changed.
        params["table"] = str(Path(params["table"]).expanduser().resolve())
        if args.table or "table" in dict(args.param) or "sha256" not in params:
            params["sha256"] = fingerprint(params["table"])
    data["suite_params"] = params


def _run_config(args: argparse.Namespace):
    from mtl_bench.config import RunConfig

    config = RunConfig.from_toml(args.config) if args.config else None
    data: dict[str, Any] = config.to_dict() if config else {}
    _suite_flags(args, data, RunConfig().suite_params)
    for name, value in args.task_weight:
        data.setdefault("task_weights", {})[name] = value
    for flag, key in _RUN_FLAGS:
        if flag in ("suite", "param", "task_weight"):
            continue
        value = getattr(args, flag)
        if value is not None:
            data[key] = value
    if args.no_probe:
        data["probe_every"] = 0
    config = RunConfig.from_dict(data, source="command line")
    _check_names(config)
    return config


def _check_names(config) -> None:
    """Refuses an unknown suite, architecture, regime or remedy name before TensorFlow loads (the grid checks again)."""
    from mtl_bench.config import ARCH_NAMES, SUITE_NAMES
    from mtl_bench.remedies import REMEDIES
    from mtl_bench.schema import REGIME_NAMES, SINGLE_ARCH

    for kind, plural, names, valid in [
        ("suite", "suites", [config.suite], sorted(SUITE_NAMES)),
        ("multi-task architecture", "architectures", config.archs, sorted(set(ARCH_NAMES) - {SINGLE_ARCH})),
        ("regime", "regimes", config.regimes, sorted(REGIME_NAMES)), ("remedy", "remedies", config.remedies, sorted(REMEDIES)),
    ]:
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise UserInputError(f"unknown {kind} {unknown[0]!r}; valid {plural}: {valid}")


def _resume_flags(args: argparse.Namespace) -> list[str]:
    """The run flags given with ``--resume`` that it would ignore (the run keeps its own config.toml)."""
    defaults = {"param": [], "task_weight": [], "no_probe": False, "dry_run": False}
    return ["--" + dest.replace("_", "-") for dest, value in vars(args).items()
            if dest not in _RESUME_FLAGS and value != defaults.get(dest)]


def _executor(args: argparse.Namespace):
    """The executor the run flags name (None: the local pool of the configuration's ``jobs``)."""
    if args.executor != "dask":
        if args.scheduler:
            raise UserInputError("--scheduler needs --executor dask. Received: --scheduler " + args.scheduler)
        if getattr(args, "resume", None) and args.jobs is not None:
            from mtl_bench.engine.executor import LocalPool

            if args.jobs < 0:
                raise UserInputError(f"--jobs must be an integer >= 0 (0 = one per core not busy). Received: --jobs {args.jobs}")

            return LocalPool(args.jobs)
        return None
    if args.jobs:
        raise UserInputError("--jobs sets local worker processes; with --executor dask the cluster's workers run the "
                             f"cells (start them with dask worker --nworkers N). Received: --jobs {args.jobs}")
    from mtl_bench.engine.cluster import DaskCluster  # no TensorFlow

    return DaskCluster(args.scheduler, warnings=None if args.quiet else sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from mtl_bench import io

    progress = None if args.quiet else sys.stderr
    if args.resume:
        experiment, ignored = experiments.of(args.resume), _resume_flags(args)
        if ignored:
            raise UserInputError(f"--resume continues {args.resume} with its own config.toml; it takes only --jobs, "
                                 f"--executor, --scheduler and --quiet. Received: {' '.join(ignored)} (start a new run "
                                 f"with --config {Path(args.resume) / experiments.CONFIG} and those flags instead)")
        where = _executor(args)
        with contextlib.closing(where) if hasattr(where, "close") else contextlib.nullcontext():
            run_dir = experiment.resume(args.resume, progress=progress, executor=where)
    else:
        where = _executor(args)  # its flags are checked on a dry run too
        if args.dry_run:
            return _dry_run(_run_config(args))
        with contextlib.closing(where) if hasattr(where, "close") else contextlib.nullcontext():
            run_dir = experiments.run(_run_config(args), out=args.out, progress=progress, executor=where)
    text = "" if args.quiet else experiments.of(run_dir).summary(run_dir)
    if text:
        print(text)
    status = io.read_json(run_dir / experiments.MANIFEST)["status"]
    print(f"run directory: {run_dir} ({status})")
    return EXIT_FAILED if status == "failed" else 0


def _dry_run(config) -> int:
    """Validates and plans ``config`` (suites load, nothing is trained or written) and prints the work it holds."""
    experiment = experiments.get(config.experiment)
    work = experiment.plan(config)
    cells = work.cells if hasattr(work, "cells") else work
    print(f"dry run: experiment {experiment.name!r}, {len(cells)} cell(s) planned; nothing written")
    for note in getattr(work, "notes", []):
        print(f"note: {note}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.executors:
        from mtl_bench.engine.cluster import require

        require()  # the extra, before TensorFlow loads
        from mtl_bench import bench

        bench.executors()
        return 0
    from mtl_bench import bench

    bench.main(arch=args.arch, rows=args.rows, batch_size=args.batch_size, epochs=args.epochs, repeats=args.repeats)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from mtl_bench.analysis.report import run_warnings, write_report

    # An experiment that is not a grid run prints its own summary; the grid runs it holds are reported.
    runs = []
    for run_dir in args.run_dirs:
        try:
            experiment = experiments.of(run_dir)
        except UserInputError:  # the report then says what a grid run directory lacks
            experiment = experiments.EXPERIMENTS[experiments.GRID]
        if experiment.on_grid:
            runs.append(run_dir)
        else:
            print(experiment.summary(run_dir))
            runs.extend(str(p) for p in experiment.runs(run_dir))
            if args.plots and experiment.name == experiments.POLICY:
                from mtl_bench.analysis.figures_experiments import policy_arms
                from mtl_bench.analysis.plots import save

                table = pd.read_csv(Path(run_dir) / "policy_summary.csv", keep_default_na=False, na_values=[""])
                print(f"written: {save(policy_arms(table), Path(run_dir) / 'policy.png')}")
    if not runs:
        return 0
    tasks, result, out = write_report(runs)
    if not result.cohorts.empty:
        from mtl_bench.analysis.cohorts import half_life_lines

        print("Cohort forgetting (held-out cohort vs control):")
        print(half_life_lines(result.cohorts) + "\n")
    if not tasks.empty:  # a cohort run without the joint regime has no per-task transfer to contrast
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
            print("Per task (validation split; transfer < 0 = negative transfer)")
            print(tasks.to_string(index=False))
            print("\nContrast: Spearman correlation of per-seed transfer with each measure (bootstrap 95% CI)")
            print(result.table.to_string(index=False))
    for warning in run_warnings(runs):
        print(f"\nwarning: {warning}")
    print(f"\n{result.verdict}")
    if result.verdicts:
        from mtl_bench.analysis.verdict import sentence

        print("\nVerdict (validation rows that never selected an epoch; 95% CIs over seeds):")
        for v in result.verdicts:
            print(f"- {sentence(v, result.variant_columns)}")
    written = ["report.md", "report.csv", "contrast.csv"] + (["verdict.json", "verdict.csv"] if result.verdicts else [])
    print("\nwritten: " + ", ".join(str(out / n) for n in written))
    if args.plots:
        from mtl_bench.analysis.plots import write_plots

        written, notes = write_plots(runs, contrast_table=result.table, verdicts=result.verdicts)
        for note in notes:
            print(f"note: {note}")
        print("written: " + ", ".join(str(p) for p in written) if written else "no figures written")
    return 0


def _tune_config(args: argparse.Namespace):
    from mtl_bench.config import RunConfig

    data: dict[str, Any] = RunConfig.from_toml(args.config).to_dict() if args.config else {}
    _suite_flags(args, data, {})
    for key in ("epochs", "first_seed", "max_train_rows", "max_eval_rows"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    return RunConfig.from_dict(data, source="command line")


def _cmd_tune(args: argparse.Namespace) -> int:
    from mtl_bench import tune

    options = dict(
        n_trials=args.trials, objective=args.objective, storage=args.storage, study_name=args.study,
        workers=args.workers, space_file=args.space, pruner=args.pruner, pruner_params=dict(args.pruner_param),
        sampler_seed=args.seed, main_task=args.main_task, retrain_seeds=args.retrain_seeds,
    )
    config = _tune_config(args)
    if args.arms:
        result = tune.tune_arms(config, args.arms, regime=args.regime, out=args.out, retrain=not args.no_retrain,
                                **options)
        studies = result.studies
    else:
        studies = {args.arch: tune.tune(config, args.arch, regime=args.regime, out=args.out, **options)}
    for arm, study in studies.items():
        best = tune.format_values(study.best_values)
        print(f"{arm}: study {study.study_name}, best {study.objective} {best} {study.best_params}")
        for note in study.notes:
            print(f"note: {note}")
        print(f"  written: {study.out / 'trials.csv'}" + (f", {study.config_path}" if study.config_path else ""))
    if args.arms and result.run_dirs:
        print("compare the tuned arms: mtl-bench report " + " ".join(str(p) for p in result.run_dirs.values()))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from mtl_bench import io
    from mtl_bench.analysis.verdict import sentence
    from mtl_bench.experiments import calibrate

    table = calibrate.calibrate(draws=args.draws, seeds=args.seeds, out=args.out, jobs=args.jobs, executor=_executor(args),
                                progress=None if args.quiet else sys.stderr)
    for draw in sorted(set(table["draw"])):
        print(f"\nDraw {draw} (seeds {calibrate.FIRST_SEED + draw * args.seeds}-"
              f"{calibrate.FIRST_SEED + (draw + 1) * args.seeds - 1}): mtl-bench report {Path(args.out) / f'draw{draw}'}")
        for v in io.read_json(Path(args.out) / f"draw{draw}" / "verdict.json"):
            print(f"- {sentence(v, ['mechanism'])}")
    print("\nPlanted mechanism × verdict:\n")
    print(calibrate.summary(table))
    print(f"written: {Path(args.out) / 'calibration.csv'}, {Path(args.out) / 'calibration.md'}")
    return 0


COMMANDS = {"run": _cmd_run, "bench": _cmd_bench, "report": _cmd_report, "tune": _cmd_tune, "calibrate": _cmd_calibrate}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except UserInputError as err:
        message = str(err).splitlines()[0] if str(err) else "invalid input"
        if not message.startswith("mtl-bench"):
            message = f"mtl-bench: error: {message}"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as err:
        print(f"mtl-bench: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("mtl-bench: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a read-only --out or one under a file: the path and the reason, one line
        where = f" {err.filename}" if err.filename else ""
        print(f"mtl-bench: error: cannot write{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, (PermissionError, NotADirectoryError, FileExistsError)) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
