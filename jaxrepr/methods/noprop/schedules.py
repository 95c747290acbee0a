"""Noise schedules of NoProp (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1).

Time runs from noise (t = 0) to label (t = T or t = 1), the reverse of DDPM indexing, and
q(z_t | y) = N(sqrt(abar_t) u_y, (1 - abar_t) I), SNR(t) = abar_t / (1 - abar_t)  (paper Eqs. 1-7).

DT (paper §2.2, "fixed cosine"): the paper gives neither endpoints nor alpha_0. We use the cosine
schedule of Nichol & Dhariwal with DDPM time tau = 1 - t/T and offset s:
    abar_t = clip(cos^2(pi/2 (tau + s)/(1 + s)) / cos^2(pi/2 s/(1 + s)), abar_min, abar_max).
abar_max < 1 keeps SNR(T) finite (at abar_T -> 1 the t = T weight would dominate every other block).
From abar, alpha_{t-1} = abar_{t-1} / abar_t (App. A: abar_t = prod_{s>=t} alpha_s) and Eq. 3 gives
    a_t = sqrt(abar_t)(1 - alpha_{t-1})/(1 - abar_{t-1}),
    b_t = sqrt(alpha_{t-1})(1 - abar_t)/(1 - abar_{t-1}),
    c_t = (1 - abar_t)(1 - alpha_{t-1})/(1 - abar_{t-1}),
computed in float64 once at build time.

CT (App. B): SNR(t) = exp(-gamma(t)), gamma(t) = gamma_0 + (gamma_1 - gamma_0)(1 - gammabar(t)),
gammabar the min-max normalised output of a monotone 2-layer network with positive weights. The
paper trains gamma_0 and gamma_1 freely; we parameterise gamma_1 = gamma_0 + softplus(r) so the
learned SNR stays increasing in t whatever the optimiser does (a choice, documented here).

FM (Eq. 10): z_t = t u_y + (1 - t) z_0 + sigma eps.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
  """Float64 numpy arrays; index t in 0..T (a, b, c, weight have a dummy entry at t = 0)."""

  abar: np.ndarray  # (T+1,)
  a: np.ndarray  # (T+1,)
  b: np.ndarray  # (T+1,)
  c: np.ndarray  # (T+1,)
  snr: np.ndarray  # (T+1,)
  weight: np.ndarray  # (T+1,)  SNR(t) - SNR(t-1), the Eq. 8 weight of block t; weight[0] = 0


def cosine_abar(
  num_steps: int, offset: float = 0.008, abar_min: float = 1e-4, abar_max: float = 0.99
) -> np.ndarray:
  """abar_t for t = 0..T (increasing in t), float64."""
  if not 0.0 < abar_min < abar_max < 1.0:
    raise ValueError(f"need 0 < abar_min < abar_max < 1, got {abar_min}, {abar_max}")
  tau = 1.0 - np.arange(num_steps + 1, dtype=np.float64) / num_steps
  f = np.cos(0.5 * np.pi * (tau + offset) / (1.0 + offset)) ** 2
  f0 = np.cos(0.5 * np.pi * offset / (1.0 + offset)) ** 2
  return np.clip(f / f0, abar_min, abar_max)


def discrete_schedule(
  num_steps: int, offset: float = 0.008, abar_min: float = 1e-4, abar_max: float = 0.99
) -> DiscreteSchedule:
  abar = cosine_abar(num_steps, offset, abar_min, abar_max)
  prev, cur = abar[:-1], abar[1:]
  alpha_prev = prev / cur
  a = np.sqrt(cur) * (1.0 - alpha_prev) / (1.0 - prev)
  b = np.sqrt(alpha_prev) * (1.0 - cur) / (1.0 - prev)
  c = (1.0 - cur) * (1.0 - alpha_prev) / (1.0 - prev)
  snr = abar / (1.0 - abar)
  pad = lambda v: np.concatenate([[0.0], v])
  return DiscreteSchedule(
    abar=abar, a=pad(a), b=pad(b), c=pad(c), snr=snr, weight=pad(snr[1:] - snr[:-1])
  )


def kl_to_prior(u_BxD: jax.Array, abar0: jax.Array) -> jax.Array:
  """KL(q(z_0|y) || N(0, I)) per example, closed form:
  1/2 [abar_0 |u|^2 - d abar_0 - d log(1-abar_0)]."""
  d = u_BxD.shape[-1]
  return 0.5 * (abar0 * jnp.sum(u_BxD**2, axis=-1) - d * abar0 - d * jnp.log1p(-abar0))


class GammaNetwork(nn.Module):
  """Learnable CT schedule gamma(t) (App. B); SNR(t) = exp(-gamma(t)) increases with t.

  gammatilde(t) = softplus(w0) t + sum_k softplus(w2_k) sigmoid(softplus(w1_k) t + b1_k): every
  weight on the path from t is positive, so gammatilde is increasing (a 2-layer positive-weight
  network plus a linear skip, as in VDM's monotone network). Width and init are not given by the
  paper.
  """

  hidden: int = 64
  gamma_0_init: float = -7.0  # gamma at t = 1: SNR(1) = e^7
  gamma_1_init: float = 7.0  # gamma at t = 0: SNR(0) = e^-7

  def setup(self):
    init = nn.initializers.normal(1.0)
    self.w0 = self.param("w0", init, ())
    self.w1 = self.param("w1", init, (self.hidden,))
    self.b1 = self.param("b1", init, (self.hidden,))
    self.w2 = self.param("w2", init, (self.hidden,))
    self.gamma_0 = self.param("gamma_0", nn.initializers.constant(self.gamma_0_init), ())
    gap = self.gamma_1_init - self.gamma_0_init
    if gap <= 0:
      raise ValueError(f"the CT schedule needs gamma_1 > gamma_0 (SNR increasing), got {gap}")
    # Inverse softplus, so gamma_1 starts at gamma_1_init.
    self.gap_raw = self.param("gap_raw", nn.initializers.constant(float(np.log(np.expm1(gap)))), ())

  def _tilde(self, t: jax.Array) -> jax.Array:
    lead = (1,) * t.ndim  # explicit broadcasting: rank promotion may be set to 'raise'
    w1, b1 = jax.nn.softplus(self.w1).reshape(lead + (-1,)), self.b1.reshape(lead + (-1,))
    h = jax.nn.sigmoid(w1 * t[..., None] + b1)
    w2 = jax.nn.softplus(self.w2).reshape(lead + (-1,))
    return jax.nn.softplus(self.w0) * t + jnp.sum(w2 * h, axis=-1)

  def __call__(self, t: jax.Array) -> jax.Array:
    """gamma(t) for any array t in [0, 1]."""
    zero, one = jnp.zeros((), t.dtype), jnp.ones((), t.dtype)
    g0, g1 = self._tilde(zero), self._tilde(one)
    gbar = (self._tilde(t) - g0) / (g1 - g0)
    gamma_1 = self.gamma_0 + jax.nn.softplus(self.gap_raw)
    return self.gamma_0 + (gamma_1 - self.gamma_0) * (1.0 - gbar)


def ct_abar(gamma: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(-gamma)


def ct_snr(gamma: jax.Array) -> jax.Array:
  return jnp.exp(-gamma)


def fm_interpolate(
  u_BxD: jax.Array, z0_BxD: jax.Array, t_B: jax.Array, eps_BxD: jax.Array, sigma: float
) -> jax.Array:
  """Eq. 10: z_t = t u_y + (1 - t) z_0 + sigma eps."""
  t_Bx1 = t_B[:, None]
  return t_Bx1 * u_BxD + (1.0 - t_Bx1) * z0_BxD + sigma * eps_BxD
