"""NoProp inference (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1).

Every predictor returns {'logits': (B, m), 'label': int32 (B,)}, no dropout, and reads batch['mask']
(when present) only for the batch statistics of norm='batch' (see model.py).

DT (Eq. 3): z_0 ~ N(0, I); z_t = a_t uhat_t(z_{t-1}, x) + b_t z_{t-1} + sqrt(c_t) eps_t for t = 1..T;
  logits = classifier(z_T). The paper's step is stochastic; `model.deterministic=True` drops the
  sqrt(c_t) eps_t term (one reimplementation reports that helps early accuracy).
CT: the paper simulates 1000 steps without giving the discretisation. We integrate the
  probability-flow (DDIM) ODE of q(z_t|y) = N(s_t u, sigma_t^2 I), s_t = sqrt(abar_t),
  sigma_t = sqrt(1 - abar_t), with the prediction uhat in place of u:
      dz/dt = s'_t uhat + sigma'_t (z - s_t uhat) / sigma_t,
  from z_0 ~ N(0, I) at t = 0 to t = 1 with `model.solver` ('euler' | 'heun') and
  `model.inference_steps` steps; logits = classifier(z_1).
Back-prop baseline: the chained blocks of loss.chain_logits, logits = classifier(z_T).
FM: dz/dt = v(z, x, t) from t = 0 to 1 with the same solvers; the prediction is the class whose
  embedding is nearest to z_1 (paper §2.3.2), returned as logits = -|z_1 - u_c|^2.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxrepr.methods.noprop import model as model_lib
from jaxrepr.methods.noprop import schedules
from jaxrepr.methods.noprop.loss import Spec, chain_logits, check_batch
from jaxrepr.errors import ConfigError


def _out(logits_BxM: jax.Array) -> dict[str, jax.Array]:
  return {"logits": logits_BxM, "label": jnp.argmax(logits_BxM, axis=-1).astype(jnp.int32)}


def _mask(batch: dict[str, jax.Array]):
  return batch.get("mask", None)


def dt_predict(spec: Spec, params: dict, batch: dict[str, jax.Array],
               rng: jax.Array) -> dict[str, jax.Array]:
  check_batch(batch)
  x = batch["image"]
  mask_B = _mask(batch)
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  block = spec.block(x.shape[1:])
  k0, k_steps = jax.random.split(rng)
  z_BxD = jax.random.normal(k0, (x.shape[0], w_MxD.shape[1]), jnp.float32)
  coef = {k: jnp.asarray(getattr(spec.sched, k)[1:], jnp.float32) for k in ("a", "b", "c")}
  keys = jax.random.split(k_steps, spec.num_blocks)

  def step(z_BxD, inputs):
    params_t, a, b, c, key = inputs
    logits = block.apply({"params": params_t}, z_BxD, x, train=False, mask_B=mask_B)
    uhat_BxD = jax.nn.softmax(logits, axis=-1) @ w_MxD
    z_BxD = a * uhat_BxD + b * z_BxD
    if not spec.deterministic:
      z_BxD = z_BxD + jnp.sqrt(c) * jax.random.normal(key, z_BxD.shape, z_BxD.dtype)
    return z_BxD, None

  z_BxD, _ = jax.lax.scan(step, z_BxD, (params["blocks"], coef["a"], coef["b"], coef["c"], keys))
  return _out(spec.classifier().apply({"params": params["classifier"]}, z_BxD))


def integrate(field: Callable[[jax.Array, jax.Array], jax.Array], z0_BxD: jax.Array, steps: int,
              solver: str) -> jax.Array:
  """Integrates dz/dt = field(z, t) from t = 0 to 1 with `steps` Euler or Heun steps."""
  if solver not in ("euler", "heun"):
    raise ConfigError(f"config.model.solver={solver!r} is not one of ('euler', 'heun')")
  if steps < 1:
    raise ConfigError(f"config.model.inference_steps must be >= 1, got {steps}")
  h = 1.0 / steps

  def step(k, z_BxD):
    t = k.astype(jnp.float32) * h
    k1 = field(z_BxD, t)
    if solver == "euler":
      return z_BxD + h * k1
    k2 = field(z_BxD + h * k1, t + h)
    return z_BxD + 0.5 * h * (k1 + k2)

  return jax.lax.fori_loop(0, steps, step, z0_BxD)


def ct_predict(spec: Spec, params: dict, batch: dict[str, jax.Array],
               rng: jax.Array) -> dict[str, jax.Array]:
  check_batch(batch)
  x = batch["image"]
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  net = spec.net(x.shape[1:])
  gamma_fn = lambda t: spec.gamma().apply({"params": params["schedule"]}, t)
  scale_fn = lambda t: jnp.sqrt(schedules.ct_abar(gamma_fn(t)))        # s_t
  noise_fn = lambda t: jnp.sqrt(1.0 - schedules.ct_abar(gamma_fn(t)))  # sigma_t

  def field(z_BxD, t):
    t_B = jnp.full((z_BxD.shape[0],), t, jnp.float32)
    logits = net.apply({"params": params["net"]}, z_BxD, x, t_B, train=False)
    uhat_BxD = jax.nn.softmax(logits, axis=-1) @ w_MxD
    s, ds = jax.jvp(scale_fn, (t,), (jnp.ones_like(t),))
    sig, dsig = jax.jvp(noise_fn, (t,), (jnp.ones_like(t),))
    return ds * uhat_BxD + dsig * (z_BxD - s * uhat_BxD) / sig

  z0_BxD = jax.random.normal(rng, (x.shape[0], w_MxD.shape[1]), jnp.float32)
  z1_BxD = integrate(field, z0_BxD, spec.inference_steps, spec.solver)
  return _out(spec.classifier().apply({"params": params["classifier"]}, z1_BxD))


def nearest_embedding_logits(z_BxD: jax.Array, w_MxD: jax.Array) -> jax.Array:
  return -jnp.sum(jnp.square(z_BxD[:, None, :] - w_MxD[None, :, :]), axis=-1)


def fm_predict(spec: Spec, params: dict, batch: dict[str, jax.Array],
               rng: jax.Array) -> dict[str, jax.Array]:
  check_batch(batch)
  x = batch["image"]
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  net = spec.net(x.shape[1:])

  def field(z_BxD, t):
    t_B = jnp.full((z_BxD.shape[0],), t, jnp.float32)
    return net.apply({"params": params["net"]}, z_BxD, x, t_B, train=False) @ w_MxD

  z0_BxD = jax.random.normal(rng, (x.shape[0], w_MxD.shape[1]), jnp.float32)
  z1_BxD = integrate(field, z0_BxD, spec.inference_steps, spec.solver)
  return _out(nearest_embedding_logits(z1_BxD, w_MxD))


def backprop_predict(spec: Spec, params: dict, batch: dict[str, jax.Array],
                     rng: jax.Array) -> dict[str, jax.Array]:
  """The chained back-prop baseline (loss.chain_logits) without dropout, from z_0 ~ N(0, I)."""
  check_batch(batch)
  return _out(chain_logits(spec, params, batch, rng, train=False))


PREDICTORS = {"dt": dt_predict, "ct": ct_predict, "fm": fm_predict, "backprop": backprop_predict}
