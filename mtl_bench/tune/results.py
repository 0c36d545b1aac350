"""A study's outputs: ``trials.csv``, ``best.json``, ``config.toml`` (the best configuration, accepted by
``mtl-bench run --config``), ``pareto.csv`` for multi-objective studies and ``plots/*.png``."""

from __future__ import annotations

import dataclasses
import io as io_lib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from mtl_bench import io
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.schema import SINGLE, SINGLE_ARCH
from mtl_bench.tune.objectives import ObjectiveContext
from mtl_bench.tune.space import split_params
from mtl_bench.tune.study import FAIL_REASON, INTERRUPTED, SKIPPED, StudySetup, context, counted

MIN_IMPORTANCE_TRIALS = 10  # fewer complete trials give importances too noisy to draw

SCORE_PREFIX = "score_"  # trials.csv: the column of one task's validation score


@dataclasses.dataclass
class TuneResult:
    """A finished study's outputs.

    Attributes:
        study_name: The Optuna study name.
        storage: The storage URL.
        out: Directory holding trials.csv, best.json, config.toml and plots/.
        trials: The trials table (also ``trials.csv``).
        best_params: Best trial's parameters (first Pareto trial for multi-objective); empty if none completed.
        best_values: Best trial's objective values.
        best_scores: Best trial's per-task validation scores.
        config_path: ``config.toml`` of the best configuration, or None.
        pareto: Numbers of the Pareto-optimal trials (multi-objective).
        notes: Things the user should know (e.g. skipped plots).
        objective: The objective's name (the label of every value).
    """

    study_name: str
    storage: str
    out: Path
    trials: pd.DataFrame
    best_params: dict[str, Any]
    best_values: list[float]
    best_scores: dict[str, float]
    config_path: Path | None
    pareto: list[int]
    notes: list[str]
    objective: str = ""


def format_values(values: list[float]) -> str:
    """Objective values as a user reads them: ``0.5822``, or ``0.9312, 0.8820`` (none: ``-``)."""
    return ", ".join(f"{v:.4f}" for v in values) if values else "-"


@dataclasses.dataclass
class ArmsResult:
    """Equal-budget tuning: one study per arm, then each best configuration re-trained over seeds."""

    studies: dict[str, TuneResult]
    run_dirs: dict[str, Path]


def best_single_scores(single: TuneResult) -> dict[str, float]:
    """Per task, the best validation score over the single-task arm's complete trials."""
    columns = [c for c in single.trials.columns if c.startswith(SCORE_PREFIX)]
    done = single.trials[single.trials["state"] == "COMPLETE"]
    if done.empty:
        raise UserInputError(f"the single-task study {single.study_name!r} has no complete trial to compare with")
    return {c[len(SCORE_PREFIX):]: float(done[c].max()) for c in columns}


def best_config(setup: StudySetup, params: dict[str, Any], seeds: int) -> RunConfig:
    """The study's base configuration with the arm's best parameters (and the space's fixed ones), ``seeds`` seeds."""
    training, ctor, weights = split_params(params)
    fixed_training, fixed_ctor, fixed_weights = split_params({k: p.value for k, p in setup.space.items() if p.fixed})
    # ``archs`` lists multi-task architectures only; the single regime trains ``single_task`` from arch_params.
    archs = [a for a in setup.config.archs if a != SINGLE_ARCH] if setup.arch == SINGLE_ARCH else [setup.arch]
    # A multi-task arm is written with the single regime too, so ``mtl-bench run --config`` measures transfer.
    regimes = [setup.regime] if setup.regime == SINGLE else [SINGLE, setup.regime]
    return dataclasses.replace(
        setup.config,
        archs=archs,
        regimes=regimes,
        arch_params={setup.arch: {**fixed_ctor, **ctor}},
        seeds=seeds,
        single_baseline=SINGLE_ARCH if setup.regime == SINGLE else setup.config.single_baseline,
        task_weights={**setup.config.task_weights, **fixed_weights, **weights},
        **{**fixed_training, **training},
    )


