"""NoProp evaluation (jaxrepr/evaluators/noprop.py, jaxrepr/methods/noprop/inference.py).

* Batch norm at evaluation: a test prediction depends on its own example, not on the other examples
  of its evaluation batch, once the evaluator adds its reference rows (the method keeps no running
  statistics).
* Inference runs: the evaluator averages 5 stochastic passes by default (paper, Table 1).
* Where a model is weak: per-block accuracy (DT) and per-time accuracy at t = 0, 0.5, 1 (CT/FM),
  each the network's own pick on an input drawn from the example's true label.
All through the function the evaluator jits (`Evaluator.predict`, `Evaluator.run`), on tiny models.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import config as config_lib, parallel
from jaxrepr.data import images
from jaxrepr.evaluators import noprop as noprop_eval
from tests.core.helpers import load_config


@functools.cache
def _setup(arg: str):
  config = load_config("noprop", arg)
  config.num_devices = 1
  method = config_lib.method_module(config).build(config)
  train = images.load(config.data, "train")
  batch = {k: jnp.asarray(v[:16]) for k, v in train.items()}
  params = jax.jit(method.init)(jax.random.key(0), batch)
  return config, method, params


def _test_set(config):
  return images.load(config.data, "test")


def _evaluator(config, method, **kw):
  kw = {"batch_size": 8, "inference_runs": 1, **kw}
  return noprop_eval.Evaluator(
    config=config, method=method, mesh=parallel.make_mesh(1), workdir="", **kw
  )


# --------------------------------------------------------------------------------- batch norm
def _random_classifier(params: dict) -> dict:
  """DT/CT classifiers start at zero (constant logits): a random one makes the logits show z."""
  kernel = params["classifier"]["kernel"]
  return dict(
    params,
    classifier=dict(
      params["classifier"], kernel=jax.random.normal(jax.random.key(3), kernel.shape)
    ),
  )


@pytest.mark.parametrize("variant", ["dt", "backprop"])
def test_a_prediction_does_not_depend_on_the_rest_of_its_evaluation_batch(variant):
  config, method, params = _setup(f"{variant},tiny")
  params = _random_classifier(params)
  test = _test_set(config)
  # Row 0 is the same example in both batches; rows 1..7 are different examples.
  rows_a, rows_b = np.arange(8), np.concatenate([[0], np.arange(100, 107)])
  batch = lambda rows: {
    "image": jnp.asarray(test["image"][rows]),  # noqa: E731
    "label": jnp.asarray(test["label"][rows]),
    "mask": jnp.ones((8,)),
  }
  rng = jax.random.key(7)
  outputs = {}
  for size in (32, 0):  # with reference rows, and the transductive fallback
    ev = _evaluator(config, method, reference_size=size)
    predict = jax.jit(ev.predict)
    outputs[size] = [predict(params, ev._reference, batch(rows), rng) for rows in (rows_a, rows_b)]
  (a, b), (a0, b0) = outputs[32], outputs[0]
  np.testing.assert_allclose(a["logits"][0], b["logits"][0], rtol=1e-6, atol=1e-6)
  for name in a.get("diagnostics", {}):
    assert int(a["diagnostics"][name][0]) == int(b["diagnostics"][name][0]), name
  # The same comparison sees the dependence when batch norm reads the evaluation batch.
  assert not np.allclose(a0["logits"][0], b0["logits"][0], rtol=1e-4, atol=1e-4)
  # And the reference rows are what changes the statistics: a different reference, other logits.
  assert not np.allclose(a["logits"][0], a0["logits"][0], rtol=1e-4, atol=1e-4)


def test_reference_rows_are_fixed_training_examples():
  config, method, _ = _setup("dt,tiny")
  train = images.load(config.data, "train")
  ref = noprop_eval.reference_rows(train, 32)
  again = noprop_eval.reference_rows(train, 32)
  np.testing.assert_array_equal(ref["reference_image"], again["reference_image"])
  assert ref["reference_image"].shape == (32,) + train["image"].shape[1:]
  assert len(np.unique(ref["reference_image"].reshape(32, -1), axis=0)) == 32
  assert noprop_eval.reference_rows(train, 0) is None
  with pytest.raises(ValueError, match="reference_size"):
    noprop_eval.reference_rows(train, len(train["label"]) + 1)
  with pytest.raises(ValueError, match="reference_size"):
    _evaluator(config, method, reference_size=-1)


# ----------------------------------------------------------------------------- inference runs
def test_five_inference_runs_by_default():
  config, _, _ = _setup("dt,tiny")
  assert inspect.signature(noprop_eval.Evaluator).parameters["inference_runs"].default == 5
  assert load_config("noprop").evals.test.inference_runs == 5
  calls = []

  class Counting:
    @staticmethod
    def predict(params, batch, rng):
      del params
      jax.debug.callback(lambda: calls.append(1))
      label = jax.random.randint(rng, batch["label"].shape, 0, 10)
      return {"logits": jax.nn.one_hot(label, 10), "label": label}

  ev = noprop_eval.Evaluator(
    config=config, method=Counting, mesh=parallel.make_mesh(1), workdir="", batch_size=64
  )
  with jax.set_mesh(parallel.make_mesh(1)):
    out = ev.run(None, jax.random.key(0), 0)
  batches = -(-len(_test_set(config)["label"]) // 64)
  assert len(calls) == 5 * batches
  assert out["accuracy_std"] > 0.0  # independent noise per run


# ------------------------------------------------------------------- per-block / per-time accuracy
def _force_class(dense: dict, k) -> dict:
  """A final Dense layer that outputs 100 * one_hot(k) whatever its input (k per leading slice)."""
  bias = 100.0 * jax.nn.one_hot(jnp.asarray(k), dense["bias"].shape[-1])
  return {"kernel": jnp.zeros_like(dense["kernel"]), "bias": bias.reshape(dense["bias"].shape)}


def _run(config, method, params, **kw):
  ev = _evaluator(config, method, batch_size=64, **kw)
  with jax.set_mesh(parallel.make_mesh(1)):
    return ev.run(params, jax.random.key(0), 0)


def test_dt_reports_each_block_on_its_own():
  config, method, params = _setup("dt,tiny")  # two blocks
  labels = _test_set(config)["label"]
  # Block 1 always says the class of test example 0 (the row that pads the last batch: padding
  # counted as correct would show), block 2 always another class.
  k1, k2 = int(labels[0]), (int(labels[0]) + 3) % 10
  blocks = dict(params["blocks"], Dense_5=_force_class(params["blocks"]["Dense_5"], [k1, k2]))
  out = _run(config, method, dict(params, blocks=blocks), inference_runs=2, reference_size=16)
  assert set(out) == {
    "accuracy",
    "accuracy_std",
    "cross_entropy",
    "accuracy_block1",
    "accuracy_block2",
  }
  # Each accuracy is its class's share of the test set.
  assert len(labels) % 64 != 0
  np.testing.assert_allclose(out["accuracy_block1"], np.mean(labels == k1), rtol=1e-6)
  np.testing.assert_allclose(out["accuracy_block2"], np.mean(labels == k2), rtol=1e-6)


def test_fm_reports_each_time_and_t1_reads_the_label():
  config, method, params = _setup("fm,tiny")  # sigma = 0, one-hot labels
  net = dict(params["net"], Dense_4=_force_class(params["net"]["Dense_4"], 6))
  out = _run(config, method, dict(params, net=net))
  labels = _test_set(config)["label"]
  assert {"accuracy_t0", "accuracy_t0.5", "accuracy_t1"} <= set(out)
  # The network's estimate of z_1 is z_t + (1 - t) v: v = 100 e_6 decides at t = 0 and 0.5; at
  # t = 1, z_1 = u_y on the exact path, whatever the network says.
  np.testing.assert_allclose(out["accuracy_t0"], np.mean(labels == 6), rtol=1e-6)
  np.testing.assert_allclose(out["accuracy_t0.5"], np.mean(labels == 6), rtol=1e-6)
  assert out["accuracy_t1"] == 1.0


def test_ct_reports_each_time():
  config, method, params = _setup("ct,tiny")
  net = dict(params["net"], Dense_4=_force_class(params["net"]["Dense_4"], 2))
  out = _run(config, method, dict(params, net=net))
  share = np.mean(_test_set(config)["label"] == 2)
  for t in ("t0", "t0.5", "t1"):
    np.testing.assert_allclose(out[f"accuracy_{t}"], share, rtol=1e-6)


def test_inference_does_not_read_the_labels():
  """The diagnostics draw from the true label; the prediction itself must not."""
  for arg in ("dt,tiny", "ct,tiny", "fm,tiny"):
    config, method, params = _setup(arg)
    params = _random_classifier(params) if "classifier" in params else params
    test = _test_set(config)
    batch = {
      "image": jnp.asarray(test["image"][:8]),
      "label": jnp.asarray(test["label"][:8]),
      "mask": jnp.ones((8,)),
    }
    shuffled = dict(batch, label=jnp.roll(batch["label"], 1))
    outs = [jax.jit(method.predict)(params, b, jax.random.key(1)) for b in (batch, shuffled)]
    np.testing.assert_array_equal(outs[0]["logits"], outs[1]["logits"])
