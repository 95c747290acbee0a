"""jaxrepr.nn.pooling.max_pool: flax's max_pool values and gradients without its reduce_window, in
the image encoders that the train steps differentiate."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods.classifier import model as classifier_model
from jaxrepr.methods.contrastive import model as contrastive_model
from jaxrepr.methods.noprop import model as noprop_model
from jaxrepr.nn.pooling import max_pool


def _flax_pool(window, padding):
  return lambda x: nn.max_pool(x, (window, window), strides=(window, window), padding=padding)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (4, 9)])
@pytest.mark.parametrize("ties", [False, True])
def test_values_and_gradients_are_flaxs(hw, window, padding, ties):
  x = jax.random.normal(jax.random.key(0), (2, *hw, 3))
  if ties:  # few distinct values: most windows tie for their maximum, zeros and positives alike
    x = jnp.maximum(jnp.round(x), 0.0)
  ours, flax = (lambda x: max_pool(x, window, padding)), _flax_pool(window, padding)
  np.testing.assert_array_equal(ours(x), flax(x))
  cotangent = jax.random.normal(jax.random.key(1), flax(x).shape)
  grad = lambda f: jax.vjp(f, x)[1](cotangent)[0]
  np.testing.assert_array_equal(grad(ours), grad(flax))


def test_a_tied_window_sends_its_gradient_to_the_first_maximum_as_flax_does():
  x = jnp.array([[0.0, 2.0], [2.0, 2.0]]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: max_pool(x).sum())(x)
  np.testing.assert_array_equal(g.reshape(2, 2), [[0.0, 1.0], [0.0, 0.0]])


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="NHWC"):
    max_pool(jnp.zeros((2, 4, 4)))
  with pytest.raises(ValueError, match="padding"):
    max_pool(jnp.zeros((1, 4, 4, 1)), padding="FULL")


def _primitives(jaxpr) -> set[str]:
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      names |= _primitives(sub)
  return names


_ENCODERS = [
  (
    noprop_model,
    lambda dtype: noprop_model.ImageEncoder(conv_features=(4, 4, 4), hidden=8, dtype=dtype),
    {"train": False},
  ),
  (
    classifier_model,
    lambda dtype: classifier_model.CNN(channels=(4, 4, 4), hidden=(8,), num_classes=3, dtype=dtype),
    {"train": False},
  ),
  (
    contrastive_model,
    lambda dtype: contrastive_model.Encoder(arch="cnn", dim=8, channels=(4, 4, 4)),
    {},
  ),
]
_IDS = ["noprop", "classifier", "contrastive"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("models, make, kwargs", _ENCODERS, ids=_IDS)
def test_each_encoder_pools_as_it_did_with_flax(monkeypatch, models, make, kwargs, dtype):
  """On 30x30 images (a pool of 15 rows, where 'SAME' and 'VALID' differ) and in bfloat16 (where
  ties are common): the encoder's output and gradient are those of flax's max_pool with the
  padding the encoder used before."""
  module, x = make(dtype), jax.random.uniform(jax.random.key(0), (4, 30, 30, 1))
  params = module.init(jax.random.key(1), x, **kwargs)
  run = lambda p: module.apply(p, x, **kwargs)
  value, grads = run(params), jax.grad(lambda p: jnp.sum(run(p).astype(jnp.float32)))(params)
  padding = "SAME" if models is noprop_model else "VALID"
  monkeypatch.setattr(models, "max_pool", lambda h, k, *a: _flax_pool(k, padding)(h))
  np.testing.assert_array_equal(run(params), value)
  flax_grads = jax.grad(lambda p: jnp.sum(run(p).astype(jnp.float32)))(params)
  jax.tree.map(np.testing.assert_array_equal, grads, flax_grads)


@pytest.mark.parametrize("models, make, kwargs", _ENCODERS, ids=_IDS)
def test_the_image_encoders_gradient_has_no_reduce_window(models, make, kwargs):
  """The speed of these steps on CPU rests on it (the module docstring of jaxrepr.nn.pooling)."""
  module, x = make(jnp.float32), jnp.ones((2, 8, 8, 1))
  params = module.init(jax.random.key(0), x, **kwargs)
  loss = lambda p: jnp.sum(module.apply(p, x, **kwargs))
  names = _primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  assert not {n for n in names if "reduce_window" in n or "select_and_scatter" in n}, names
