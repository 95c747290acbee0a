"""CT's denoising weight (`model.ct_weight`) is the function of t it names, in the loss the train
step differentiates: SNR'(t) (the paper's Eq. 9), -gamma'(t) = SNR'(t) / SNR(t), or 1.

With one example per batch the denoising term is (eta / 2) w(t) |uhat - u_y|^2, and the sampled t
and |uhat - u_y|^2 do not depend on the weighting, so the ratio of two weightings' terms is the
ratio of their weights at that t, compared here with finite differences of the learned schedule."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxrepr.data import images
from jaxrepr.methods import noprop
from jaxrepr.methods.noprop import schedules


@functools.cache
def _one_digit():
  d = images.load(images.default_config("digits"), "train")
  return {"image": jnp.asarray(d["image"][:1]), "label": jnp.asarray(d["label"][:1])}


def _denoise(weight, seed):
  mc = noprop.default_model_config("ct")
  mc.update(
    dict(
      conv_features=(4, 4, 4), hidden=8, head_hidden=8, gamma_hidden=8, time_dim=8, ct_weight=weight
    )
  )
  method = noprop.build(ml_collections.ConfigDict({"model": mc, "precision": "float32"}))
  batch = _one_digit()
  params = method.init(jax.random.key(0), batch)
  rng = jax.random.key(seed)
  return float(method.loss(params, batch, rng)[1]["denoise"]), params, rng, mc


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ct_weights_are_the_named_functions_of_t(seed):
  uniform, params, rng, mc = _denoise("uniform", seed)
  snr_prime = _denoise("snr_prime", seed)[0]
  neg_gamma_prime = _denoise("neg_gamma_prime", seed)[0]
  # The loss draws t from the first of its four keys (loss.ct_loss).
  t = float(jax.random.uniform(jax.random.split(rng, 4)[0], (1,), jnp.float32)[0])
  gamma = schedules.GammaNetwork(mc.gamma_hidden, mc.gamma_0, mc.gamma_1)
  gamma_at = lambda s: float(gamma.apply({"params": params["schedule"]}, jnp.float32(s)))
  h = 1e-3
  gamma_prime = (gamma_at(t + h) - gamma_at(t - h)) / (2 * h)
  snr_prime_fd = (np.exp(-gamma_at(t + h)) - np.exp(-gamma_at(t - h))) / (2 * h)
  assert gamma_prime < 0  # SNR increases with t
  np.testing.assert_allclose(neg_gamma_prime / uniform, -gamma_prime, rtol=2e-2)
  np.testing.assert_allclose(snr_prime / uniform, snr_prime_fd, rtol=2e-2)


def test_an_unknown_ct_weight_is_named():
  mc = noprop.default_model_config("ct")
  mc.ct_weight = "snr"
  with pytest.raises(ValueError, match=r"config.model.ct_weight='snr' is invalid"):
    noprop.build(ml_collections.ConfigDict({"model": mc, "precision": "float32"}))
