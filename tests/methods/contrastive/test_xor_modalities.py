"""The XOR modalities of Symile's section 5.1 (jaxrepr/data/xor_modalities.py): the information
content and the Bayes accuracy by exact enumeration of the generator, the sampler against the
exact joint, and the zero-shot evaluator scoring the Bayes rule at the Bayes accuracy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import parallel
from jaxrepr.data import xor_modalities as xm
from jaxrepr.evaluators import contrastive_xor
from tests.core.helpers import load_config

P_HATS = (0.0, 0.1, 0.5, 0.9, 1.0)


@pytest.mark.parametrize("d_v", [1, 2, 3])
def test_information_content_by_exact_enumeration(d_v):
  for p in P_HATS:
    info = xm.information_bits(d_v, p)
    assert abs(info["I(a;b)"]) < 1e-9 and abs(info["I(b;c)"]) < 1e-9, (p, info)
    # b is a function of (a, c) exactly when the switch shows in c != a
    assert info["I(b;a,c)"] <= d_v + 1e-9
  ends = xm.information_bits(d_v, 0.0), xm.information_bits(d_v, 1.0)
  np.testing.assert_allclose([ends[0]["I(a;c)"], ends[1]["I(a;c)"]], [d_v, 0.0], atol=1e-9)
  np.testing.assert_allclose([ends[0]["I(b;a,c)"], ends[1]["I(b;a,c)"]], [0.0, d_v], atol=1e-9)
  np.testing.assert_allclose([ends[0]["TC"], ends[1]["TC"]], [d_v, d_v], atol=1e-9)
  assert xm.information_bits(d_v, 0.5)["TC"] < d_v - 0.1  # smaller in between
  increasing = [xm.information_bits(d_v, p)["I(b;a,c)"] for p in P_HATS]
  assert all(x < y for x, y in zip(increasing, increasing[1:]))


def test_total_correlation_at_one_bit_and_half():
  np.testing.assert_allclose(xm.information_bits(1, 0.5)["TC"], 0.5, atol=1e-12)


@pytest.mark.parametrize("d_v", [1, 2, 3])
def test_bayes_accuracy_by_exact_enumeration(d_v):
  for p in P_HATS + (0.3, 0.7):
    want = 2.0**-d_v + p * (1 - 2.0**-d_v)
    np.testing.assert_allclose(xm.bayes_accuracy_exact(d_v, p), want, rtol=1e-12)
    np.testing.assert_allclose(xm.bayes_accuracy(d_v, p), want, rtol=1e-12)
    assert math.isclose(sum(xm.exact_joint(d_v, p).values()), 1.0)


def test_sampler_follows_the_exact_joint():
  d_v, p, n = 2, 0.3, 200_000
  data = xm.sample(np.random.default_rng(0), n, d_v, p)
  counts: dict = {}
  for a, b, c in zip(*(data[k].astype(np.int8) for k in xm.MODALITIES)):
    key = (a.tobytes(), b.tobytes(), c.tobytes())
    counts[key] = counts.get(key, 0) + 1
  exact = xm.exact_joint(d_v, p)
  assert set(counts) <= set(exact)
  tv = 0.5 * sum(abs(counts.get(k, 0) / n - q) for k, q in exact.items())
  assert tv < 0.01, tv
  # the plug-in estimates of the pairwise informations are near 0 on the samples too
  emp = {k: v / n for k, v in counts.items()}
  h = {axes: xm.entropy_bits(emp, axes) for axes in ((0,), (1,), (2,), (0, 1), (1, 2))}
  assert h[(0,)] + h[(1,)] - h[(0, 1)] < 1e-3
  assert h[(1,)] + h[(2,)] - h[(1, 2)] < 1e-3


def test_splits_are_fixed_by_the_data_seed_and_disjoint_draws():
  cfg = xm.default_config(d_v=4, p_hat=0.5)
  cfg.train_size, cfg.test_size = 64, 64
  train, test = xm.load(cfg, "train"), xm.load(cfg, "test")
  np.testing.assert_array_equal(xm.load(cfg, "train")["a"], train["a"])
  assert not np.array_equal(train["a"], test["a"])
  assert train["a"].shape == (64, 4) and train["a"].dtype == np.float32
  cfg.p_hat = 1.5
  with pytest.raises(ValueError, match="config.data.p_hat"):
    xm.load(cfg, "train")


class _Predictor:
  """The representation r = 1 - 2v (one coordinate per bit, unnormalised): the MIP of (a, b, c) is
  sum_j (-1)^{a_j + b_j + c_j}, so the Symile argmax over b is a XOR c when c != a and the all-zero
  vector when c = a: the Bayes rule."""

  def predict(self, params, batch, rng):
    del params, rng
    return {"reps": {k: 1.0 - 2.0 * v for k, v in batch.items()}, "logit_scale": jnp.float32(1.0)}


@pytest.mark.parametrize("p_hat", [0.0, 0.5, 1.0])
def test_evaluator_scores_the_bayes_rule_at_the_bayes_accuracy(p_hat):
  config = load_config("contrastive_xor")
  config.data.update(dict(p_hat=p_hat, test_size=3000))
  mesh = parallel.make_mesh(1)
  ev = contrastive_xor.Evaluator(
    config=config, method=_Predictor(), mesh=mesh, workdir="", batch_size=512
  )
  with jax.set_mesh(mesh):
    out = ev.run(None, jax.random.key(0), 0)
  bayes = xm.bayes_accuracy(5, p_hat)
  assert out["bayes_accuracy"] == bayes and out["chance"] == 1 / 32
  sigma = math.sqrt(bayes * (1 - bayes) / 3000)
  assert abs(out["accuracy"] - bayes) <= 4 * sigma + 1e-9, (out, bayes)
  if p_hat == 1.0:
    assert out["accuracy"] == 1.0


def test_missing_modalities_in_training_only():
  cfg = xm.default_config(d_v=3, p_hat=1.0)
  cfg.update(dict(train_size=4000, test_size=500, missing_prob=0.2))
  train, test = xm.load(cfg, "train"), xm.load(cfg, "test")
  for k in xm.MODALITIES:
    missing = train[k][:, -1] == 1.0
    assert train[k].shape == (4000, 4) and abs(missing.mean() - 0.2) < 0.03
    assert np.all(train[k][missing, :3] == 0.5)
    assert set(np.unique(train[k][~missing, :3])) <= {0.0, 1.0}
    assert test[k].shape == (500, 4) and np.all(test[k][:, -1] == 0.0)
  both = (train["a"][:, -1] == 1) & (train["b"][:, -1] == 1)
  assert 0.02 < both.mean() < 0.07  # independent per modality: about 0.04


def test_evaluator_on_the_missing_variant_scores_observed_candidates():
  config = load_config("contrastive_xor", "missing")
  config.data.update(dict(p_hat=1.0, test_size=1000))
  mesh = parallel.make_mesh(1)
  ev = contrastive_xor.Evaluator(
    config=config, method=_Predictor(), mesh=mesh, workdir="", batch_size=500
  )
  with jax.set_mesh(mesh):
    assert ev.run(None, jax.random.key(0), 0)["accuracy"] == 1.0
