"""Executable requirements for meta-teacher operators, and the KL contraction they give.

Flouro & Chadwick, "Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge
Refinement" (arXiv 2601.13100), states in its abstract that it defines structural axioms for valid
meta-teacher construction and that anchored recursive distillation contracts in KL divergence
under realisability and convexity assumptions. The axiom list itself was not available: the five
requirements below are jaxrepr's formalisation, for a meta-teacher t = G(p*, q, alpha) of the base
teacher p* and the previous student q (any callable; `operators.META_TEACHERS` holds the registered
ones). Like `axioms`, every check returns a `CheckResult` with the witness of its worst violation;
`alpha` is a float or one weight per row (shape (N,)).

  M1 closure      G(p*, q, alpha) lies on the simplex.
  M2 anchoring    weight at least alpha on the base teacher in the probability domain:
                  t = alpha p* + (1 - alpha) r with r on the simplex, i.e. t_i >= alpha p*_i.
  M3 convexity    t is a convex combination of its arguments: t = w p* + (1 - w) q with one
                  w in [0, 1] for all classes (t on the segment from q to p*).
  M4 continuity   small perturbations of p* or of q (towards a random point of the simplex, which
                  also fills zeros) give output changes that go to zero with the perturbation.
  M5 consistency  G(p*, p*, alpha) = p* (the base teacher is a fixed point).

Registered operators: anchored_mixture meets all five; geometric meets M1, M4, M5 (anchoring and
convexity hold in the log domain only); anchored_geometric meets M1, M2, M4, M5 (a convex
combination of p* with r ∝ sqrt(p* q), a distribution derived from both arguments, not of the
arguments themselves). For the log-linear ones the M4 change at a zero entry is about
eps^min(alpha, 1 - alpha) (like the power family's eps^(1/T)): judge them with alpha away from 0
and 1, in float64.

Contraction: KL is jointly convex, so for the canonical t = alpha p + (1 - alpha) q,
  KL(p || alpha p + (1 - alpha) q) <= alpha KL(p || p) + (1 - alpha) KL(p || q)
                                   = (1 - alpha) KL(p || q)
and likewise KL(t || p) <= (1 - alpha) KL(q || p). `contraction_ratio` measures
KL(p_base || t_{k+1}) / KL(p_base || q_k) and `check_contraction` compares it with 1 - alpha.
"""

from __future__ import annotations

from typing import Literal
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxrepr.methods.distill import operators
from jaxrepr.methods.distill.axioms import CheckResult, check_result, kl

MetaTeacher = operators.MetaTeacher
CONTINUITY_STEPS = (1e-2, 1e-4, 1e-8, 1e-16, 1e-32, 1e-64, 1e-128)


def _apply_meta(meta: MetaTeacher, p_NxV, q_NxV, alpha) -> np.ndarray:
  alpha = alpha if np.ndim(alpha) == 0 else jnp.asarray(alpha)  # a float stays weakly typed
  return np.asarray(meta(jnp.asarray(p_NxV), jnp.asarray(q_NxV), alpha), dtype=np.float64)


def _alpha_column(alpha, p_NxV: np.ndarray) -> np.ndarray:
  a = np.asarray(alpha, np.float64)
  return a if a.ndim == 0 else a[:, None]


def _alpha_at(alpha, i: int):
  a = np.asarray(alpha)
  return a if a.ndim == 0 else a[i]


def check_meta_simplex(
  meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray, alpha, tol: float = 1e-9
) -> CheckResult:
  """M1. Violation: max(|sum - 1|, -min entry); non-finite outputs count as infinite."""
  out_NxV = _apply_meta(meta, p_NxV, q_NxV, alpha)
  v_N = np.maximum(np.abs(out_NxV.sum(-1) - 1.0), -out_NxV.min(-1))
  v_N = np.where(np.all(np.isfinite(out_NxV), -1), v_N, np.inf)
  return check_result(
    "meta_simplex",
    v_N,
    tol,
    lambda i: dict(
      p_base=np.asarray(p_NxV)[i],
      q_prev=np.asarray(q_NxV)[i],
      alpha=_alpha_at(alpha, i),
      output=out_NxV[i],
    ),
  )


