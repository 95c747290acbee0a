"""Executable axioms for softening and meta-teacher operators, and KL / contraction helpers.

Each check runs an operator (a registered family or any user callable `op(p_xV, T)`) on explicit
inputs and returns a `CheckResult` (passed, worst violation, the witness input) instead of only
asserting, so a failed axiom names the input that breaks it. Checks evaluate the operator on a
batch `p_NxV` and compare in float64 numpy; run them under `jax.enable_x64(True)` for tight
tolerances (float32 operators need looser ones).

Softening axioms (names from Flouro & Chadwick, arXiv 2601.03195, abstract; precise statements are
the jaxrepr formalisation of the method sheet, section 2, not quotations):
  A1 ranking      p_i > p_j => F_T(p)_i > F_T(p)_j, and p_i = p_j => F_T(p)_i = F_T(p)_j.
  A2 continuity   small perturbations of p (towards a random point of the simplex, which also
                  fills zeros) or of T give output changes that go to zero with the perturbation.
                  The power family is continuous but not Lipschitz at p_i = 0 (change ~ eps^(1/T)),
                  hence a decreasing eps schedule judged at its smallest step.
  A3 entropy      T -> H(F_T(p)) is non-decreasing on the domain.
  A4 identity     F_1(p) = p.
  A5 boundary     T -> inf: uniform over S(p), S(p) = supp(p) ('support') or all V ('full');
                  T -> 0 (families whose domain contains T < 1): uniform over argmax(p).
Meta-teacher requirements (Flouro & Chadwick, arXiv 2601.13100; sheet section 3, reconstruction):
  M1 closure      G(p*, q, alpha) lies on the simplex.
  M2 anchoring    weight at least alpha on the base teacher in the probability domain:
                  t = alpha p* + (1 - alpha) r with r on the simplex, i.e. t_i >= alpha p*_i.
  M5 consistency  G(p*, p*, alpha) = p* (the base teacher is a fixed point).
Contraction: KL is jointly convex, so for the canonical t = alpha p + (1 - alpha) q,
  KL(p || alpha p + (1 - alpha) q) <= alpha KL(p || p) + (1 - alpha) KL(p || q) = (1 - alpha) KL(p || q)
and likewise KL(t || p) <= (1 - alpha) KL(q || p). `contraction_ratio` measures
KL(p_base || t_{k+1}) / KL(p_base || q_k) and `check_contraction` compares it with 1 - alpha.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from jaxrepr.methods.distill import operators

Operator = operators.Operator
MetaTeacher = operators.MetaTeacher


def entropy(p_xV: jax.Array) -> jax.Array:
  """H(p) = -sum_i p_i log p_i with 0 log 0 = 0, over the last axis."""
  return jnp.sum(special.entr(p_xV), axis=-1)


def kl(p_xV: jax.Array, q_xV: jax.Array) -> jax.Array:
  """KL(p || q) = sum over supp(p) of p_i log(p_i / q_i); +inf where q_i = 0 < p_i."""
  return jnp.sum(special.rel_entr(p_xV, q_xV), axis=-1)


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """Outcome of one axiom check.

  Attributes:
    name: the axiom checked.
    passed: whether every input satisfied it within `tolerance`.
    worst_violation: the largest violation found (<= tolerance when passed; its meaning is given
      by each check, e.g. an L1 distance or an entropy decrease).
    tolerance: the tolerance used.
    witness: the input (and relevant outputs) that produced the worst violation.
  """

  name: str
  passed: bool
  worst_violation: float
  tolerance: float
  witness: dict[str, Any]

  def __bool__(self) -> bool:
    return self.passed

  def __str__(self) -> str:
    status = "passed" if self.passed else "FAILED"
    parts = ", ".join(f"{k}={np.array2string(np.asarray(v), precision=6)}"
                      for k, v in self.witness.items())
    return (f"{self.name}: {status} (worst violation {self.worst_violation:.3g}, "
            f"tolerance {self.tolerance:.3g}; witness: {parts})")


def _apply(op: Operator, p_NxV: np.ndarray, T: float) -> np.ndarray:
  return np.asarray(op(jnp.asarray(p_NxV), T), dtype=np.float64)


def _result(name: str, violation_N: np.ndarray, tolerance: float,
            witness_fn: Callable[[int], dict[str, Any]]) -> CheckResult:
  violation_N = np.where(np.isnan(violation_N), np.inf, violation_N)
  worst = int(np.argmax(violation_N))
  worst_value = float(violation_N[worst])
  return CheckResult(name, worst_value <= tolerance, worst_value, tolerance, witness_fn(worst))


def _entropy_np(p_NxV: np.ndarray) -> np.ndarray:
  safe_NxV = np.where(p_NxV > 0, p_NxV, 1.0)
  return -np.sum(np.where(p_NxV > 0, p_NxV * np.log(safe_NxV), 0.0), axis=-1)


def _uniform_over(mask_NxV: np.ndarray) -> np.ndarray:
  return mask_NxV / mask_NxV.sum(axis=-1, keepdims=True)


def check_simplex(op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float],
                  tol: float = 1e-6) -> CheckResult:
  """Outputs are finite, non-negative and sum to one. Violation: max(|sum - 1|, -min entry)."""
  p_NxV = np.asarray(p_NxV, np.float64)
  worst = (-1.0, None)
  for T in temperatures:
    out_NxV = _apply(op, p_NxV, T)
    v_N = np.maximum(np.abs(out_NxV.sum(-1) - 1.0), -out_NxV.min(-1))
    v_N = np.where(np.all(np.isfinite(out_NxV), -1), v_N, np.inf)
    i = int(np.argmax(v_N))
    if v_N[i] > worst[0]:
      worst = (float(v_N[i]), dict(p=p_NxV[i], T=T, output=out_NxV[i]))
  return CheckResult("simplex", worst[0] <= tol, worst[0], tol, worst[1])


def check_ranking(op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float],
                  tie_tol: float = 1e-9) -> CheckResult:
  """A1. Violation: for pairs with p_i > p_j, F_j - F_i (a violation when >= 0, strictness);
  for exact ties, |F_i - F_j| - tie_tol. Reported as the largest such value; passes when every
  strict pair has F_i > F_j and every tie stays within tie_tol."""
  p_NxV = np.asarray(p_NxV, np.float64)
  greater_NxVxV = p_NxV[:, :, None] > p_NxV[:, None, :]
  tie_NxVxV = p_NxV[:, :, None] == p_NxV[:, None, :]
  worst = (-np.inf, None)
  passed = True
  for T in temperatures:
    out_NxV = _apply(op, p_NxV, T)
    diff_NxVxV = out_NxV[:, :, None] - out_NxV[:, None, :]
    strict_N = np.max(np.where(greater_NxVxV, -diff_NxVxV, -np.inf), axis=(1, 2))
    tie_N = np.max(np.where(tie_NxVxV, np.abs(diff_NxVxV) - tie_tol, -np.inf), axis=(1, 2))
    strict_N = np.where(np.isnan(strict_N), np.inf, strict_N)
    passed &= bool(np.all(strict_N < 0) and np.all(tie_N <= 0))
    # Rank inputs by how badly they fail: strict violations (>= 0) first, then tie violations.
    v_N = np.maximum(strict_N, tie_N)
    i = int(np.argmax(v_N))
    if v_N[i] > worst[0]:
      worst = (float(v_N[i]), dict(p=p_NxV[i], T=T, output=out_NxV[i]))
  return CheckResult("ranking", passed, worst[0], 0.0, worst[1])


def check_identity(op: Operator, p_NxV: np.ndarray, tol: float = 1e-9) -> CheckResult:
  """A4. Violation: max_i |F_1(p)_i - p_i|."""
  p_NxV = np.asarray(p_NxV, np.float64)
  out_NxV = _apply(op, p_NxV, 1.0)
  v_N = np.max(np.abs(out_NxV - p_NxV), axis=-1)
  return _result("identity", v_N, tol, lambda i: dict(p=p_NxV[i], output=out_NxV[i]))


def check_entropy_monotone(op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float],
                           tol: float = 1e-9) -> CheckResult:
  """A3 on a temperature grid. Violation: the largest entropy decrease between consecutive T."""
  p_NxV = np.asarray(p_NxV, np.float64)
  temps = np.sort(np.asarray(temperatures, np.float64))
  H_TxN = np.stack([_entropy_np(_apply(op, p_NxV, float(T))) for T in temps])
  drop_TxN = H_TxN[:-1] - H_TxN[1:]
  t_idx, n_idx = np.unravel_index(np.argmax(np.nan_to_num(drop_TxN, nan=np.inf)), drop_TxN.shape)
  worst = float(np.nan_to_num(drop_TxN[t_idx, n_idx], nan=np.inf))
  witness = dict(p=p_NxV[n_idx], T_low=temps[t_idx], T_high=temps[t_idx + 1],
                 entropy=H_TxN[t_idx:t_idx + 2, n_idx])
  return CheckResult("entropy_monotone", worst <= tol, worst, tol, witness)


def check_continuity(op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float],
                     seed: int = 0, tol: float = 1e-4,
                     p_steps: Sequence[float] = (1e-2, 1e-4, 1e-8, 1e-16, 1e-32, 1e-64, 1e-128),
                     t_steps: Sequence[float] = (1e-2, 1e-4, 1e-6, 1e-8)) -> CheckResult:
  """A2. Perturbs p to (1 - eps) p + eps r (r random on the simplex, so zeros are filled too) and
  T to T (1 + eps), for decreasing eps. Violation: the output L1 change at the smallest eps (a
  continuous operator's change goes to zero; a jump stays). The p schedule reaches 1e-128 because
  the power family's change at a zero entry is about eps^(1/T): use float64 for it to show."""
  p_NxV = np.asarray(p_NxV, np.float64)
  r_NxV = np.random.default_rng(seed).dirichlet(np.ones(p_NxV.shape[-1]), size=p_NxV.shape[0])
  worst = (-1.0, None)
  for T in temperatures:
    base_NxV = _apply(op, p_NxV, T)
    changes = {}
    for eps in p_steps:
      moved_NxV = (1.0 - eps) * p_NxV + eps * r_NxV
      changes[("p", eps)] = np.abs(_apply(op, moved_NxV, T) - base_NxV).sum(-1)
    for eps in t_steps:
      changes[("T", eps)] = np.abs(_apply(op, p_NxV, T * (1.0 + eps)) - base_NxV).sum(-1)
    for kind, steps in (("p", p_steps), ("T", t_steps)):
      last_N = np.nan_to_num(changes[(kind, steps[-1])], nan=np.inf)
      i = int(np.argmax(last_N))
      if last_N[i] > worst[0]:
        worst = (float(last_N[i]), dict(
            p=p_NxV[i], T=T, perturbed=kind, direction=r_NxV[i] if kind == "p" else 1.0,
            steps=np.asarray(steps), l1_changes=np.array([changes[(kind, e)][i] for e in steps])))
  return CheckResult("continuity", worst[0] <= tol, worst[0], tol, worst[1])


def check_high_temperature_limit(op: Operator, p_NxV: np.ndarray,
                                 support: Literal["support", "full"], T_high: float = 1e6,
                                 tol: float = 1e-3) -> CheckResult:
  """A5, T -> inf. Violation: L1 distance between F_{T_high}(p) and the uniform over S(p)."""
  p_NxV = np.asarray(p_NxV, np.float64)
  if support not in ("support", "full"):
    raise ValueError(f"support must be 'support' or 'full', got {support!r}")
  mask_NxV = (p_NxV > 0) if support == "support" else np.ones_like(p_NxV, bool)
  target_NxV = _uniform_over(mask_NxV.astype(np.float64))
  out_NxV = _apply(op, p_NxV, T_high)
  v_N = np.abs(out_NxV - target_NxV).sum(-1)
  return _result(f"high_temperature_limit[{support}]", v_N, tol,
                 lambda i: dict(p=p_NxV[i], T=T_high, output=out_NxV[i], target=target_NxV[i]))


def check_low_temperature_limit(op: Operator, p_NxV: np.ndarray, T_low: float = 1e-3,
                                tol: float = 1e-3) -> CheckResult:
  """A5, T -> 0. Violation: L1 distance between F_{T_low}(p) and the uniform over argmax(p)
  (exact ties form the argmax set; near ties need a smaller T_low)."""
  p_NxV = np.asarray(p_NxV, np.float64)
  target_NxV = _uniform_over((p_NxV == p_NxV.max(-1, keepdims=True)).astype(np.float64))
  out_NxV = _apply(op, p_NxV, T_low)
  v_N = np.abs(out_NxV - target_NxV).sum(-1)
  return _result("low_temperature_limit", v_N, tol,
                 lambda i: dict(p=p_NxV[i], T=T_low, output=out_NxV[i], target=target_NxV[i]))


def check_family(family: operators.OperatorFamily, p_NxV: np.ndarray,
                 temperatures: Sequence[float] | None = None, seed: int = 0) -> list[CheckResult]:
  """Every softening axiom for a family, on its documented domain and A5 reading."""
  temps = family.temperature_grid() if temperatures is None else np.asarray(temperatures)
  outside = [float(T) for T in temps if not family.in_domain(float(T))]
  if outside:
    raise ValueError(f"temperatures {outside} lie outside the domain of family {family.name!r}")
  results = [
      check_simplex(family, p_NxV, temps),
      check_ranking(family, p_NxV, temps),
      check_continuity(family, p_NxV, temps, seed=seed),
      check_entropy_monotone(family, p_NxV, temps),
      check_identity(family, p_NxV),
      check_high_temperature_limit(family, p_NxV, family.limit_support),
  ]
  if family.sharpens:
    results.append(check_low_temperature_limit(family, p_NxV))
  return results


def failures(results: Sequence[CheckResult]) -> str:
  """A readable summary of the failed checks ('' when all passed)."""
  return "\n".join(str(r) for r in results if not r.passed)


def random_distributions(rng: np.random.Generator, n: int, num_classes: int,
                         levels: int = 12) -> np.ndarray:
  """Test inputs with zeros and exact ties: integer counts in [0, levels] normalised (at least
  one count is positive). Distinct entries differ by a ratio of at least levels / (levels - 1)."""
  counts_NxV = rng.integers(0, levels + 1, size=(n, num_classes))
  empty_N = counts_NxV.sum(-1) == 0
  counts_NxV[empty_N, 0] = 1
  return counts_NxV / counts_NxV.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Meta-teacher requirements and contraction.


def _apply_meta(meta: MetaTeacher, p_NxV, q_NxV, alpha: float) -> np.ndarray:
  return np.asarray(meta(jnp.asarray(p_NxV), jnp.asarray(q_NxV), alpha), dtype=np.float64)


def check_meta_simplex(meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray, alpha: float,
                       tol: float = 1e-9) -> CheckResult:
  """M1. Violation: max(|sum - 1|, -min entry); non-finite outputs count as infinite."""
  out_NxV = _apply_meta(meta, p_NxV, q_NxV, alpha)
  v_N = np.maximum(np.abs(out_NxV.sum(-1) - 1.0), -out_NxV.min(-1))
  v_N = np.where(np.all(np.isfinite(out_NxV), -1), v_N, np.inf)
  return _result("meta_simplex", v_N, tol, lambda i: dict(
      p_base=np.asarray(p_NxV)[i], q_prev=np.asarray(q_NxV)[i], alpha=alpha, output=out_NxV[i]))


def check_meta_anchoring(meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray, alpha: float,
                         tol: float = 1e-9) -> CheckResult:
  """M2. Violation: max_i (alpha p*_i - t_i), positive when t puts less than weight alpha on p*."""
  out_NxV = _apply_meta(meta, p_NxV, q_NxV, alpha)
  v_N = np.max(alpha * np.asarray(p_NxV, np.float64) - out_NxV, axis=-1)
  return _result("meta_anchoring", v_N, tol, lambda i: dict(
      p_base=np.asarray(p_NxV)[i], q_prev=np.asarray(q_NxV)[i], alpha=alpha, output=out_NxV[i]))


def check_meta_fixed_point(meta: MetaTeacher, p_NxV: np.ndarray, alpha: float,
                           tol: float = 1e-9) -> CheckResult:
  """M5. Violation: L1 distance between G(p*, p*, alpha) and p*."""
  out_NxV = _apply_meta(meta, p_NxV, p_NxV, alpha)
  v_N = np.abs(out_NxV - np.asarray(p_NxV, np.float64)).sum(-1)
  return _result("meta_fixed_point", v_N, tol, lambda i: dict(
      p_base=np.asarray(p_NxV)[i], alpha=alpha, output=out_NxV[i]))


def check_meta_teacher(meta: MetaTeacher, p_NxV: np.ndarray, q_NxV: np.ndarray,
                       alphas: Sequence[float]) -> list[CheckResult]:
  """M1, M2 and M5 for every alpha."""
  results = []
  for alpha in alphas:
    results += [check_meta_simplex(meta, p_NxV, q_NxV, alpha),
                check_meta_anchoring(meta, p_NxV, q_NxV, alpha),
                check_meta_fixed_point(meta, p_NxV, alpha)]
  return results


def contraction_ratio(meta: MetaTeacher, p_base_NxV, q_prev_NxV, alpha: float,
                      direction: Literal["forward", "reverse"] = "forward") -> np.ndarray:
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


def check_contraction(meta: MetaTeacher, p_base_NxV, q_prev_NxV, alpha: float,
                      direction: Literal["forward", "reverse"] = "forward", rate: float | None = None,
                      tol: float = 1e-9, min_kl: float = 1e-12) -> CheckResult:
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
  return _result(f"contraction[{direction}]", v_N, tol, lambda i: dict(
      p_base=np.asarray(p_base_NxV)[i], q_prev=np.asarray(q_prev_NxV)[i], alpha=alpha,
      ratio=ratio_N[i], rate=rate))
