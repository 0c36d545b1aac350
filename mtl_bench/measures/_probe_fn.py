"""The probe event's one compiled function: per-task losses and gradients on the probe batch's halves, their
Gram matrices, the affinity step; and the detection of shared variables. The arithmetic on the results is in
:mod:`~mtl_bench.measures.gradients`, the callback around it in :mod:`~mtl_bench.measures.probe`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.measures._model import name_outputs


def detect_shared(model: keras.Model, names: Sequence[str], loss_fns: list, x: dict, ys: list) -> list:
    """Trainable variables with a non-zero gradient from two or more task losses on the probe batch."""
    trainable = list(model.trainable_variables)
    with tf.GradientTape(persistent=True) as tape:
        out = name_outputs(model(x, training=False), model, names)
        losses = [fn(y, out[n]) for n, fn, y in zip(names, loss_fns, ys)]
    users = np.zeros(len(trainable), int)
    for loss in losses:
        grads = tape.gradient(loss, trainable)
        for k, g in enumerate(grads):
            if g is not None and bool(tf.reduce_any(tf.convert_to_tensor(g) != 0)):
                users[k] += 1
    del tape
    return [v for v, u in zip(trainable, users) if u >= 2]


def make_probe_fn(
    model: keras.Model, names: Sequence[str], loss_fns: list, shared: list, has_gates: bool, with_grads: bool
):
    """The probe event's computation, a :func:`tf.function` of ``(x, ys, lr)`` capturing ``model``'s variables.

    It returns ``losses`` (``(T,)``), ``preds`` and, with shared variables, ``grams`` (``(variables, T, T)``,
    float64), ``half_grams`` (``(variables, 2T, 2T)``: half A's gradients first, then half B's; not when the
    batch has one row), ``after`` (``after[i, j]``: task ``j``'s loss after one SGD step of ``lr * g_i`` on
    the shared variables, which are then restored) and, ``with_grads``, ``grads`` (per task, the full-batch
    gradient on each shared variable); with ``has_gates``, ``gates``.
    """
    num_tasks = len(names)

    def task_losses(x, ys):
        out = name_outputs(model(x, training=False), model, names)
        preds = [out[n] for n in names]
        # A loss given by name is a bare function returning per-example values: reduce it as fit does.
        return [keras.ops.mean(fn(y, p)) for fn, y, p in zip(loss_fns, ys, preds)], preds

    def gradients(tape, loss):
        zero = tf.UnconnectedGradients.ZERO
        # Through the tf.Variable: TF's zero fill fails on a Keras variable (a task ESMM's CTR tower does not reach).
        sources = [getattr(v, "value", v) for v in shared]
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, sources, unconnected_gradients=zero)]

    def gram(rows):
        """Per shared variable, the float64 Gram matrix of ``rows`` (a list of per-variable gradient lists)."""
        grams = []
        for k in range(len(shared)):
            flat = tf.stack([tf.reshape(tf.cast(r[k], tf.float64), [-1]) for r in rows])
            grams.append(tf.matmul(flat, flat, transpose_b=True))
        return tf.stack(grams)

    def probe_fn(x, ys, lr):
        result = {}
        if shared:
            # Half A is the first ceil(n/2) rows, half B the rest; the shape is static in each trace.
            n = int(ys[0].shape[0])
            n_a = (n + 1) // 2
            n_b = n - n_a
            parts = [(0, n_a), (n_a, n)] if n_b else [(0, n)]
            with tf.GradientTape(persistent=True) as tape:
                per_part = [
                    task_losses({k: v[lo:hi] for k, v in x.items()}, [y[lo:hi] for y in ys]) for lo, hi in parts
                ]
            half = [[gradients(tape, loss) for loss in losses] for losses, _ in per_part]
            del tape
            if n_b:
                (losses_a, preds_a), (losses_b, preds_b) = per_part
                # The losses are means over the rows: the full-batch values follow exactly from the halves.
                losses = [(n_a * la + n_b * lb) / n for la, lb in zip(losses_a, losses_b)]
                preds = [tf.concat([pa, pb], 0) for pa, pb in zip(preds_a, preds_b)]
                grads = [
                    [(n_a * ga + n_b * gb) / n for ga, gb in zip(half[0][i], half[1][i])] for i in range(num_tasks)
                ]
                half_grams = gram(half[0] + half[1])  # (variables, 2T, 2T): A rows first, then B rows
                result["half_grams"] = half_grams
                # Full-batch Gram from the halves in float64: g = M^T [g^A; g^B], M = [(n_a/n) I; (n_b/n) I].
                eye = tf.eye(num_tasks, dtype=tf.float64)
                mix = tf.concat([eye * (n_a / n), eye * (n_b / n)], 0)
                result["grams"] = tf.einsum("pi,vpq,qj->vij", mix, half_grams, mix)
            else:
                (losses, preds), grads = per_part[0], half[0]
                result["grams"] = gram(grads)
            if with_grads:
                result["grads"] = grads
            # Affinity lookahead: one SGD step of each task's gradient on the shared variables, then exact restore.
            saved = [tf.identity(v.value) for v in shared]
            after = []
            for i in range(num_tasks):
                for v, s, g in zip(shared, saved, grads[i]):
                    v.assign(s - tf.cast(lr, s.dtype) * tf.cast(g, s.dtype))
                after.append(tf.stack(task_losses(x, ys)[0]))
            for v, s in zip(shared, saved):
                v.assign(s)
            result["after"] = tf.stack(after)
        else:
            losses, preds = task_losses(x, ys)
        result["losses"] = tf.stack(losses)
        result["preds"] = preds
        if has_gates:
            result["gates"] = {k: tf.convert_to_tensor(v) for k, v in model.gates(x).items()}
        return result

    fn = tf.function(probe_fn)
    # One trace per model is by design (the function captures that model's variables); TF would
    # otherwise warn about "frequent retracing" of the same code once a run has built a few models.
    fn._omit_frequent_tracing_warning = True
    return fn
