"""The ``mtl-bench`` argument parser: every sub-command, its options and their defaults (no TensorFlow).

:mod:`mtl_bench.cli` runs what it parses.
"""

from __future__ import annotations

import argparse
import tomllib
from typing import Any, NoReturn

from mtl_bench import experiments
from mtl_bench.errors import UserInputError
from mtl_bench.schema import JOINT, REGIME_NAMES, SEQUENTIAL

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage + message; we want one line
        raise UserInputError(f"{self.prog}: error: {message}")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names. Received: {text!r}")
    return names


def _param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE[,VALUE...]`` with each value read as a TOML value where it parses (numbers, booleans)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,VALUE...]. Received: {text!r}")

    def value(v: str) -> Any:
        try:
            return tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            return v

    values = [value(v.strip()) for v in raw.split(",")]
    return name.strip(), values if len(values) > 1 else values[0]


# Each run flag and the RunConfig key it sets: one table for the help's defaults, the configuration and --resume.
_RUN_FLAGS = [("arch", "archs"), ("regime", "regimes"), ("remedy", "remedies"), ("experiment", "experiment"),
              ("pretrain_days", "pretrain_days"), ("epochs_per_day", "epochs_per_day"), ("order", "orders"),
              ("epochs", "epochs"), ("patience", "patience"), ("seeds", "seeds"), ("first_seed", "first_seed"),
              ("batch_size", "batch_size"), ("learning_rate", "learning_rate"), ("max_train_rows", "max_train_rows"),
              ("max_eval_rows", "max_eval_rows"), ("single_baseline", "single_baseline"), ("jobs", "jobs"),
              ("probe_every", "probe_every"), ("tensorboard", "tensorboard"), ("lookahead_steps", "lookahead_steps"),
              ("selection", "selection"), ("selection_share", "selection_share"), ("suite", "suite"),
              ("param", "suite_params"), ("task_weight", "task_weights")]
_RESUME_FLAGS = ("resume", "quiet", "jobs", "executor", "scheduler", "command")  # what --resume may be given with


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=["local", "dask"], default="local",
                        help="where cells run: local worker processes (--jobs), or a running Dask cluster "
                        "(--scheduler; needs pip install 'mtl-bench[dask]'); results do not depend on it")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="the Dask scheduler's address for --executor dask (default: $DASK_SCHEDULER_ADDRESS)")


def _show_default(value: Any) -> str:  # noqa: D103
    if isinstance(value, dict):
        return " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ",".join(">".join(v) if isinstance(v, list) else str(v) for v in value) or "none"
    return str(value) if value != "" else "none"


def _add_run_defaults(parser: argparse.ArgumentParser) -> None:
    """Appends ``RunConfig``'s default to the help of every run flag that sets one (``run --help`` shows them)."""
    from mtl_bench.config import RunConfig

    defaults, keys = RunConfig().to_dict(), dict(_RUN_FLAGS)
    for action in parser._actions:
        if action.dest in keys and action.help and "default" not in action.help:
            shown = _show_default(defaults[keys[action.dest]]).replace("%", "%%")
            action.help += f" (default: {shown})"


