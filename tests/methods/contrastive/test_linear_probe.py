"""The linear-probe evaluator (jaxrepr/evaluators/linear_probe.py) on fixed `embed` functions over
the embedded digits: raw pixels match scikit-learn's logistic regression with the same penalty,
features that are the label give accuracy 1, features independent of the label give chance, the
result is the same on 1 and 8 devices, and a method without `embed` is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import parallel
from jaxrepr.data import images
from jaxrepr.evaluators import linear_probe
from jaxrepr.methods.base import Method
from tests.core.helpers import load_config


def _method(embed):
  return Method(init=None, loss=None, predict=None, embed=embed)


def _pixels(params, batch):
  del params
  return batch["image"].reshape((batch["image"].shape[0], -1))


def _probe(embed, devices=1, **fields):
  config = load_config("classifier")
  mesh = parallel.make_mesh(devices)
  ev = linear_probe.Evaluator(
    config=config, method=_method(embed), mesh=mesh, workdir="", batch_size=512, **fields
  )
  with jax.set_mesh(mesh):
    return ev.run(None, jax.random.key(0), 0), config


def test_probe_on_pixels_matches_scikit_learn():
  from sklearn.linear_model import LogisticRegression

  l2 = 1e-2
  out, config = _probe(_pixels, steps=300, l2=l2)
  train, test = images.load(config.data, "train"), images.load(config.data, "test")
  x_tr, x_te = (a["image"].reshape(len(a["image"]), -1) for a in (train, test))
  mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
  # sklearn minimises C sum CE + ||W||^2 / 2, i.e. mean CE + ||W||^2 / (2 C N)
  clf = LogisticRegression(C=1.0 / (l2 * len(x_tr)), max_iter=2000)
  clf.fit((x_tr - mean) / std, train["label"])
  want = clf.score((x_te - mean) / std, test["label"])
  assert abs(out["accuracy"] - want) < 0.015, (out, want)
  assert out["accuracy"] > 0.9 and out["train_accuracy"] >= out["accuracy"] - 0.01
  # a fraction of the real test rows: the padded rows of the last batch do not count
  hits = out["accuracy"] * len(x_te)
  assert len(x_te) % 512 and abs(hits - round(hits)) < 1e-3, hits


def test_probe_reaches_one_on_the_label_and_chance_on_noise():
  def label(params, batch):
    return jax.nn.one_hot(batch["label"], 10)

  def noise(params, batch):
    key = jax.random.key(7)
    return jax.random.normal(key, (batch["label"].shape[0], 4)) + 0 * batch["image"][:, 0, 0]

  assert _probe(label, steps=50)[0]["accuracy"] == 1.0
  out = _probe(noise, steps=50)[0]
  assert out["accuracy"] < 0.2, out  # ten classes


@pytest.mark.heavy
def test_probe_is_the_same_on_one_and_eight_devices():
  one = _probe(_pixels, devices=1, steps=30, max_train=1024)[0]
  eight = _probe(_pixels, devices=8, steps=30, max_train=1024)[0]
  np.testing.assert_allclose(eight["accuracy"], one["accuracy"], atol=1 / 300)
  np.testing.assert_allclose(eight["cross_entropy"], one["cross_entropy"], rtol=1e-3)


def test_probe_refuses_a_method_without_embed():
  config = load_config("classifier")
  with pytest.raises(ValueError, match="has no embed hook"):
    linear_probe.Evaluator(
      config=config, method=_method(None), mesh=parallel.make_mesh(1), workdir=""
    )
  assert jnp.zeros(()).dtype == jnp.float32