def check_meta_anchoring(
  meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray, alpha, tol: float = 1e-9
) -> CheckResult:
  """M2. Violation: max_i (alpha p*_i - t_i), positive when t puts less than weight alpha on p*."""
  out_NxV = _apply_meta(meta, p_NxV, q_NxV, alpha)
  p_NxV = np.asarray(p_NxV, np.float64)
  v_N = np.max(_alpha_column(alpha, p_NxV) * p_NxV - out_NxV, axis=-1)
  return check_result(
    "meta_anchoring",
    v_N,
    tol,
    lambda i: dict(
      p_base=p_NxV[i], q_prev=np.asarray(q_NxV)[i], alpha=_alpha_at(alpha, i), output=out_NxV[i]
    ),
  )


def segment_weight(t_NxV: np.ndarray, p_NxV: np.ndarray, q_NxV: np.ndarray) -> np.ndarray:
  """The weight w in [0, 1] of the point w p + (1 - w) q nearest to t (least squares, clipped);
  1 where p = q."""
  d_NxV = p_NxV - q_NxV
  dd_N = np.sum(d_NxV * d_NxV, axis=-1)
  w_N = np.sum((t_NxV - q_NxV) * d_NxV, axis=-1) / np.where(dd_N > 0, dd_N, 1.0)
  return np.clip(np.where(dd_N > 0, w_N, 1.0), 0.0, 1.0)


def check_meta_convexity(
  meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray, alpha, tol: float = 1e-9
) -> CheckResult:
  """M3. Violation: the L1 distance from t to the segment from q to p* (zero exactly when t is a
  convex combination of the two arguments with one weight for all classes)."""
  out_NxV = _apply_meta(meta, p_NxV, q_NxV, alpha)
  p_NxV, q_NxV = np.asarray(p_NxV, np.float64), np.asarray(q_NxV, np.float64)
  w_N = segment_weight(out_NxV, p_NxV, q_NxV)
  nearest_NxV = w_N[:, None] * p_NxV + (1.0 - w_N[:, None]) * q_NxV
  v_N = np.abs(out_NxV - nearest_NxV).sum(-1)
  return check_result(
    "meta_convexity",
    v_N,
    tol,
    lambda i: dict(
      p_base=p_NxV[i],
      q_prev=q_NxV[i],
      alpha=_alpha_at(alpha, i),
      output=out_NxV[i],
      nearest_weight=w_N[i],
    ),
  )


def check_meta_continuity(
  meta: MetaTeacher,
  p_NxV: np.ndarray,
  q_NxV: np.ndarray,
  alpha,
  seed: int = 0,
  tol: float = 1e-4,
  steps: Sequence[float] = CONTINUITY_STEPS,
) -> CheckResult:
  """M4. Perturbs p* to (1 - eps) p* + eps r (r random on the simplex, so zeros are filled too)
  and, separately, q likewise, for decreasing eps. Violation: the output L1 change at the smallest
  eps (a continuous operator's change goes to zero; a jump stays). The schedule reaches 1e-128
  because changes at zero entries can shrink like a small power of eps: use float64."""
  p_NxV, q_NxV = np.asarray(p_NxV, np.float64), np.asarray(q_NxV, np.float64)
  rng = np.random.default_rng(seed)
  base_NxV = _apply_meta(meta, p_NxV, q_NxV, alpha)
  worst = (-1.0, None)
  for moved in ("p_base", "q_prev"):
    r_NxV = rng.dirichlet(np.ones(p_NxV.shape[-1]), size=p_NxV.shape[0])
    changes = []
    for eps in steps:
      p_eps, q_eps = p_NxV, q_NxV
      if moved == "p_base":
        p_eps = (1.0 - eps) * p_NxV + eps * r_NxV
      else:
        q_eps = (1.0 - eps) * q_NxV + eps * r_NxV
      changes.append(np.abs(_apply_meta(meta, p_eps, q_eps, alpha) - base_NxV).sum(-1))
    last_N = np.nan_to_num(changes[-1], nan=np.inf)
    i = int(np.argmax(last_N))
    if last_N[i] > worst[0]:
      worst = (
        float(last_N[i]),
        dict(
          p_base=p_NxV[i],
          q_prev=q_NxV[i],
          alpha=_alpha_at(alpha, i),
          perturbed=moved,
          direction=r_NxV[i],
          steps=np.asarray(steps),
          l1_changes=np.array([c[i] for c in changes]),
        ),
      )
  return CheckResult("meta_continuity", worst[0] <= tol, worst[0], tol, worst[1])