def _add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a task suite and its data, shared by ``run`` and ``tune``."""
    parser.add_argument("--suite", help="task suite: synthetic, census-income, table or recsim")
    parser.add_argument("--group", help="census-income task group: income or education")
    parser.add_argument("--table", metavar="FILE.toml", help="table suite: TOML file describing your CSV/Parquet data")
    parser.add_argument("--data-dir", metavar="DIR", help="directory holding the suite's data files (census-income)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mtl-bench",
        description=(
            "Does a multi-task model suffer negative transfer, and is it gradient conflict or forgetting? "
            "Trains task suites single-task, jointly and sequentially on shared-bottom, MMoE and PLE models "
            "and writes tidy results to a run directory."
        ),
    )
    from mtl_bench import __version__

    parser.add_argument("--version", action="version", version=f"mtl-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="train a grid of suite variants × architectures × regimes × seeds into runs/<run-id>/",
        description=(
            "Train a grid of cells (suite variant × arch × regime × order × seed) and write config.toml, "
            "metrics.csv, summary.csv and manifest.json to a run directory. With no options: the synthetic "
            "suite (MMoE paper generator) at correlations 1.0, 0.5 and 0.0, all architectures and regimes."
        ),
    )
    run.add_argument("--config", metavar="FILE.toml", help="start from this configuration (e.g. runs/<id>/config.toml)")
    _add_suite_arguments(run)
    run.add_argument(
        "--param", action="append", type=_param, default=[], metavar="NAME=VALUE[,VALUE...]",
        help="suite parameter; several values sweep it (e.g. --param correlation=1.0,0.5,0.0); repeatable",
    )
    run.add_argument("--arch", type=_names, metavar="A,B,..", help="architectures: shared_bottom, mmoe, omoe, ple")
    run.add_argument("--regime", type=_names, metavar="R,..", help="regimes: " + ", ".join(REGIME_NAMES))
    run.add_argument(
        "--remedy", type=_names, metavar="R,..",
        help="remedies of the contrast grid: none, equal, uncertainty, pcgrad, gradvac, cagrad, replay, distill, "
        "kl-anchor (each in the regimes it changes; none, the baseline, always runs)",
    )
    run.add_argument(
        "--task-weight", action="append", type=_param, default=[], metavar="TASK=WEIGHT",
        help="static loss weight of a task (e.g. tuned by mtl-bench tune); repeatable",
    )
    run.add_argument("--experiment", choices=list(experiments.EXPERIMENTS),
                     help="; ".join(f"{e.name}: {e.help}" for e in experiments.EXPERIMENTS.values()).replace("%", "%%"))
    run.add_argument("--pretrain-days", type=int, metavar="N", help="daily regime: days of pre-training (0 = half)")
    run.add_argument("--epochs-per-day", type=int, metavar="N", help="daily regime: passes over each later day")
    run.add_argument("--order", action="append", type=_names, metavar="T1,T2,..",
                     help="a sequential task order (repeatable); default every order of two tasks")
    run.add_argument("--epochs", type=int, metavar="N", help="maximum epochs per training phase")
    run.add_argument("--patience", type=int, metavar="N",
                     help="early stopping: epochs without a better validation loss (0 = never stop early)")
    run.add_argument("--seeds", type=int, metavar="N", help="number of seeds per configuration")
    run.add_argument("--first-seed", type=int, metavar="S", help="first seed (seeds are S..S+N-1)")
    run.add_argument("--batch-size", type=int, metavar="N", help="training batch size")
    run.add_argument("--learning-rate", type=float, metavar="LR", help="Adam learning rate")
    run.add_argument("--max-train-rows", type=int, metavar="N", help="train on at most N rows (0 = all)")
    run.add_argument("--max-eval-rows", type=int, metavar="N", help="validate and test on at most N rows (0 = all)")
    run.add_argument("--probe-every", type=int, metavar="N",
                     help="probe gradient conflict and forgetting every N training steps (0 = off)")
    run.add_argument("--no-probe", action="store_true", help="switch the probe off")
    run.add_argument("--lookahead-steps", type=int, metavar="K",
                     help="joint regime: real optimizer steps of the other tasks the probe replays per event to "
                     "measure the damage they do (0 = off)")
    run.add_argument("--selection", choices=["per_task", "sum", "last"],
                     help="epoch selection: each task its own best epoch (per_task), one epoch by the "
                     "summed loss (sum), or none (last)")
    run.add_argument("--selection-share", type=float, metavar="S",
                     help="share of the validation rows that only select epochs; results and verdicts are read on "
                     "the rest")
    run.add_argument("--tensorboard", metavar="DIR", help="also write training metrics and probe scalars for TensorBoard")
    run.add_argument("--single-baseline", choices=["single_task", "same_arch"],
                     help="single regime trains one-tower models (single_task) or each architecture on one task")
    run.add_argument("--jobs", type=int, metavar="N",
                     help="worker processes running cells in parallel; 0 = one per core not busy with other "
                     "processes (the cores minus the 1-minute load average, at least 1); results do not depend on it")
    _add_executor_arguments(run)
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/<run-id>)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run with its own config.toml, skipping finished cells "
                     "(only --jobs, --executor, --scheduler and --quiet may be given with it)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate the configuration and print the number of cells; write nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    _add_run_defaults(run)

    bench = sub.add_parser(
        "bench",
        help="measure training throughput against plain keras.Model.fit",
        description=(
            "Measure, in one process, joint-regime training throughput (examples/s) of the mtl-bench engine "
            "against plain keras.Model.fit on the identical model, data and batch size, and print the ratio."
        ),
    )
    bench.add_argument("--arch", default="mmoe", help="architecture to time (default: mmoe)")
    bench.add_argument("--rows", type=int, default=20000, help="training rows (default: 20000)")
    bench.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    bench.add_argument("--epochs", type=int, default=10, help="timed epochs per fit, as in a training phase (default: 10)")
    bench.add_argument("--repeats", type=int, default=3, help="alternating timed repeats (default: 3)")
    bench.add_argument("--executors", action="store_true",
                       help="instead: time a small grid (16 cells) on the local pool and on a localhost Dask cluster of "
                       "two workers, and print the speed-up (needs pip install 'mtl-bench[dask]'; the other bench options do "
                       "not apply)")
    report = sub.add_parser(
        "report",
        help="weigh gradient conflict against forgetting as explanations of negative transfer",
        description=(
            "Per suite × arch × task: transfer vs single-task, conflict measures (gradient cosine, conflict rate) "
            "and forgetting measures (affinity, forgetting events, sequential forgetting, retention, output drift); "
            "then the rank correlation of negative transfer with each measure (bootstrap 95% CI) and a verdict. "
            "Writes report.csv, contrast.csv and report.md into the first run directory."
        ),
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by mtl-bench run")
    report.add_argument("--plots", action="store_true", help="also write the figures as PNG into the first run directory")

    calibrate = sub.add_parser(
        "calibrate",
        help="check the verdict on planted mechanisms: the confusion matrix planted × verdict",
        description=(
            "Run the planted suite (identical, none, conflict, forgetting, both) single-task and jointly over "
            "independent draws, report each draw, and print the confusion matrix of planted mechanism × verdict. "
            "Writes calibration.csv and calibration.md into --out; each draw is a run directory under it."
        ),
    )
    calibrate.add_argument("--draws", type=int, default=3, metavar="N", help="independent draws (default 3)")
    calibrate.add_argument("--seeds", type=int, default=10, metavar="N", help="seeds per draw (default 10)")
    calibrate.add_argument("--jobs", type=int, default=0, metavar="N", help="worker processes (0 = one per core not busy)")
    _add_executor_arguments(calibrate)
    calibrate.add_argument("--out", default="runs/calibration", metavar="DIR", help="output directory (default runs/calibration)")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")

    tune = sub.add_parser(
        "tune",
        help="tune hyper-parameters with Optuna on the validation split",
        description=(
            "Tune one arm (--arch) or several with an equal budget (--arms), on the validation split only. "
            "Writes trials.csv, best.json, config.toml (accepted by mtl-bench run --config) and plots/*.png "
            "to the output directory; --arms also re-trains each arm's best configuration over --retrain-seeds "
            "seeds into <out>/runs/<arm>/ for mtl-bench report. Re-running the same command resumes the study."
        ),
    )
    tune.add_argument("--config", metavar="FILE.toml", help="base configuration (suite, epochs, row limits, ...)")
    _add_suite_arguments(tune)
    tune.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                      help="suite parameter (one value: tuning uses one suite variant); repeatable")
    which = tune.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="architecture to tune: single, shared_bottom, mmoe, omoe, ple")
    which.add_argument("--arms", type=_names, metavar="A,B,..",
                       help="equal-budget mode, e.g. single,shared_bottom,mmoe,ple")
    tune.add_argument("--regime", default=JOINT,
                      help=f"regime of multi-task arms: {JOINT} or {SEQUENTIAL} (default {JOINT})")
    tune.add_argument("--trials", type=int, default=20, metavar="N", help="trials per arm (default 20)")
    tune.add_argument("--objective", default="mean_auc",
                      help="mean_auc (regression tasks: -MSE), main_auc, transfer or per_task (default mean_auc)")
    tune.add_argument("--main-task", metavar="TASK", help="main task of main_auc (default: the suite's first task)")
    tune.add_argument("--storage", metavar="URL",
                      help="Optuna storage URL, e.g. postgresql://user@host/db (default sqlite:///<out>/study.db)")
    tune.add_argument("--study", metavar="NAME", help="study name (default <suite>-<arch>-<regime>-<objective>)")
    tune.add_argument("--workers", type=int, default=1, metavar="K", help="local worker processes sharing the study")
    tune.add_argument("--space", metavar="FILE.toml", help="search-space overrides ([common] and per-arch tables)")
    tune.add_argument("--pruner", default="median", help="median, percentile, hyperband, successive_halving, none")
    tune.add_argument("--pruner-param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                      help="pruner constructor argument, e.g. n_startup_trials=5; repeatable")
    tune.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    tune.add_argument("--epochs", type=int, metavar="N", help="maximum epochs per trial")
    tune.add_argument("--first-seed", type=int, metavar="S", help="training seed of every trial")
    tune.add_argument("--max-train-rows", type=int, metavar="N", help="train on at most N rows (0 = all)")
    tune.add_argument("--max-eval-rows", type=int, metavar="N", help="validate on at most N rows (0 = all)")
    tune.add_argument("--retrain-seeds", type=int, default=3, metavar="N",
                      help="seeds of the best configuration's re-training and config.toml (default 3)")
    tune.add_argument("--no-retrain", action="store_true", help="--arms: tune only, do not re-train")
    tune.add_argument("--out", metavar="DIR", help="output directory (default runs/tune-<study>)")
    return parser