def with_single_baseline(config_path: Path, single_config_path: Path) -> RunConfig:
    """Rewrites a tuned multi-task arm's ``config.toml`` to compare against the tuned single-task arm.

    Its single regime then trains ``single_task`` (``single_baseline``) with the single arm's best
    constructor arguments; training settings (learning rate, batch size) stay the multi-task arm's, as a run
    has one of each.
    """
    config = RunConfig.from_toml(config_path)
    single = RunConfig.from_toml(single_config_path).arch_params.get(SINGLE_ARCH, {})
    config = dataclasses.replace(config, single_baseline=SINGLE_ARCH,
                                 arch_params={**config.arch_params, SINGLE_ARCH: dict(single)})
    io.write_text(config_path, config.to_toml())
    return config


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, values, duration, parameters, task scores, last step and failure reason."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        values = t.values or []
        if len(study.directions) == 1:
            row["value"] = values[0] if values else float("nan")
        else:
            for i in range(len(study.directions)):
                row[f"value_{i}"] = values[i] if values else float("nan")
        row["duration_s"] = t.duration.total_seconds() if t.duration else float("nan")
        row.update({f"params_{k}": v for k, v in t.params.items()})
        for task, score in (t.user_attrs.get("scores") or {}).items():
            row[f"{SCORE_PREFIX}{task}"] = score
        row["last_step"] = t.last_step if t.last_step is not None else ""
        reason = t.user_attrs.get(FAIL_REASON, "") or t.user_attrs.get(SKIPPED, "")
        row["reason"] = reason or (INTERRUPTED if t.state == optuna.trial.TrialState.FAIL else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _plots(study: optuna.Study, out: Path, ctx: ObjectiveContext, objective: str) -> list[str]:
    """PNG plots via optuna.visualization.matplotlib; returns notes on plots that could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    multi = len(study.directions) > 1
    first = lambda t: t.values[0]  # noqa: E731
    label = f"{objective} ({ctx.tasks[0]})" if multi else objective
    target = {"target": first} if multi else {}
    plots: dict[str, Callable[[], Any]] = {
        "history": lambda: ovm.plot_optimization_history(study, target_name=label, **target),
    }
    n_complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    skipped = []
    if n_complete >= MIN_IMPORTANCE_TRIALS:
        plots["param_importances"] = lambda: ovm.plot_param_importances(study, target_name=label, **target)
    else:
        skipped.append(f"plot param_importances not drawn: {n_complete} complete trial(s); importances need "
                       f"at least {MIN_IMPORTANCE_TRIALS} to mean anything")
        (out / "plots" / "param_importances.png").unlink(missing_ok=True)  # from an earlier, smaller sitting
    if multi and len(study.directions) in (2, 3):
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=list(ctx.tasks))
    notes = skipped
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            if name == "param_importances":  # how much evidence the bars rest on
                ax.set_title(f"Hyperparameter importances ({n_complete} complete trials)")
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            path = out / "plots" / f"{name}.png"
            png = io_lib.BytesIO()
            fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
            io.write_bytes(path, png.getvalue())  # a temporary file of its own: twin processes write plots too
            plt.close(fig)
        except Exception as err:  # too few trials, a constant parameter, ...
            notes.append(f"plot {name} skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    return notes


def write_results(setup: StudySetup, study: optuna.Study, out: Path, retrain_seeds: int) -> TuneResult:
    """Writes trials.csv, best.json, config.toml, pareto.csv and plots for a study."""
    trials = trials_table(study)
    io.write_csv(out / "trials.csv", trials)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        notes = [f"study {setup.study_name!r} has no complete trial: no best configuration"]
        return TuneResult(setup.study_name, setup.storage, out, trials, {}, [], {}, None, [], notes, setup.objective)
    pareto: list[int] = []
    if len(study.directions) > 1:
        front = sorted(study.best_trials, key=lambda t: (-sum(t.values), t.number))
        pareto = [t.number for t in front]
        io.write_csv(out / "pareto.csv", trials[trials["number"].isin(pareto)])
        best = front[0]  # the Pareto trial with the best summed score
    else:
        best = study.best_trial
    best_params, best_values = dict(best.params), list(best.values)
    best_scores = dict(best.user_attrs.get("scores") or {})
    config_path = out / "config.toml"
    io.write_text(config_path, best_config(setup, best_params, retrain_seeds).to_toml())
    io.write_json(out / "best.json", {
        "study": setup.study_name, "storage": setup.storage, "arch": setup.arch, "regime": setup.regime,
        "objective": setup.objective, "trial": best.number, "values": best_values, "params": best_params,
        "validation_scores": best_scores, "pareto_trials": pareto, "reference": setup.reference,
    })
    notes = _plots(study, out, context(setup), setup.objective)
    if counted(study) < setup.n_trials:
        notes.append(f"{counted(study)} of {setup.n_trials} trials finished (the sampler kept repeating tried "
                     "configurations, or a process stopped): run the command again to resume")
    return TuneResult(setup.study_name, setup.storage, out, trials, best_params, best_values, best_scores,
                      config_path, pareto, notes, setup.objective)
