"""NoProp inference (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1).

Every predictor returns {'logits': (B, m), 'label': int32 (B,)} without dropout; DT, CT and FM add
'diagnostics': {name: int32 (B,)}, the class each network picks on its own at one time (below).

DT (Eq. 3): z_0 ~ N(0, I); z_t = a_t uhat_t(z_{t-1}, x) + b_t z_{t-1} + sqrt(c_t) eps_t for
  t = 1..T; logits = classifier(z_T). The paper's step is stochastic; `model.deterministic=True`
  drops the sqrt(c_t) eps_t term (one reimplementation reports that helps early accuracy).
CT: the paper simulates 1000 steps without giving the discretisation. We integrate the
  probability-flow (DDIM) ODE of q(z_t|y) = N(s_t u, sigma_t^2 I), s_t = sqrt(abar_t),
  sigma_t = sqrt(1 - abar_t), with the prediction uhat in place of u:
      dz/dt = s'_t uhat + sigma'_t (z - s_t uhat) / sigma_t,
  from z_0 ~ N(0, I) at t = 0 to t = 1 with `model.solver` ('euler' | 'heun') and
  `model.inference_steps` steps; logits = classifier(z_1).
Back-prop baseline: the chained blocks of loss.chain_logits, logits = classifier(z_T).
FM: dz/dt = v(z, x, t) from t = 0 to 1 with the same solvers; the prediction is the class whose
  embedding is nearest to z_1 (paper §2.3.2), returned as logits = -|z_1 - u_c|^2.

Batch norm at evaluation (norm='batch': the DT blocks and the chain). The paper's blocks use batch
norm, whose evaluation mode would normalise with running averages of the training statistics. The
method contract keeps no state besides the differentiated params (the trainer applies the optimizer
to every leaf, weight decay included), so there are no running averages. Instead an evaluator may
add reference rows to the batch, `reference_image` (R, H, W, C) and `reference_label` (R,), a fixed
sample of training examples: every Norm then normalises with the statistics of the reference rows
alone (the `mask_B` of model.Norm), computed on the inputs training gave those rows (DT: z_{t-1} ~
q(z_{t-1} | y_ref); the chain: its own forward pass), and the evaluated rows only read them. A
prediction then depends on its own example, the parameters, the reference and the key, never on the
other examples of its evaluation batch. Without reference rows, batch norm uses the statistics of
the evaluated batch itself (its real rows, by batch['mask']): transductive, as batch norm in
training mode is. jaxrepr/evaluators/noprop.py passes a reference by default.

Diagnostics (where a model is weak). The network's own pick, fed an input drawn as in training from
the example's true label:
  DT 'block<t>' (t = 1..T): argmax of block t's logits on z_{t-1} ~ q(z_{t-1} | y);
  CT 't<s>' (s in DIAGNOSTIC_TIMES): argmax of the logits (the weights of uhat) on z_s ~ q(z_s | y);
  FM 't<s>': the class embedding nearest to the network's estimate of z_1,
      ztilde_1 = z_s + (1 - s) v(z_s, x, s) (Eq. 12), on z_s from the conditional path.
Near t = 1 the input alone gives the label; near t = 0 it is noise and the class must come from the
image. An evaluator that does not read the diagnostics pays nothing for them (jit drops them).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrepr.methods.noprop import model as model_lib
from jaxrepr.methods.noprop import schedules
from jaxrepr.methods.noprop.loss import (
  REFERENCE_IMAGE,
  REFERENCE_LABEL,
  Spec,
  chain_logits,
  check_batch,
  reference_mask,
  sample_q,
)
from jaxrepr.errors import ConfigError


DIAGNOSTIC_TIMES = (0.0, 0.5, 1.0)  # CT/FM: noise, halfway, label


def _out(logits_BxM: jax.Array, diagnostics: dict[str, jax.Array] | None = None) -> dict:
  out = {"logits": logits_BxM, "label": _argmax(logits_BxM)}
  if diagnostics is not None:
    out["diagnostics"] = diagnostics
  return out


def _argmax(logits_BxM: jax.Array) -> jax.Array:
  return jnp.argmax(logits_BxM, axis=-1).astype(jnp.int32)


def _time_name(t: float) -> str:
  return f"t{t:g}"  # t0, t0.5, t1


def _block_logits(
  block,
  params_t: dict,
  z_BxD: jax.Array,
  x_BxHxWxC: jax.Array,
  mask_B: jax.Array | None,
  ref: tuple[jax.Array, jax.Array] | None,
) -> jax.Array:
  """Block logits without dropout; with `ref` = (z_ref_RxD, x_ref_RxHxWxC), every Norm takes the
  statistics of the reference rows only and the evaluated rows are returned."""
  if ref is None:
    return block.apply({"params": params_t}, z_BxD, x_BxHxWxC, train=False, mask_B=mask_B)
  z_ref_RxD, x_ref = ref
  n_ref, n = x_ref.shape[0], x_BxHxWxC.shape[0]
  logits_NxM = block.apply(
    {"params": params_t},
    jnp.concatenate([z_ref_RxD, z_BxD]),
    jnp.concatenate([x_ref, x_BxHxWxC]),
    train=False,
    mask_B=reference_mask(n_ref, n),
  )
  return logits_NxM[n_ref:]


def dt_predict(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> dict[str, jax.Array]:
  check_batch(batch)
  x = batch["image"]
  mask_B = batch.get("mask", None)
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  block = spec.block(x.shape[1:])
  k0, k_steps, k_ref, k_diag = jax.random.split(rng, 4)
  z_BxD = jax.random.normal(k0, (x.shape[0], w_MxD.shape[1]), jnp.float32)
  coef = {k: jnp.asarray(getattr(spec.sched, k)[1:], jnp.float32) for k in ("a", "b", "c")}
  abar_prev_T = jnp.asarray(spec.sched.abar[:-1], jnp.float32)  # abar_{t-1}, t = 1..T
  T = spec.num_blocks
  ref_keys = jax.random.split(k_ref, T)
  with_ref = REFERENCE_IMAGE in batch
  if with_ref:
    x_ref = batch[REFERENCE_IMAGE].astype(x.dtype)
    u_ref_RxD = w_MxD[batch[REFERENCE_LABEL]]

  def ref_rows(abar_prev, key):
    # The reference rows get block t's training input, z_{t-1} ~ q(z_{t-1} | y_ref).
    return (sample_q(key, u_ref_RxD, abar_prev), x_ref) if with_ref else None

  def step(z_BxD, inputs):
    params_t, a, b, c, abar_prev, key, ref_key = inputs
    logits = _block_logits(block, params_t, z_BxD, x, mask_B, ref_rows(abar_prev, ref_key))
    uhat_BxD = jax.nn.softmax(logits, axis=-1) @ w_MxD
    z_BxD = a * uhat_BxD + b * z_BxD
    if not spec.deterministic:
      z_BxD = z_BxD + jnp.sqrt(c) * jax.random.normal(key, z_BxD.shape, z_BxD.dtype)
    return z_BxD, None

  z_BxD, _ = jax.lax.scan(
    step,
    z_BxD,
    (
      params["blocks"],
      coef["a"],
      coef["b"],
      coef["c"],
      abar_prev_T,
      jax.random.split(k_steps, T),
      ref_keys,
    ),
  )
  u_BxD = w_MxD[batch["label"]]

  def diagnose(carry, inputs):
    params_t, abar_prev, key, ref_key = inputs
    z_BxD = sample_q(key, u_BxD, abar_prev)
    logits = _block_logits(block, params_t, z_BxD, x, mask_B, ref_rows(abar_prev, ref_key))
    return carry, _argmax(logits)

  _, picks_TxB = jax.lax.scan(
    diagnose, None, (params["blocks"], abar_prev_T, jax.random.split(k_diag, T), ref_keys)
  )
  diagnostics = {f"block{t + 1}": picks_TxB[t] for t in range(T)}
  return _out(spec.classifier().apply({"params": params["classifier"]}, z_BxD), diagnostics)


def integrate(
  field: Callable[[jax.Array, jax.Array], jax.Array], z0_BxD: jax.Array, steps: int, solver: str
) -> jax.Array:
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


def ct_predict(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> dict[str, jax.Array]:
  check_batch(batch)
  x = batch["image"]
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  net = spec.net(x.shape[1:])
  gamma_fn = lambda t: spec.gamma().apply({"params": params["schedule"]}, t)
  scale_fn = lambda t: jnp.sqrt(schedules.ct_abar(gamma_fn(t)))  # s_t
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
  u_BxD = w_MxD[batch["label"]]
  diagnostics = {}
  for i, t in enumerate(DIAGNOSTIC_TIMES):
    t_B = jnp.full((x.shape[0],), t, jnp.float32)
    z_BxD = sample_q(
      jax.random.fold_in(jax.random.fold_in(rng, 1), i), u_BxD, schedules.ct_abar(gamma_fn(t_B))
    )
    diagnostics[_time_name(t)] = _argmax(
      net.apply({"params": params["net"]}, z_BxD, x, t_B, train=False)
    )
  return _out(spec.classifier().apply({"params": params["classifier"]}, z1_BxD), diagnostics)


def nearest_embedding_logits(z_BxD: jax.Array, w_MxD: jax.Array) -> jax.Array:
  return -jnp.sum(jnp.square(z_BxD[:, None, :] - w_MxD[None, :, :]), axis=-1)


def fm_predict(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> dict[str, jax.Array]:
  check_batch(batch)
  x = batch["image"]
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  net = spec.net(x.shape[1:])

  def field(z_BxD, t):
    t_B = jnp.full((z_BxD.shape[0],), t, jnp.float32)
    return net.apply({"params": params["net"]}, z_BxD, x, t_B, train=False) @ w_MxD

  z0_BxD = jax.random.normal(rng, (x.shape[0], w_MxD.shape[1]), jnp.float32)
  z1_BxD = integrate(field, z0_BxD, spec.inference_steps, spec.solver)
  u_BxD = w_MxD[batch["label"]]
  diagnostics = {}
  for i, t in enumerate(DIAGNOSTIC_TIMES):
    k_z0, k_eps = jax.random.split(jax.random.fold_in(jax.random.fold_in(rng, 1), i))
    t_B = jnp.full((x.shape[0],), t, jnp.float32)
    zt_BxD = schedules.fm_interpolate(
      u_BxD,
      jax.random.normal(k_z0, u_BxD.shape, jnp.float32),
      t_B,
      jax.random.normal(k_eps, u_BxD.shape, jnp.float32),
      spec.sigma,
    )
    z1_hat_BxD = zt_BxD + (1.0 - t) * field(zt_BxD, jnp.float32(t))  # ztilde_1, Eq. 12
    diagnostics[_time_name(t)] = _argmax(nearest_embedding_logits(z1_hat_BxD, w_MxD))
  return _out(nearest_embedding_logits(z1_BxD, w_MxD), diagnostics)


def backprop_predict(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> dict[str, jax.Array]:
  """The chained back-prop baseline (loss.chain_logits) without dropout, from z_0 ~ N(0, I)."""
  check_batch(batch)
  return _out(chain_logits(spec, params, batch, rng, train=False))


PREDICTORS = {"dt": dt_predict, "ct": ct_predict, "fm": fm_predict, "backprop": backprop_predict}
