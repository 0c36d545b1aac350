"""ESMM: pCTCVR = pCTR x pCVR by construction, its variable ownership, bad arguments, round trip, and a fit on recsim."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtl_bench.engine.training import Trainer, predict
from mtl_bench.models import ARCHITECTURES, ESMM
from mtl_bench.spec import Task
from mtl_bench.tasks import recsim

TASKS = (Task("click", "click", "binary"), Task("conversion", "conversion", "binary", depends_on="click"),
         Task("dwell", "dwell", "regression"))


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_ctcvr_is_ctr_times_the_cvr_tower(spec, batch):
    model = ESMM(spec, TASKS)
    out = {k: _np(v) for k, v in model(batch).items()}
    hidden = model.input_block(batch)
    ctr = _np(model.towers[0](hidden))
    cvr = _np(model.towers[1](hidden))
    np.testing.assert_allclose(out["click"], ctr, rtol=1e-6)
    np.testing.assert_allclose(out["conversion"], ctr * cvr, rtol=1e-6)
    np.testing.assert_allclose(_np(model.conversion_rate(batch)), cvr, rtol=1e-6)
    assert np.all(out["conversion"] <= out["click"])
    np.testing.assert_allclose(out["dwell"], _np(model.towers[2](hidden)), rtol=1e-6)


def test_the_ctr_tower_is_shared(spec):
    model = ESMM(spec, TASKS)
    shared = {id(v) for v in model.shared_variables}
    ctr = {id(v) for v in model.towers[0].trainable_variables}
    assert ctr and ctr <= shared
    assert model.task_variables["click"] == []
    assert {id(v) for v in model.task_variables["conversion"]} == {id(v) for v in model.towers[1].trainable_variables}


@pytest.mark.parametrize(
    "kw, needle",
    [({"ctr_task": "view"}, "ctr_task"), ({"ctcvr_task": "dwell"}, "ctcvr_task"),
     ({"ctr_task": "click", "ctcvr_task": "click"}, "ctcvr_task")],
)
def test_bad_task_names_raise(spec, kw, needle):
    with pytest.raises(ValueError, match=f"{needle}.*Received: {needle}="):
        ESMM(spec, TASKS, **kw)


def test_keras_round_trip(spec, batch, tmp_path):
    model = ESMM(spec, TASKS, ctr_task="click", ctcvr_task="conversion", tower_units=4)
    before = {k: _np(v) for k, v in model(batch).items()}
    model.save(tmp_path / "esmm.keras")
    restored = keras.models.load_model(tmp_path / "esmm.keras")
    assert isinstance(restored, ESMM) and restored.get_config()["ctcvr_task"] == "conversion"
    for k, v in restored(batch).items():
        np.testing.assert_allclose(_np(v), before[k], rtol=1e-6)


def test_registered():
    assert ARCHITECTURES["esmm"] is ESMM


@pytest.mark.slow
def test_fit_on_recsim_click_and_conversion():
    data = recsim.load(seed=0, days=6, impressions_per_day=3000)
    keras.utils.set_random_seed(0)
    model = ESMM(data.features, data.tasks)
    Trainer(model, data.tasks, learning_rate=0.01, seed=0).fit(data.train, data.validation, epochs=4, batch_size=256, seed=0)
    pred = predict(model, data.test)
    assert np.all(pred["conversion"] <= pred["click"])
    # recsim's labels are noisy (shared-bottom and MMoE reach AUC 0.59-0.60 here); 3000 test rows: AUC SE ~0.01.
    for task in ("click", "conversion"):
        assert roc_auc_score(data.test.labels[task], pred[task]) > 0.55, task
    # Trained on the entire space, pCTCVR is calibrated to the conversion rate of all impressions (0.106).
    rate = data.test.labels["conversion"].mean()
    assert abs(pred["conversion"].mean() - rate) < 0.2 * rate


def test_the_pair_comes_from_depends_on_or_must_be_named(spec):
    """The conditional task is the one that declares depends_on; without a declaration both names are needed."""
    assert (ESMM(spec, TASKS).ctr_task, ESMM(spec, TASKS).ctcvr_task) == ("click", "conversion")
    plain = (Task("view", "view", "binary"), Task("buy", "buy", "binary"))
    with pytest.raises(ValueError, match=r"ESMM: ctcvr_task must be set .* declared: \{\}. Received: ctcvr_task=''"):
        ESMM(spec, plain)
    model = ESMM(spec, plain, ctr_task="view", ctcvr_task="buy")
    assert (model.ctr_task, model.ctcvr_task) == ("view", "buy")
