"""Experiment 3 of the recommender simulator: on-policy vs logged (off-policy) data.

Three arms see the same world, the same impression slots and the same
candidates every day (each arm owns a :class:`~mtl_bench.tasks.recsim.Simulator`
with the run's seed, and all arms draw the same random numbers) and start from
the same pre-trained model (days ``0..D0`` of logging-policy impressions,
early stopping on a random-policy sample of day ``D0``):

* ``logged`` (off-policy): every later day, the popularity logging policy
  picks the shown item (the first candidate, itself a popularity draw); the
  model trains supervised on those logs.
* ``on-policy``: the current model picks the candidate with the highest
  predicted click probability; the model trains supervised on what it chose.
* ``reinforce``: the model's click logits over the candidates are a softmax
  policy; it samples the shown item and takes one REINFORCE step per batch,
  ``-mean((r - b) log pi(a))`` with reward ``r`` = click and baseline ``b``
  = the batch's mean reward: strictly on-policy, and only the click head's
  policy is trained (the other heads keep their pre-trained values through the
  shared layers).

Each later day has ``impressions_per_day`` slots with ``CANDIDATES`` candidates
from the logging policy. Held-out cohort rows (cohort 1 from the first day
after pre-training, drift off) never train. After each day's training every
arm is measured on a fresh random-policy sample of the day (unbiased) and on a
fixed probe sample drawn after pre-training:

* ``auc`` per task, overall and for the held-out and the control cohort 0;
* ``auc_probe`` per task: the AUC on the fixed probe sample of day ``D0``,
  the world the model was pre-trained in; its fall is the arm's forgetting
  of what pre-training learnt (the sequential-regime view);
* ``output_drift``: the mean Bernoulli KL between each task's probe
  predictions before and after the day's training;
* ``click_rate``: the share of shown items clicked (the policy's value);
* ``coverage``: the share of items shown at least once that day;
  ``gini``: the Gini coefficient of the day's impressions per item.

``policy.csv``: ``arm, arch, seed, day, task, measure, value`` (``task`` is
``"all"`` for measures of the policy); ``policy_summary.csv`` and ``policy.md``
the per-arm summary; ``manifest.json`` the run's status (``--resume`` runs
every arm again: each is short).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtl_bench import experiments, io
from mtl_bench.experiments import rundir
from mtl_bench.schema import SINGLE_ARCH
from mtl_bench.engine import metrics as metrics_lib
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.remedies.anchors import kl_divergence
from mtl_bench.models import ARCHITECTURES
from mtl_bench.engine.regimes import pretrain_last_day
from mtl_bench.spec import Split
from mtl_bench.tasks import recsim
from mtl_bench.engine.training import Trainer, predict

ARMS: tuple[str, ...] = ("logged", "on-policy", "reinforce")
CANDIDATES = 20
EVAL_ROWS = 4000
PROBE_ROWS = 2000


def _candidate_frame(sim: recsim.Simulator, slots: dict[str, np.ndarray], candidates: np.ndarray) -> pd.DataFrame:
    """The ``n * k`` (slot, candidate) pairs as feature rows (no outcomes drawn)."""
    n, k = candidates.shape
    users = np.repeat(slots["user"], k)
    items = candidates.reshape(-1)
    return pd.DataFrame({
        "user": users, "item": items, "category": sim.item_category[items], "scenario": np.repeat(slots["scenario"], k),
        "position": np.repeat(slots["position"], k), "hour": np.repeat(slots["hour"], k),
        "activity": sim.activity[users], "popularity": sim.popularity[items],
    })


def _click_logits(model: keras.Model, features: dict[str, Any], training: bool = False) -> tf.Tensor:
    p = tf.clip_by_value(tf.reshape(model(features, training=training)["click"], [-1]), 1e-6, 1 - 1e-6)
    return tf.math.log(p) - tf.math.log1p(-p)


class _Reinforce:
    """One REINFORCE step per batch on the click head's softmax policy over the candidates."""

    def __init__(self, model: keras.Model, learning_rate: float, k: int) -> None:
        self.model, self.k = model, k
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build(model.trainable_variables)

        def step(features, chosen, reward):
            with tf.GradientTape() as tape:
                logits = tf.reshape(_click_logits(model, features, training=True), [-1, k])
                log_pi = tf.gather(tf.nn.log_softmax(logits, axis=1), chosen, batch_dims=1)
                advantage = reward - tf.reduce_mean(reward)
                loss = -tf.reduce_mean(advantage * log_pi)
            # Only the click head and the layers under it get a gradient; the other heads are left alone.
            pairs = [(g, v) for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
                     if g is not None]
            self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss

        self._step = tf.function(step, reduce_retracing=True, autograph=False)

    def train(self, features: dict[str, np.ndarray], chosen: np.ndarray, reward: np.ndarray, batch_size: int,
              rng: np.random.Generator) -> None:
        n = len(chosen)
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            rows = order[start:start + batch_size]
            cand_rows = (rows[:, None] * self.k + np.arange(self.k)[None, :]).reshape(-1)
            batch = {key: tf.constant(v[cand_rows]) for key, v in features.items()}
            self._step(batch, tf.constant(chosen[rows], tf.int32), tf.constant(reward[rows], tf.float32))