def check_meta_fixed_point(
  meta: MetaTeacher, p_NxV: np.ndarray, alpha, tol: float = 1e-9
) -> CheckResult:
  """M5. Violation: L1 distance between G(p*, p*, alpha) and p*."""
  out_NxV = _apply_meta(meta, p_NxV, p_NxV, alpha)
  v_N = np.abs(out_NxV - np.asarray(p_NxV, np.float64)).sum(-1)
  return check_result(
    "meta_fixed_point",
    v_N,
    tol,
    lambda i: dict(p_base=np.asarray(p_NxV)[i], alpha=_alpha_at(alpha, i), output=out_NxV[i]),
  )


def check_meta_teacher(
  meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray, alphas: Sequence[float], seed: int = 0
) -> list[CheckResult]:
  """M1-M5 for every alpha, in that order."""
  results = []
  for alpha in alphas:
    results += [
      check_meta_simplex(meta, p_NxV, q_NxV, alpha),
      check_meta_anchoring(meta, p_NxV, q_NxV, alpha),
      check_meta_convexity(meta, p_NxV, q_NxV, alpha),
      check_meta_continuity(meta, p_NxV, q_NxV, alpha, seed=seed),
      check_meta_fixed_point(meta, p_NxV, alpha),
    ]
  return results


def contraction_ratio(
  meta: MetaTeacher,
  p_base_NxV,
  q_prev_NxV,
  alpha: float,
  direction: Literal["forward", "reverse"] = "forward",
) -> np.ndarray:
  """Per-example KL(p_base || t) / KL(p_base || q_prev), t = G(p_base, q_prev, alpha) ('forward');
  'reverse' uses KL(t || p_base) / KL(q_prev || p_base). NaN where the denominator is zero or
  infinite (no ratio to measure)."""
  t_NxV = meta(jnp.asarray(p_base_NxV), jnp.asarray(q_prev_NxV), alpha)
  p, q = jnp.asarray(p_base_NxV), jnp.asarray(q_prev_NxV)
  if direction == "forward":
    num_N, den_N = kl(p, t_NxV), kl(p, q)
  elif direction == "reverse":
    num_N, den_N = kl(t_NxV, p), kl(q, p)
  else:
    raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
  num_N, den_N = np.asarray(num_N, np.float64), np.asarray(den_N, np.float64)
  valid_N = (den_N > 0) & np.isfinite(den_N)
  return np.where(valid_N, num_N / np.where(valid_N, den_N, 1.0), np.nan)


def check_contraction(
  meta: MetaTeacher,
  p_base_NxV,
  q_prev_NxV,
  alpha: float,
  direction: Literal["forward", "reverse"] = "forward",
  rate: float | None = None,
  tol: float = 1e-9,
  min_kl: float = 1e-12,
) -> CheckResult:
  """One-step contraction: ratio <= rate (default 1 - alpha) + tol wherever the denominator KL is
  finite and above min_kl. Violation: the largest ratio - rate.

  Proven rates (forward direction, KL(p_base || .)): 1 - alpha for anchored_mixture (convexity),
  geometric (Hoelder) and anchored_geometric, whose tighter rate is (1 - alpha) / 2. In the reverse
  direction only anchored_mixture has the 1 - alpha bound (joint convexity)."""
  rate = 1.0 - alpha if rate is None else rate
  ratio_N = contraction_ratio(meta, p_base_NxV, q_prev_NxV, alpha, direction)
  p, q = jnp.asarray(p_base_NxV), jnp.asarray(q_prev_NxV)
  den_N = np.asarray(kl(p, q) if direction == "forward" else kl(q, p), np.float64)
  v_N = np.where((den_N > min_kl) & np.isfinite(den_N), ratio_N - rate, -np.inf)
  return check_result(
    f"contraction[{direction}]",
    v_N,
    tol,
    lambda i: dict(
      p_base=np.asarray(p_base_NxV)[i],
      q_prev=np.asarray(q_prev_NxV)[i],
      alpha=alpha,
      ratio=ratio_N[i],
      rate=rate,
    ),
  )
