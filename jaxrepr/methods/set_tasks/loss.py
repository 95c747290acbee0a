"""Losses and metrics of the Set Transformer paper's set tasks (pure functions of arrays).

Amortized clustering (paper §5.3, Table 3): the model outputs mixture parameters per set and is
trained to maximise the per-point log-likelihood of the set,
  LL/data = (1 / sum_b n_b) sum_b sum_{i <= n_b} log sum_k pi_k N(x_i; mu_k, diag(sigma_k^2)).
The reference code (run.py) adds 1e-10 to pi before the log (kept here for parity) and averages over
all B*n points of a batch with a single n; with per-set sizes the average is over all valid points,
the same quantity. The oracle is the same log-likelihood under the generating parameters (paper:
-1.4726). LL1 is the log-likelihood after one EM step started from the predictions (paper Table 3);
the EM step keeps the head's covariance family (isotropic or diagonal: the paper does not say).

Max regression (paper §5.1, Table 1): mean absolute error between the predicted and the true
maximum, used as the loss (the paper's MAE, the notebook's L1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

HEADS = ("isotropic", "diagonal")
_PI_EPS = 1e-10  # run.py: (pi + 1e-10).log()


def head_width(dim: int, head: str) -> int:
  """Raw outputs per cluster: pi logit, mu (dim), sigma (1 isotropic or dim diagonal)."""
  if head not in HEADS:
    raise ValueError(f"MoG head must be one of {HEADS}, got {head!r}")
  return 1 + dim + (1 if head == "isotropic" else dim)


def mog_head(raw_BxKxO: jax.Array, dim: int, head: str) -> dict[str, jax.Array]:
  """Raw per-cluster outputs -> {'pi': (B, K) softmax over clusters, 'mu': (B, K, dim),
  'sigma': (B, K, dim) softplus} (reference run.py; isotropic sigma is repeated over dims)."""
  width = head_width(dim, head)
  if raw_BxKxO.shape[-1] != width:
    raise ValueError(
      f"MoG head {head!r} in {dim}-D needs {width} outputs per cluster, got {raw_BxKxO.shape[-1]}"
    )
  pi_BxK = jax.nn.softmax(raw_BxKxO[..., 0], axis=-1)
  mu_BxKxD = raw_BxKxO[..., 1 : 1 + dim]
  sigma_BxKxS = jax.nn.softplus(raw_BxKxO[..., 1 + dim :])
  sigma_BxKxD = jnp.broadcast_to(sigma_BxKxS, mu_BxKxD.shape)
  return {"pi": pi_BxK, "mu": mu_BxKxD, "sigma": sigma_BxKxD}


def _component_log_probs(
  x_BxNxD: jax.Array, log_pi_BxK: jax.Array, mu_BxKxD: jax.Array, sigma_BxKxD: jax.Array
) -> jax.Array:
  """log pi_k + log N(x_i; mu_k, diag(sigma_k^2)) -> (B, N, K)."""
  D = x_BxNxD.shape[-1]
  z_BxNxKxD = (x_BxNxD[:, :, None, :] - mu_BxKxD[:, None, :, :]) / sigma_BxKxD[:, None, :, :]
  log_det_BxK = jnp.sum(jnp.log(sigma_BxKxD), axis=-1)
  return (
    log_pi_BxK[:, None, :]
    - 0.5 * jnp.sum(jnp.square(z_BxNxKxD), axis=-1)
    - log_det_BxK[:, None, :]
    - 0.5 * D * math.log(2.0 * math.pi)
  )


def mog_log_likelihood(
  x_BxNxD: jax.Array,
  pi_BxK: jax.Array,
  mu_BxKxD: jax.Array,
  sigma_BxKxD: jax.Array,
  pi_eps: float = _PI_EPS,
) -> jax.Array:
  """Per-point log sum_k (pi_k + pi_eps) N(x_i; mu_k, diag(sigma_k^2)) -> (B, N)."""
  comp_BxNxK = _component_log_probs(x_BxNxD, jnp.log(pi_BxK + pi_eps), mu_BxKxD, sigma_BxKxD)
  return jax.nn.logsumexp(comp_BxNxK, axis=-1)


def masked_mean(v_BxN: jax.Array, mask_BxN: jax.Array) -> jax.Array:
  """Mean of v over the valid points of the whole batch (a scalar)."""
  m_BxN = mask_BxN.astype(bool)
  total = jnp.sum(jnp.where(m_BxN, v_BxN, 0.0))
  return total / jnp.maximum(jnp.sum(m_BxN), 1).astype(v_BxN.dtype)


def per_set_mean(v_BxN: jax.Array, mask_BxN: jax.Array) -> jax.Array:
  """Mean of v over the valid points of each set -> (B,)."""
  m_BxN = mask_BxN.astype(bool)
  total_B = jnp.sum(jnp.where(m_BxN, v_BxN, 0.0), axis=1)
  return total_B / jnp.maximum(jnp.sum(m_BxN, axis=1), 1).astype(v_BxN.dtype)


def em_step(
  x_BxNxD: jax.Array,
  mask_BxN: jax.Array,
  pi_BxK: jax.Array,
  mu_BxKxD: jax.Array,
  sigma_BxKxD: jax.Array,
  isotropic: bool,
) -> dict[str, jax.Array]:
  """One EM step from the given parameters over the valid points (for LL1, paper Table 3)."""
  comp_BxNxK = _component_log_probs(x_BxNxD, jnp.log(pi_BxK + _PI_EPS), mu_BxKxD, sigma_BxKxD)
  resp_BxNxK = jax.nn.softmax(comp_BxNxK, axis=-1)
  resp_BxNxK = jnp.where(mask_BxN.astype(bool)[:, :, None], resp_BxNxK, 0.0)
  nk_BxK = jnp.sum(resp_BxNxK, axis=1) + 1e-8
  n_Bx1 = jnp.sum(nk_BxK, axis=1, keepdims=True)
  mu_BxKxD = jnp.einsum("bnk,bnd->bkd", resp_BxNxK, x_BxNxD) / nk_BxK[:, :, None]
  sq_BxNxKxD = jnp.square(x_BxNxD[:, :, None, :] - mu_BxKxD[:, None, :, :])
  var_BxKxD = jnp.einsum("bnk,bnkd->bkd", resp_BxNxK, sq_BxNxKxD) / nk_BxK[:, :, None]
  if isotropic:
    var_BxKxD = jnp.broadcast_to(jnp.mean(var_BxKxD, axis=-1, keepdims=True), var_BxKxD.shape)
  return {"pi": nk_BxK / n_Bx1, "mu": mu_BxKxD, "sigma": jnp.sqrt(var_BxKxD + 1e-8)}


def mog_loss(
  raw_BxKxO: jax.Array, data: dict[str, jax.Array], head: str
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Negative per-point log-likelihood of the predicted mixtures; metrics: LL0 and the oracle's."""
  x_BxNxD, mask_BxN = data["x"], data["mask"]
  pred = mog_head(raw_BxKxO, x_BxNxD.shape[-1], head)
  ll = masked_mean(mog_log_likelihood(x_BxNxD, pred["pi"], pred["mu"], pred["sigma"]), mask_BxN)
  metrics = {"ll_per_point": ll}
  if "pi" in data:
    metrics["oracle_ll_per_point"] = masked_mean(
      mog_log_likelihood(x_BxNxD, data["pi"], data["mu"], data["sigma"], pi_eps=0.0), mask_BxN
    )
  return -ll, metrics


def max_regression_loss(
  pred_B: jax.Array, y_B: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MAE (= the L1 loss) between predicted and true maxima; the metric is the same MAE."""
  if pred_B.shape != y_B.shape:
    raise ValueError(f"prediction shape {pred_B.shape} does not match target shape {y_B.shape}")
  mae = jnp.mean(jnp.abs(pred_B - y_B))
  return mae, {"mae": mae}