def _prefix(sim: recsim.Simulator, last_pretrain: int, per_day: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Days ``0..last_pretrain`` of logging-policy impressions, then random-policy selection and probe samples."""
    frames = []
    for day in range(last_pretrain + 1):
        if day:
            sim.next_day()
        slots = sim.requests(per_day)
        frames.append(sim.outcomes(slots, sim.logging_items(per_day, users=slots["user"])))
    selection = sim.outcomes(sim.requests(EVAL_ROWS), sim.logging_items(EVAL_ROWS, "random"))
    probe = sim.outcomes(sim.requests(PROBE_ROWS), sim.logging_items(PROBE_ROWS, "random"))
    return pd.concat(frames, ignore_index=True), selection, probe


def _gini(counts: np.ndarray) -> float:
    x = np.sort(np.asarray(counts, np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return float("nan")
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def run_arms(config: RunConfig, arch: str, seed: int) -> pd.DataFrame:
    """The three arms for one architecture and seed: ``policy.csv`` rows."""
    params = {**recsim.DEFAULTS, **config.suite_params}
    train_days = range(params["days"] - params["validation_days"] - params["test_days"])
    last_pretrain = pretrain_last_day(train_days, config.pretrain_days)
    if params["holdout_cohort"] < 0:
        params["holdout_cohort"] = 1
    params["holdout_day"] = last_pretrain + 1
    per_day = params["impressions_per_day"]

    def simulator() -> recsim.Simulator:
        return recsim.Simulator(seed, **params)

    # Pre-training: days 0..D0 of logging-policy impressions; a random-policy sample of day D0 selects the epoch.
    sim = simulator()
    pretrain, selection, probe_frame = _prefix(sim, last_pretrain, per_day)
    encoder = recsim.Encoder.fit_raw_ids(pretrain, sim.params)
    keras.utils.set_random_seed(seed)
    base = ARCHITECTURES[arch](features=encoder.spec, tasks=encoder.tasks, **config.arch_params.get(arch, {}))
    trainer = Trainer(base, encoder.tasks, learning_rate=config.learning_rate, seed=seed)
    selection_split = encoder.split(selection)
    trainer.fit(encoder.split(pretrain), selection_split, epochs=config.epochs, batch_size=config.batch_size,
                seed=seed, patience=config.patience)
    pretrained = [v.numpy() for v in base.weights]
    probe = encoder.split(probe_frame)

    rows: list[dict[str, Any]] = []
    for arm in ARMS:
        # Every arm replays the same world from the same seed: same slots, candidates and random numbers.
        world = simulator()
        _prefix(world, last_pretrain, per_day)
        keras.utils.set_random_seed(seed)
        model = ARCHITECTURES[arch](features=encoder.spec, tasks=encoder.tasks, **config.arch_params.get(arch, {}))
        model(probe.take(slice(0, 2)).features)
        for v, w in zip(model.weights, pretrained):
            v.assign(w)
        supervised = Trainer(model, encoder.tasks, learning_rate=config.learning_rate, seed=seed)
        reinforce = _Reinforce(model, config.learning_rate, CANDIDATES) if arm == "reinforce" else None
        choice_rng = np.random.default_rng([seed, 7])
        before = predict(model, probe)  # each day's "after" is the next day's "before"
        for day in range(last_pretrain + 1, params["days"]):
            world.next_day()
            slots = world.requests(per_day)
            candidates = world.logging_items(per_day, k=CANDIDATES)
            cand_frame = _candidate_frame(world, slots, candidates)
            cand_features = encoder.features(cand_frame)
            if arm == "logged":
                chosen = np.zeros(per_day, np.int64)
            else:
                logits = predict_logits(model, cand_features).reshape(per_day, CANDIDATES)
                if arm == "on-policy":
                    chosen = logits.argmax(axis=1)
                else:
                    z = logits - logits.max(axis=1, keepdims=True)
                    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
                    chosen = (prob.cumsum(axis=1) > choice_rng.random(per_day)[:, None]).argmax(axis=1)
            shown = world.outcomes(slots, candidates[np.arange(per_day), chosen])
            keep = shown["holdout"].to_numpy() == 0
            if reinforce is None:
                supervised.fit(encoder.split(shown[keep]), selection_split, epochs=config.epochs_per_day,
                               batch_size=config.batch_size, seed=seed + day, patience=0, restore_best=False)
            else:
                kept = np.flatnonzero(keep)
                cand_rows = (kept[:, None] * CANDIDATES + np.arange(CANDIDATES)[None, :]).reshape(-1)
                for _ in range(config.epochs_per_day):
                    reinforce.train({k: v[cand_rows] for k, v in cand_features.items()}, chosen[kept],
                                    shown["click"].to_numpy(np.float32)[kept], config.batch_size, choice_rng)
            after = predict(model, probe)
            for t in encoder.tasks:
                rows.append({"arm": arm, "arch": arch, "seed": seed, "day": day, "task": t.name, "measure": "auc_probe",
                             "value": metrics_lib.auc(probe.labels[t.name], after[t.name])})
            eval_frame = world.outcomes(world.requests(EVAL_ROWS), world.logging_items(EVAL_ROWS, "random"))
            evaluation = encoder.split(eval_frame)
            pred = predict(model, evaluation)
            head = {"arm": arm, "arch": arch, "seed": seed, "day": day}
            cohort = evaluation.meta["cohort"]
            groups = {"auc": np.ones(len(cohort), bool), "auc_heldout": cohort == params["holdout_cohort"],
                      "auc_control": cohort == 0}
            for t in encoder.tasks:
                y = evaluation.labels[t.name]
                for measure, mask in groups.items():
                    rows.append({**head, "task": t.name, "measure": measure,
                                 "value": metrics_lib.auc(y[mask], pred[t.name][mask])})
                drift = kl_divergence("binary", tf.constant(before[t.name]), tf.constant(after[t.name])).numpy()
                rows.append({**head, "task": t.name, "measure": "output_drift", "value": float(np.mean(drift))})
            before = after
            counts = np.bincount(shown["item"], minlength=params["items"])
            for measure, value in (("click_rate", float(shown["click"].mean())),
                                   ("coverage", float((counts > 0).mean())), ("gini", _gini(counts))):
                rows.append({**head, "task": "all", "measure": measure, "value": value})
        keras.backend.clear_session(free_memory=True)
    return pd.DataFrame(rows)


def predict_logits(model: keras.Model, features: dict[str, np.ndarray]) -> np.ndarray:
    """Click logits of many candidate rows."""
    split = Split(features, {"click": np.zeros(len(next(iter(features.values()))), np.float32)})
    p = np.clip(predict(model, split)["click"], 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm and architecture (means over seeds): last-day AUCs, forgetting, drift and the policy's measures.

    ``auc_click_ci_low`` / ``_high`` and ``probe_forgetting_click_ci_*`` are 95%
    t-intervals over seeds; ``probe_forgetting_<task>`` is the first day's
    ``auc_probe`` minus the last day's.
    """
    rows = []
    last, first = frame["day"].max(), frame["day"].min()
    for (arm, arch), g in frame.groupby(["arm", "arch"], sort=False):
        mean = lambda m, t, d=None: g[(g["measure"] == m) & (g["task"] == t) & ((g["day"] == d) if d is not None else True)]["value"].mean()  # noqa: E731

        def per_seed(m: str, t: str, d: int) -> pd.Series:
            return g[(g["measure"] == m) & (g["task"] == t) & (g["day"] == d)].set_index("seed")["value"]

        row = {"arm": arm, "arch": arch, "n_seeds": g["seed"].nunique()}
        for t in recsim.BEHAVIOURS:
            row[f"auc_{t}"] = mean("auc", t, last)
            row[f"probe_forgetting_{t}"] = mean("auc_probe", t, first) - mean("auc_probe", t, last)
            row[f"output_drift_{t}"] = mean("output_drift", t)
        _, row["auc_click_ci_low"], row["auc_click_ci_high"], _ = metrics_lib.mean_ci(per_seed("auc", "click", last).tolist())
        forgetting = per_seed("auc_probe", "click", first) - per_seed("auc_probe", "click", last)
        _, row["probe_forgetting_click_ci_low"], row["probe_forgetting_click_ci_high"], _ = metrics_lib.mean_ci(
            forgetting.tolist())
        row["heldout_click_lift_change"] = mean("auc_heldout", "click", last) - mean("auc_heldout", "click", first)
        row["control_click_lift_change"] = mean("auc_control", "click", last) - mean("auc_control", "click", first)
        for m in ("click_rate", "coverage", "gini"):
            row[f"{m}_first"] = mean(m, "all", first)
            row[f"{m}_last"] = mean(m, "all", last)
        rows.append(row)
    return pd.DataFrame(rows)


def resolve(config: RunConfig) -> RunConfig:
    """``config``, checked: the ``recsim`` suite, one suite variant, valid simulator parameters and architectures.

    Raises:
        UserInputError: Otherwise.
    """
    if config.suite != "recsim":
        raise UserInputError(f"experiment {experiments.POLICY!r} needs the recsim suite. Received: suite={config.suite!r}")
    if any(isinstance(v, list) for v in config.suite_params.values()):
        raise UserInputError(f"experiment {experiments.POLICY!r} needs one suite variant; "
                             f"suite_params sweeps {config.suite_params}")
    recsim.Simulator(0, **config.suite_params)  # checks the parameters before anything is written
    multi_task = sorted(set(ARCHITECTURES) - {SINGLE_ARCH})
    for arch in config.archs:
        if arch not in multi_task:
            raise UserInputError(f"unknown multi-task architecture {arch!r}; valid: {multi_task}")
    return config


def plan(config: RunConfig) -> list[tuple[str, int]]:
    """The (architecture, seed) pairs, in the order they run; each runs every arm."""
    return [(arch, seed) for arch in config.archs for seed in config.seed_list]


def run(
    config: RunConfig,
    *,
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    progress: TextIO | None = sys.stderr,
    in_process: bool = True,
) -> Path:
    """Runs every architecture × seed × arm in this process; writes ``policy.csv`` and ``policy.md``.

    Args:
        config: The configuration (``experiment = "policy"``).
        out: The run directory; default ``<runs_root>/<run-id>``. It must not exist or be empty.
        runs_root: Parent of generated run directories.
        progress: Stream for progress lines, or None.
        in_process: Ignored: the arms always run in this process, with deterministic TensorFlow ops.

    Raises:
        UserInputError: For an invalid configuration (nothing is written then).
    """
    config = resolve(config)
    out = rundir.new_dir(config, out, runs_root)
    io.write_text(out / experiments.CONFIG, config.to_toml())
    return _execute(config, out, rundir.start(out, config), progress)


def resume(run_dir: str | Path, *, progress: TextIO | None = sys.stderr, in_process: bool = True) -> Path:
    """Runs the experiment again into ``run_dir`` (each arm is short; nothing partial is kept)."""
    run_dir = Path(run_dir)
    config = resolve(RunConfig.from_toml(run_dir / experiments.CONFIG))
    return _execute(config, run_dir, rundir.restart(run_dir, config), progress)


def _execute(config: RunConfig, out: Path, manifest: dict[str, Any], progress: TextIO | None) -> Path:
    start = time.perf_counter()
    try:
        tf.config.experimental.enable_op_determinism()
        frames = []
        for arch, seed in plan(config):
            if progress:
                progress.write(f"policy: {arch} seed {seed}\n")
            frames.append(run_arms(config, arch, seed))
        frame = pd.concat(frames, ignore_index=True)
        io.write_csv(out / "policy.csv", frame)
        table = summarize(frame)
        io.write_csv(out / "policy_summary.csv", table)
        io.write_text(out / "policy.md", describe(table))
    except BaseException as err:
        rundir.stop(out, manifest, err)
        raise
    rundir.finish(out, manifest, start)
    return out


def summary(run_dir: Path) -> str:
    """The closing summary: ``policy.md``."""
    path = run_dir / "policy.md"
    return path.read_text() if path.is_file() else ""


def runs(run_dir: Path) -> list[Path]:
    """No grid runs: ``mtl-bench report`` prints the summary only."""
    return []


def describe(summary: pd.DataFrame) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["# On-policy vs logged data", "",
             "Last-day AUC on a random-policy sample, mean output drift per day on a fixed probe sample, the held-out "
             "and control cohorts' change in click AUC, and the shown items' click rate, coverage and Gini "
             "(first and last day); means over seeds.", "",
             "| " + " | ".join(summary.columns) + " |", "|" + "---|" * len(summary.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in summary.itertuples(index=False)]
    return "\n".join(lines) + "\n"


__all__ = ["ARMS", "CANDIDATES", "plan", "resolve", "resume", "run", "run_arms", "summarize"]
