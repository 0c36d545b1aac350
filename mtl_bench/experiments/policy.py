"""Experiment 3 of the recommender simulator: supervised feedback loops vs on-policy RL updates.

Every arm sees the same world, the same impression slots, the same candidates and the same label random
numbers every day (each arm replays a :class:`~mtl_bench.tasks.recsim.Simulator` with the run's seed and
draws the outcomes of *every* candidate of a day at once, so an arm's choice only decides which outcome it
sees) and starts from the same pre-trained model (days ``0..D0`` of logging-policy impressions, early
stopping on a random-policy sample of day ``D0``). Days ``D0+1 .. days-1`` are the arms' days
(``--param days=N`` sets the world's horizon; ``--pretrain-days`` the pre-training days).

* ``logged`` (off-policy supervised): the popularity logging policy's pick (the first candidate) is
  shown; the model trains supervised on those logs, ``epochs_per_day`` passes.
* ``on-policy`` (supervised): the candidate with the highest policy score is shown; supervised training
  on what it chose.
* ``reinforce`` (strictly on-policy): slots come in rollout batches of ``batch_size``; each batch is
  sampled from the current softmax policy and used for exactly one update (batch-mean baseline).
* ``ppo`` (near-on-policy): the day's rollouts are sampled from the start-of-day policy, then
  ``ppo_epochs`` passes of minibatch updates with the clipped surrogate (``clip`` = eps, batch-mean
  baseline, no value network); ``ppo_epochs=1`` is the single-inner-epoch setting.
* ``grpo`` (strictly on-policy): per slot a group of ``group`` candidates sampled from the current
  policy, all of whose outcomes are revealed; advantage = reward minus the group mean over the group
  std; one update per rollout batch. Click rate, coverage and Gini are of each group's first draw.

The updates are in :mod:`~mtl_bench.experiments.policy_arms`. ``kl`` (RL arms) adds ``kl * KL(pi ||
pi_ref)`` to the pre-trained model's policy; ``reward`` is ``click`` or ``engagement`` (``click + 2
conversion + 0.5 like``, whose weights also make the policy score, so it touches all three heads).
``kl`` and ``ppo_epochs`` take several values (``--param kl=0,0.1``): each RL arm runs at each.
Held-out cohort rows (cohort 1 from the first arms' day, drift off) are shown but never train.

After each day every arm is measured on a fresh random-policy sample (unbiased) and on a fixed probe
sample of day ``D0``:

* ``auc`` per task, overall, held-out (``auc_heldout``) and control cohort 0 (``auc_control``);
* ``auc_probe`` per task on the probe sample (the pre-training world; day ``D0`` rows hold the
  pre-trained model's); its fall is forgetting;
* ``output_drift``: mean Bernoulli KL(before || after) of each head's probe predictions over the day;
  ``drift_pretrained``: the same from the pre-trained model's (both :mod:`mtl_bench.measures.divergence`);
* ``click_rate``, ``reward`` (mean reward of the shown items), ``coverage`` (share of items shown at
  least once that day), ``gini`` (Gini coefficient of the day's impressions per item).

Files: ``policy.csv`` (``arm, kl, epochs, arch, seed, day, task, measure, value``; ``task`` is ``"all"``
for the policy's measures; ``epochs`` is ``ppo_epochs`` for PPO, 1 for REINFORCE/GRPO, ``epochs_per_day``
for the supervised arms); ``policy_updates.csv`` (``arm, kl, epochs, arch, seed, day, epoch, measure,
value``: per RL update pass the mean over its updates of ``ratio_mean`` (pi/b of the samples used),
``ratio_dev`` (mean ``|pi/b - 1|``), ``clip_share`` (share with ``|pi/b - 1| > eps``) and ``kl_ref``);
``policy_summary.csv`` and ``policy.md`` (:mod:`~mtl_bench.experiments.policy_report`); ``manifest.json``.
Each architecture × seed pair is one work item of the run's executor (pairs run in parallel, locally or on a
Dask cluster); the driver commits its rows to ``pairs/<arch>__s<seed>.policy.csv`` (and ``.updates.csv``),
and ``--resume`` keeps the finished pairs.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, TextIO

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtl_bench import experiments, io
from mtl_bench.config import RunConfig
from mtl_bench.engine import cells
from mtl_bench.engine import executor as executor_lib
from mtl_bench.engine import metrics as metrics_lib
from mtl_bench.engine.executor import Executor
from mtl_bench.engine.regimes import pretrain_last_day
from mtl_bench.engine.training import Trainer, predict
from mtl_bench.errors import RunStopped, UserInputError
from mtl_bench.experiments import policy_report, rundir
from mtl_bench.experiments import policy_arms as pa
from mtl_bench.measures.divergence import output_drift
from mtl_bench.models import ARCHITECTURES
from mtl_bench.schema import SINGLE_ARCH
from mtl_bench.tasks import recsim
from mtl_bench.validation import check_choice, check_int, check_number, fail

ARMS = pa.ARMS
CANDIDATES = 20
EVAL_ROWS = 4000
PAIRS_DIR = "pairs"
PROBE_ROWS = 2000
# Experiment options given as --param NAME=VALUE next to the simulator's parameters, with their defaults.
OPTIONS: dict[str, Any] = {"arms": list(ARMS), "kl": [0.0], "ppo_epochs": [4], "clip": 0.2, "group": 4,
                           "reward": "click"}


@dataclasses.dataclass(frozen=True)
class Options:
    """The arms to run and their settings (see the module docstring)."""

    arms: tuple[str, ...] = ARMS
    kl: tuple[float, ...] = (0.0,)
    ppo_epochs: tuple[int, ...] = (4,)
    clip: float = 0.2
    group: int = 4
    reward: str = "click"

    def variants(self, epochs_per_day: int) -> list[tuple[str, float, int]]:
        """The ``(arm, kl, epochs)`` runs, in order."""
        out: list[tuple[str, float, int]] = []
        for arm in self.arms:
            if arm in pa.SUPERVISED_ARMS:
                out.append((arm, 0.0, epochs_per_day))
            else:
                out += [(arm, kl, e) for kl in self.kl for e in (self.ppo_epochs if arm == "ppo" else (1,))]
        return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def split_params(config: RunConfig) -> tuple[dict[str, Any], Options]:
    """The simulator's parameters and the experiment's :class:`Options`, from ``config.suite_params``.

    Raises:
        UserInputError: For an invalid option, or a sweep of a simulator parameter.
    """
    owner = f"experiment {experiments.POLICY}"
    raw = {**OPTIONS, **{k: v for k, v in config.suite_params.items() if k in OPTIONS}}
    world = {k: v for k, v in config.suite_params.items() if k not in OPTIONS}
    swept = {k: v for k, v in world.items() if isinstance(v, list)}
    if swept:
        raise UserInputError(f"{owner} needs one suite variant; suite_params sweeps {swept}")
    arms = _as_list(raw["arms"])
    for arm in arms:
        check_choice(owner, "arms", arm, ARMS)
    if not arms or len(set(arms)) != len(arms):
        raise fail(owner, "arms", f"a list naming each of {list(ARMS)} at most once", raw["arms"])
    for name in ("kl", "ppo_epochs"):
        if not _as_list(raw[name]) or len(set(_as_list(raw[name]))) != len(_as_list(raw[name])):
            raise fail(owner, name, "one value or a list of distinct values", raw[name])
    options = Options(
        arms=tuple(arms),
        kl=tuple(check_number(owner, "kl", v, 0.0) for v in _as_list(raw["kl"])),
        ppo_epochs=tuple(check_int(owner, "ppo_epochs", v, 1, 100) for v in _as_list(raw["ppo_epochs"])),
        clip=check_number(owner, "clip", raw["clip"], 0.0, low_open=True),
        group=check_int(owner, "group", raw["group"], 2, CANDIDATES),
        reward=check_choice(owner, "reward", raw["reward"], pa.REWARDS),
    )
    return world, options


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


@dataclasses.dataclass
class _Day:
    """One day of the world, identical for every arm: slots, candidates and every candidate's outcomes."""

    features: dict[str, np.ndarray]  # slot-major candidate rows
    outcomes: pd.DataFrame  # one row per candidate row
    reward: np.ndarray  # (slots, k)
    keep: np.ndarray  # (slots,) not held out: may train
    reference_logp: np.ndarray  # (slots, k) pre-trained policy


