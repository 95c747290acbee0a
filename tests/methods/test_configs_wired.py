"""The NoProp and Set Transformer experiment configs train through the canonical trainer with their
evaluators (tiny variants, one device), and the evaluators report finite, meaningful numbers."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import config as config_lib, parallel, train
from jaxrepr.evaluators import noprop as noprop_eval, set_tasks as set_eval
from tests.core.helpers import load_config


def _train(name, arg, workdir):
  config = load_config(name, arg)
  config.num_devices = 1
  summary = train.train_and_evaluate(config, str(workdir))
  assert summary["step"] == config.train.steps
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == config.train.steps and all(math.isfinite(v) for v in losses)
  assert summary["eval"], "the config's evaluator did not run"
  assert all(math.isfinite(v) for v in summary["eval"].values()), summary["eval"]
  return config, summary["eval"]


# DT with the one-hot embedding runs in tests/core/test_config_defaults.py (the default) and
# tests/methods/test_methods_learn.py.
@pytest.mark.parametrize(
  "arg", ["ct,learned,tiny", "fm,prototype,tiny", "backprop,tiny", "classifier,tiny"]
)
def test_noprop_configs_train_and_evaluate(tmp_path, arg):
  _, results = _train("noprop", arg, tmp_path)
  assert 0.0 <= results["test/accuracy"] <= 1.0
  if "fm" not in arg:  # FM's logits are distances: no cross-entropy is reported for it
    assert results["test/cross_entropy"] > 0.0
  else:
    assert "test/cross_entropy" not in results


@pytest.mark.heavy
def test_set_clustering_config_reports_ll_against_the_oracle(tmp_path):
  _, results = _train("set_clustering", "tiny", tmp_path)
  # The oracle of the reference generator is about -1.47 per point (paper: -1.4726), noisy on 8
  # sets; two steps of a tiny model cannot reach it.
  assert -2.0 < results["test/oracle"] < -1.0
  assert results["test/ll"] < results["test/oracle"]
  np.testing.assert_allclose(
    results["test/gap"], results["test/oracle"] - results["test/ll"], rtol=1e-6
  )


def test_set_max_config_reports_mae(tmp_path):
  _, results = _train("set_max", "tiny", tmp_path)
  assert results["test/mae"] > 0.0


def test_config_defaults_follow_the_papers():
  dt, ct = load_config("noprop"), load_config("noprop", "ct,fashion_mnist")
  assert (dt.train.batch_size, dt.optim.lr, dt.optim.weight_decay) == (128, 1e-3, 1e-3)
  assert (dt.optim.name, ct.optim.name) == ("adamw", "adam")
  assert dt.model.num_blocks == 10 and ct.model.inference_steps == 1000
  assert ct.train.steps == 100 * 60000 // 128  # Table 3: 100 epochs
  clustering, max_reg = load_config("set_clustering"), load_config("set_max")
  assert clustering.train.batch_size == 10 and clustering.optim.lr == 1e-3
  assert (clustering.data.min_size, clustering.data.max_size) == (300, 599)
  assert (max_reg.train.batch_size, max_reg.train.steps, max_reg.optim.lr) == (128, 20000, 1e-3)
  for config in (dt, ct, clustering, max_reg):
    config_lib.validate(config)
  with pytest.raises(ValueError, match="choose at most one"):
    load_config("noprop", "dt,ct")
  with pytest.raises(ValueError, match="unknown variants"):
    load_config("set_max", "huge")


def test_set_clustering_model_has_the_reference_parameter_count():
  config = load_config("set_clustering")
  config.num_devices = 1
  method = config_lib.method_module(config).build(config)
  params = jax.eval_shape(
    method.init, jax.random.key(0), {"example_id": jnp.zeros((10,), jnp.int32)}
  )
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == 423172


class _FixedPredictor:
  """A method whose predict returns given outputs, to check the evaluators' arithmetic."""

  def __init__(self, predict):
    self.predict = predict


def test_noprop_eval_scores_the_predicted_label_with_padding_masked():
  config = load_config("noprop", "tiny")
  mesh = parallel.make_mesh(1)
  arrays = config_lib.data_module(config).eval_arrays(config.data, "test")
  n = len(arrays["label"])

  # Predict the true label on even rows and a wrong one on odd rows; the padded rows of the last
  # batch repeat row 0 (a correct one) and must not count.
  def predict(params, batch, rng):
    del params, rng
    wrong = jnp.arange(batch["label"].shape[0]) % 2 == 1
    label = jnp.where(wrong, (batch["label"] + 1) % 10, batch["label"])
    return {"logits": jax.nn.one_hot(label, 10) * 5.0, "label": label}

  # Odd rows are odd within each batch of 64 (an even size), so globally too.
  ev = noprop_eval.Evaluator(
    config=config,
    method=_FixedPredictor(predict),
    mesh=mesh,
    workdir="",
    batch_size=64,
    inference_runs=2,
  )
  with jax.set_mesh(mesh):
    out = ev.run(None, jax.random.key(0), 0)
  assert n % 64 != 0
  np.testing.assert_allclose(out["accuracy"], math.ceil(n / 2) / n, rtol=1e-6)
  assert out["accuracy_std"] == 0.0 and math.isfinite(out["cross_entropy"])
  with pytest.raises(ValueError, match="inference_runs"):
    noprop_eval.Evaluator(config=config, method=None, mesh=mesh, workdir="", inference_runs=0)


def test_set_eval_weights_sets_by_their_size():
  config = load_config("set_clustering", "tiny")
  config.data.size_per = "example"  # sets of different sizes within a batch
  mesh = parallel.make_mesh(1)

  # Per-set values equal to the set's size: the per-point mean is sum(n^2) / sum(n).
  def predict(params, batch, rng):
    del params, rng
    n_B = (batch["example_id"] % 7 + 1).astype(jnp.int32)
    v_B = n_B.astype(jnp.float32)
    return {"num_points": n_B, "ll": -v_B, "ll1": -v_B, "oracle_ll": jnp.zeros_like(v_B)}

  ev = set_eval.Evaluator(
    config=config,
    method=_FixedPredictor(predict),
    mesh=mesh,
    workdir="",
    num_batches=3,
    batch_size=4,
  )
  with jax.set_mesh(mesh):
    out = ev.run(None, jax.random.key(0), 0)
  ids = np.arange(12) + 2**30
  n = (ids % 7 + 1).astype(np.float64)
  np.testing.assert_allclose(out["ll"], -np.sum(n * n) / np.sum(n), rtol=1e-6)
  np.testing.assert_allclose(out["gap"], np.sum(n * n) / np.sum(n), rtol=1e-6)
  bad = load_config("noprop", "tiny")
  with pytest.raises(ValueError, match="config.data.name must be 'sets'"):
    set_eval.Evaluator(config=bad, method=None, mesh=mesh, workdir="")


@pytest.mark.parametrize("variant", ["dt", "ct", "fm"])
def test_noprop_method_configs_equal_the_noprop_variants(variant):
  for arg in (None, "mnist5k,learned"):
    got = load_config(f"noprop_{variant}", arg)
    want = load_config("noprop", ",".join([variant] + ([arg] if arg else [])))
    assert got.to_dict() == want.to_dict()
