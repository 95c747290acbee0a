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


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (4, 9)])
def test_values_and_gradients_are_flaxs(hw, window, padding):
  x = jax.random.normal(jax.random.key(0), (2, *hw, 3))  # no ties: one gradient is right
  ours = lambda x: max_pool(x, window, padding)
  flax = lambda x: nn.max_pool(x, (window, window), strides=(window, window), padding=padding)
  np.testing.assert_array_equal(ours(x), flax(x))
  cotangent = jax.random.normal(jax.random.key(1), flax(x).shape)
  grad = lambda f: jax.vjp(f, x)[1](cotangent)[0]
  np.testing.assert_array_equal(grad(ours), grad(flax))


def test_tied_maxima_share_the_windows_gradient():
  g = jax.grad(lambda x: max_pool(x).sum())(jnp.zeros((1, 2, 2, 1)))
  np.testing.assert_allclose(g, np.full((1, 2, 2, 1), 0.25))


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


@pytest.mark.parametrize(
  "module, kwargs",
  [
    (noprop_model.ImageEncoder(conv_features=(4, 4, 4), hidden=8), {"train": False}),
    (classifier_model.CNN(channels=(4, 4), hidden=(8,), num_classes=3), {"train": False}),
    (contrastive_model.Encoder(arch="cnn", dim=8, channels=(4, 4)), {}),
  ],
  ids=["noprop", "classifier", "contrastive"],
)
def test_the_image_encoders_gradient_has_no_reduce_window(module, kwargs):
  """The speed of these steps on CPU rests on it (the module docstring of jaxrepr.nn.pooling)."""
  x = jnp.ones((2, 8, 8, 1))
  params = module.init(jax.random.key(0), x, **kwargs)
  loss = lambda p: jnp.sum(module.apply(p, x, **kwargs))
  names = _primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
  assert not {n for n in names if "reduce_window" in n or "select_and_scatter" in n}, names