def _draw_day(world: recsim.Simulator, encoder: recsim.Encoder, per_day: int, weights: dict[str, float],
              reference: keras.Model | np.ndarray) -> _Day:
    world.next_day()
    slots = world.requests(per_day)
    candidates = world.logging_items(per_day, k=CANDIDATES)
    features = encoder.features(_candidate_frame(world, slots, candidates))
    every = world.outcomes({k: np.repeat(v, CANDIDATES) for k, v in slots.items()}, candidates.reshape(-1))
    if isinstance(reference, np.ndarray):
        ref = reference
    else:
        ref = pa.log_softmax(pa.policy_scores(reference, features, weights).reshape(per_day, CANDIDATES))
    return _Day(features, every, pa.reward_of(every, weights).reshape(per_day, CANDIDATES),
                every["holdout"].to_numpy()[::CANDIDATES] == 0, ref.astype(np.float32))


def _log_policy(model: keras.Model | pa.PolicyGradient, day: _Day, slots: np.ndarray,
                weights: dict[str, float]) -> np.ndarray:
    """``(slots, k)`` log-probabilities; an RL arm's from its updater's own graph, so its ratios start at 1 exactly."""
    rows = pa.slot_rows(slots, CANDIDATES)
    features = {k: v[rows] for k, v in day.features.items()}
    if isinstance(model, pa.PolicyGradient):
        return model.policy(features).astype(np.float64)
    return pa.log_softmax(pa.policy_scores(model, features, weights).reshape(len(slots), CANDIDATES))


def _update(updater: pa.PolicyGradient, day: _Day, slots: np.ndarray, samples: np.ndarray, actions: np.ndarray,
            behaviour_logp: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """One update on ``slots`` (samples index into them); the STATS measured before it."""
    rows = pa.slot_rows(slots, CANDIDATES)
    return updater.step({k: v[rows] for k, v in day.features.items()}, samples, actions, behaviour_logp, advantage,
                        day.reference_logp[slots])


def _rl_day(arm: str, updater: pa.PolicyGradient, day: _Day, options: Options, epochs: int,
            batch_size: int, weights: dict[str, float], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """One day of an RL arm: the shown candidate per slot and the mean STATS of each update pass."""
    n = len(day.keep)
    chosen = np.zeros(n, np.int64)
    passes: list[list[np.ndarray]] = [[] for _ in range(epochs)]
    if arm == "ppo":
        logp = _log_policy(updater, day, np.arange(n), weights)  # the start-of-day policy samples every rollout
        chosen = pa.sample(logp, rng.random(n))
        behaviour = logp[np.arange(n), chosen].astype(np.float32)
        kept = np.flatnonzero(day.keep)
        for epoch in range(epochs):
            order = rng.permutation(kept)
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                advantage = pa.batch_advantages(day.reward[rows, chosen[rows]])
                passes[epoch].append(_update(updater, day, rows, np.arange(len(rows)), chosen[rows], behaviour[rows],
                                             advantage))
        return chosen, [np.mean(p, axis=0) for p in passes if p]
    for start in range(0, n, batch_size):  # strictly on-policy: sample a rollout batch, update once on it
        batch = np.arange(start, min(start + batch_size, n))
        logp = _log_policy(updater, day, batch, weights)
        if arm == "reinforce":
            picks = pa.sample(logp, rng.random(len(batch)))[:, None]
            advantage_of = lambda r: pa.batch_advantages(r.reshape(-1))  # noqa: E731
        else:
            picks = pa.sample(logp, rng.random((len(batch), options.group)))
            advantage_of = lambda r: pa.group_advantages(r).reshape(-1)  # noqa: E731
        chosen[batch] = picks[:, 0]
        local = np.flatnonzero(day.keep[batch])
        if not len(local):
            continue
        picks = picks[local]
        g = picks.shape[1]
        samples = np.repeat(np.arange(len(local)), g)
        actions = picks.reshape(-1)
        passes[0].append(_update(updater, day, batch[local], samples, actions,
                                 logp[local][samples, actions].astype(np.float32),
                                 advantage_of(day.reward[batch[local][:, None], picks])))
    return chosen, [np.mean(p, axis=0) for p in passes if p]


def run_arms(config: RunConfig, arch: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every arm variant for one architecture and seed: ``policy.csv`` and ``policy_updates.csv`` rows."""
    world_params, options = split_params(config)
    params = {**recsim.DEFAULTS, **world_params}
    train_days = range(params["days"] - params["validation_days"] - params["test_days"])
    last_pretrain = pretrain_last_day(train_days, config.pretrain_days)
    if params["holdout_cohort"] < 0:
        params["holdout_cohort"] = 1
    params["holdout_day"] = last_pretrain + 1
    per_day = params["impressions_per_day"]
    weights = pa.REWARDS[options.reward]

    def simulator() -> recsim.Simulator:
        return recsim.Simulator(seed, **params)

    def build() -> keras.Model:
        return ARCHITECTURES[arch](features=encoder.spec, tasks=encoder.tasks, **config.arch_params.get(arch, {}))

    sim = simulator()
    pretrain, selection, probe_frame = _prefix(sim, last_pretrain, per_day)
    encoder = recsim.Encoder.fit_raw_ids(pretrain, sim.params)
    keras.utils.set_random_seed(seed)
    base = build()
    trainer = Trainer(base, encoder.tasks, learning_rate=config.learning_rate, seed=seed)
    selection_split = encoder.split(selection)
    trainer.fit(encoder.split(pretrain), selection_split, epochs=config.epochs, batch_size=config.batch_size,
                seed=seed, patience=config.patience)
    pretrained = [v.numpy() for v in base.weights]
    probe = encoder.split(probe_frame)
    pre_probe = predict(base, probe)
    references: dict[int, Any] = {}  # day -> the pre-trained policy's log-probabilities, computed by the first arm

    rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for arm, kl, epochs in options.variants(config.epochs_per_day):
        world = simulator()
        _prefix(world, last_pretrain, per_day)
        keras.utils.set_random_seed(seed)
        model = build()
        model(probe.take(slice(0, 2)).features)
        for v, w in zip(model.weights, pretrained):
            v.assign(w)
        supervised = Trainer(model, encoder.tasks, learning_rate=config.learning_rate, seed=seed)
        updater = None
        if arm in pa.RL_ARMS:
            updater = pa.PolicyGradient(model, weights, CANDIDATES, config.learning_rate,
                                        clip=options.clip if arm == "ppo" else None, kl=kl)
        rng = np.random.default_rng([seed, 7])
        key = {"arm": arm, "kl": kl, "epochs": epochs, "arch": arch, "seed": seed}
        for t in encoder.tasks:
            rows.append({**key, "day": last_pretrain, "task": t.name, "measure": "auc_probe",
                         "value": metrics_lib.auc(probe.labels[t.name], pre_probe[t.name])})
        before = pre_probe  # each day's "after" is the next day's "before"
        for day_index in range(last_pretrain + 1, params["days"]):
            day = _draw_day(world, encoder, per_day, weights, references.get(day_index, base))
            references[day_index] = day.reference_logp
            if arm == "logged":
                chosen = np.zeros(per_day, np.int64)
            elif arm == "on-policy":
                chosen = _log_policy(model, day, np.arange(per_day), weights).argmax(axis=1)
            else:
                chosen, stats = _rl_day(arm, updater, day, options, epochs, config.batch_size, weights, rng)
                for epoch, values in enumerate(stats, start=1):
                    updates += [{**key, "day": day_index, "epoch": epoch, "measure": m, "value": float(v)}
                                for m, v in zip(pa.STATS, values)]
            shown = day.outcomes.iloc[np.arange(per_day) * CANDIDATES + chosen].reset_index(drop=True)
            if arm in pa.SUPERVISED_ARMS:
                supervised.fit(encoder.split(shown[day.keep]), selection_split, epochs=config.epochs_per_day,
                               batch_size=config.batch_size, seed=seed + day_index, patience=0, restore_best=False)
            rows += _day_rows(model, encoder, world, probe, before, pre_probe, shown,
                              day.reward[np.arange(per_day), chosen], params, {**key, "day": day_index})
            before = predict(model, probe)
        keras.backend.clear_session(free_memory=True)
    return pd.DataFrame(rows), pd.DataFrame(updates, columns=[*_KEY, "day", "epoch", "measure", "value"])


_KEY = ("arm", "kl", "epochs", "arch", "seed")


def _day_rows(model: keras.Model, encoder: recsim.Encoder, world: recsim.Simulator, probe: Any,
              before: dict[str, np.ndarray], pre_probe: dict[str, np.ndarray], shown: pd.DataFrame, reward: np.ndarray,
              params: dict[str, Any], head: dict[str, Any]) -> list[dict[str, Any]]:
    """The day's measures after its training."""
    rows = []
    after = predict(model, probe)
    evaluation = encoder.split(world.outcomes(world.requests(EVAL_ROWS), world.logging_items(EVAL_ROWS, "random")))
    pred = predict(model, evaluation)
    cohort = evaluation.meta["cohort"]
    groups = {"auc": np.ones(len(cohort), bool), "auc_heldout": cohort == params["holdout_cohort"],
              "auc_control": cohort == 0}
    for t in encoder.tasks:
        rows.append({**head, "task": t.name, "measure": "auc_probe",
                     "value": metrics_lib.auc(probe.labels[t.name], after[t.name])})
        y = evaluation.labels[t.name]
        for measure, mask in groups.items():
            rows.append({**head, "task": t.name, "measure": measure, "value": metrics_lib.auc(y[mask], pred[t.name][mask])})
        rows.append({**head, "task": t.name, "measure": "output_drift",
                     "value": output_drift(before[t.name], after[t.name], t.kind)})
        rows.append({**head, "task": t.name, "measure": "drift_pretrained",
                     "value": output_drift(pre_probe[t.name], after[t.name], t.kind)})
    counts = np.bincount(shown["item"], minlength=params["items"])
    for measure, value in (("click_rate", float(shown["click"].mean())), ("reward", float(np.mean(reward))),
                           ("coverage", float((counts > 0).mean())), ("gini", policy_report.gini(counts))):
        rows.append({**head, "task": "all", "measure": measure, "value": value})
    return rows


def resolve(config: RunConfig) -> RunConfig:
    """``config``, checked: the ``recsim`` suite, one world, valid options, simulator parameters and architectures.

    Raises:
        UserInputError: Otherwise.
    """
    if config.suite != "recsim":
        raise UserInputError(f"experiment {experiments.POLICY!r} needs the recsim suite. Received: suite={config.suite!r}")
    world, _ = split_params(config)
    recsim.Simulator(0, **world)  # checks the parameters before anything is written
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
    in_process: bool = False,
    executor: Executor | None = None,
) -> Path:
    """Runs every architecture × seed × arm; writes ``policy.csv`` and ``policy.md``.

    Args:
        config: The configuration (``experiment = "policy"``).
        out: The run directory; default ``<runs_root>/<run-id>``. It must not exist or be empty.
        runs_root: Parent of generated run directories.
        progress: Stream for the progress bar, or None.
        in_process: Run the architecture × seed pairs in this process (see :func:`mtl_bench.experiments.grid.run`).
        executor: Where the pairs run (default a local pool of ``config.jobs`` workers); results do not depend on it.

    Raises:
        UserInputError: For an invalid configuration (nothing is written then).
    """
    config = resolve(config)
    where = executor_lib.ready(executor, jobs=config.jobs, in_process=in_process)
    out = rundir.new_dir(config, out, runs_root)
    io.write_text(out / experiments.CONFIG, config.to_toml())
    return _execute(config, out, rundir.start(out, config, config_sha256=rundir.config_digest(config)), progress, where)


def resume(run_dir: str | Path, *, progress: TextIO | None = sys.stderr, in_process: bool = False,
           executor: Executor | None = None) -> Path:
    """Continues the experiment in ``run_dir``: finished architecture × seed pairs are kept, the others run."""
    run_dir = Path(run_dir)
    config = resolve(RunConfig.from_toml(run_dir / experiments.CONFIG))
    where = executor_lib.ready(executor, jobs=config.jobs, in_process=in_process)
    manifest = rundir.restart(run_dir, config)  # writes a manifest into a directory that has none
    rundir.check_unchanged(run_dir, manifest, config)
    return _execute(config, run_dir, manifest, progress, where)


def _pair_file(out: Path, pair: tuple[str, int], stem: str) -> Path:
    arch, seed = pair
    return out / PAIRS_DIR / f"{arch}__s{seed}.{stem}.csv"


def _run_pair(config: RunConfig, pair: tuple[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return run_arms(config, *pair)


def _pair_died(pair: tuple[str, int], reason: str) -> Any:
    raise RunStopped(f"policy pair {pair[0]} seed {pair[1]}: {reason}; the finished pairs are kept: continue with "
                     "--resume")


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:  # a pair without rows of this kind (no columns either)
        return pd.DataFrame()


def _execute(config: RunConfig, out: Path, manifest: dict[str, Any], progress: TextIO | None,
             where: Executor) -> Path:
    with rundir.recorded(out, manifest):
        pairs = plan(config)
        bar = executor_lib.Progress(len(pairs), progress)
        pending = []
        for pair in pairs:
            if _pair_file(out, pair, "policy").is_file():
                bar.update(f"policy: {pair[0]} seed {pair[1]} (done before)")
            else:
                pending.append(pair)

        def record(pair: tuple[str, int], result: tuple[pd.DataFrame, pd.DataFrame]) -> None:
            rows, updates = result
            with executor_lib.uninterruptible():
                io.write_csv(_pair_file(out, pair, "updates"), updates)
                io.write_csv(_pair_file(out, pair, "policy"), rows)  # last: its presence marks the pair done
            bar.update(f"policy: {pair[0]} seed {pair[1]}")

        if isinstance(where, executor_lib.InProcess):
            tf.config.experimental.enable_op_determinism()
        where.run(functools.partial(_run_pair, config), pending, record, initializer=cells.init_worker,
                  failed=_pair_died)
        frame = pd.concat([_read(_pair_file(out, pair, "policy")) for pair in pairs], ignore_index=True)
        updates = pd.concat([_read(_pair_file(out, pair, "updates")) for pair in pairs], ignore_index=True)
        io.write_csv(out / "policy.csv", frame)
        io.write_csv(out / "policy_updates.csv", updates)
        table = policy_report.summarize(frame, updates)
        io.write_csv(out / "policy_summary.csv", table)
        io.write_text(out / "policy.md", policy_report.describe(table))
    return out


def summary(run_dir: Path) -> str:
    """The closing summary: ``policy.md``."""
    path = run_dir / "policy.md"
    return path.read_text() if path.is_file() else ""


def runs(run_dir: Path) -> list[Path]:
    """No grid runs: ``mtl-bench report`` prints the summary only."""
    return []


__all__ = ["ARMS", "CANDIDATES", "OPTIONS", "Options", "plan", "resolve", "resume", "run", "run_arms", "split_params"]
