"""Executable axioms for softening operators, and the KL / entropy helpers they use.

Each check runs an operator (a registered family or any user callable `op(p_xV, T)`) on explicit
inputs and returns a `CheckResult` (passed, worst violation, the witness input) instead of only
asserting, so a failed axiom names the input that breaks it. Checks evaluate the operator on a
batch `p_NxV` and compare in float64 numpy; run them under `jax.enable_x64(True)` for tight
tolerances (float32 operators need looser ones). Meta-teacher requirements and the KL contraction
of recursive distillation are checked in `meta_axioms`.

Softening axioms: the names are those of the abstract of Flouro & Chadwick, "Sparse Knowledge
Distillation: A Mathematical Framework for Probability-Domain Temperature Scaling and Multi-Stage
Compression" (arXiv 2601.03195); the precise statements below are jaxrepr's formalisation of them,
not quotations (only the abstract was available):
  A1 ranking      p_i > p_j => F_T(p)_i > F_T(p)_j, and p_i = p_j => F_T(p)_i = F_T(p)_j.
  A2 continuity   small perturbations of p (towards a random point of the simplex, which also
                  fills zeros) or of T give output changes that go to zero with the perturbation.
                  The power family is continuous but not Lipschitz at p_i = 0 (change ~ eps^(1/T)),
                  hence a decreasing eps schedule judged at its smallest step.
  A3 entropy      T -> H(F_T(p)) is non-decreasing on the domain.
  A4 identity     F_1(p) = p.
  A5 boundary     T -> inf: uniform over S(p), S(p) = supp(p) ('support') or all V ('full');
                  T -> 0 (families whose domain contains T < 1): uniform over argmax(p).
  support         for families with the 'support' reading of A5, at every T (not only in the
                  limit): F_T(p)_i = 0 wherever p_i = 0, to float rounding.
Partial access (the abstract's "top-k truncation" setting): truncate to the k largest classes,
renormalise, soften over the kept classes only; no mass may reach a cut class (`check_top_k`, judged
on the output over all V classes).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from jaxrepr.methods.distill import operators

Operator = operators.Operator


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
    parts = ", ".join(
      f"{k}={np.array2string(np.asarray(v), precision=6)}" for k, v in self.witness.items()
    )
    return (
      f"{self.name}: {status} (worst violation {self.worst_violation:.3g}, "
      f"tolerance {self.tolerance:.3g}; witness: {parts})"
    )


def _apply(op: Operator, p_NxV: np.ndarray, T: float) -> np.ndarray:
  return np.asarray(op(jnp.asarray(p_NxV), T), dtype=np.float64)


def check_result(
  name: str, violation_N: np.ndarray, tolerance: float, witness_fn: Callable[[int], dict[str, Any]]
) -> CheckResult:
  """The CheckResult of per-input violations (NaN counts as infinite): passed when the worst is
  within `tolerance`, with `witness_fn(index of the worst)` as its witness."""
  violation_N = np.where(np.isnan(violation_N), np.inf, violation_N)
  worst = int(np.argmax(violation_N))
  worst_value = float(violation_N[worst])
  return CheckResult(name, worst_value <= tolerance, worst_value, tolerance, witness_fn(worst))


def _entropy_np(p_NxV: np.ndarray) -> np.ndarray:
  safe_NxV = np.where(p_NxV > 0, p_NxV, 1.0)
  return -np.sum(np.where(p_NxV > 0, p_NxV * np.log(safe_NxV), 0.0), axis=-1)


def _uniform_over(mask_NxV: np.ndarray) -> np.ndarray:
  return mask_NxV / mask_NxV.sum(axis=-1, keepdims=True)


def _roundoff(out_xV: jax.Array) -> float:
  """Unit roundoff of an operator's output dtype (the default tolerance of the support checks)."""
  return float(np.finfo(np.asarray(out_xV).dtype).eps)


def check_simplex(
  op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float], tol: float = 1e-6
) -> CheckResult:
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


def check_ranking(
  op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float], tie_tol: float = 1e-9
) -> CheckResult:
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
  return check_result("identity", v_N, tol, lambda i: dict(p=p_NxV[i], output=out_NxV[i]))


def check_entropy_monotone(
  op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float], tol: float = 1e-9
) -> CheckResult:
  """A3 on a temperature grid. Violation: the largest entropy decrease between consecutive T."""
  p_NxV = np.asarray(p_NxV, np.float64)
  temps = np.sort(np.asarray(temperatures, np.float64))
  H_TxN = np.stack([_entropy_np(_apply(op, p_NxV, float(T))) for T in temps])
  drop_TxN = H_TxN[:-1] - H_TxN[1:]
  t_idx, n_idx = np.unravel_index(np.argmax(np.nan_to_num(drop_TxN, nan=np.inf)), drop_TxN.shape)
  worst = float(np.nan_to_num(drop_TxN[t_idx, n_idx], nan=np.inf))
  witness = dict(
    p=p_NxV[n_idx],
    T_low=temps[t_idx],
    T_high=temps[t_idx + 1],
    entropy=H_TxN[t_idx : t_idx + 2, n_idx],
  )
  return CheckResult("entropy_monotone", worst <= tol, worst, tol, witness)


def check_continuity(
  op: Operator,
  p_NxV: np.ndarray,
  temperatures: Sequence[float],
  seed: int = 0,
  tol: float = 1e-4,
  p_steps: Sequence[float] = (1e-2, 1e-4, 1e-8, 1e-16, 1e-32, 1e-64, 1e-128),
  t_steps: Sequence[float] = (1e-2, 1e-4, 1e-6, 1e-8),
) -> CheckResult:
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
        worst = (
          float(last_N[i]),
          dict(
            p=p_NxV[i],
            T=T,
            perturbed=kind,
            direction=r_NxV[i] if kind == "p" else 1.0,
            steps=np.asarray(steps),
            l1_changes=np.array([changes[(kind, e)][i] for e in steps]),
          ),
        )
  return CheckResult("continuity", worst[0] <= tol, worst[0], tol, worst[1])


def check_high_temperature_limit(
  op: Operator,
  p_NxV: np.ndarray,
  support: Literal["support", "full"],
  T_high: float = 1e6,
  tol: float = 1e-3,
) -> CheckResult:
  """A5, T -> inf. Violation: L1 distance between F_{T_high}(p) and the uniform over S(p)."""
  p_NxV = np.asarray(p_NxV, np.float64)
  if support not in ("support", "full"):
    raise ValueError(f"support must be 'support' or 'full', got {support!r}")
  mask_NxV = (p_NxV > 0) if support == "support" else np.ones_like(p_NxV, bool)
  target_NxV = _uniform_over(mask_NxV.astype(np.float64))
  out_NxV = _apply(op, p_NxV, T_high)
  v_N = np.abs(out_NxV - target_NxV).sum(-1)
  return check_result(
    f"high_temperature_limit[{support}]",
    v_N,
    tol,
    lambda i: dict(p=p_NxV[i], T=T_high, output=out_NxV[i], target=target_NxV[i]),
  )


def check_low_temperature_limit(
  op: Operator, p_NxV: np.ndarray, T_low: float = 1e-3, tol: float = 1e-3
) -> CheckResult:
  """A5, T -> 0. Violation: L1 distance between F_{T_low}(p) and the uniform over argmax(p)
  (exact ties form the argmax set; near ties need a smaller T_low)."""
  p_NxV = np.asarray(p_NxV, np.float64)
  target_NxV = _uniform_over((p_NxV == p_NxV.max(-1, keepdims=True)).astype(np.float64))
  out_NxV = _apply(op, p_NxV, T_low)
  v_N = np.abs(out_NxV - target_NxV).sum(-1)
  return check_result(
    "low_temperature_limit",
    v_N,
    tol,
    lambda i: dict(p=p_NxV[i], T=T_low, output=out_NxV[i], target=target_NxV[i]),
  )


def check_support(
  op: Operator, p_NxV: np.ndarray, temperatures: Sequence[float], tol: float | None = None
) -> CheckResult:
  """No mass created on zero-probability classes, at every T. Violation: the mass F_T(p) puts on
  classes with p_i = 0. The tolerance defaults to the unit roundoff of the operator's output dtype
  (float rounding, not a loose 1e-3): a faithful operator computes those entries as exact zeros
  (the power family: exp(-inf) = 0), so any visible mass there is created, not rounded."""
  p_NxV = np.asarray(p_NxV, np.float64)
  zero_NxV = p_NxV == 0
  worst, tol_used = (-1.0, None), 0.0 if tol is None else tol
  for T in temperatures:
    raw_NxV = op(jnp.asarray(p_NxV), T)
    tol_used = _roundoff(raw_NxV) if tol is None else tol
    out_NxV = np.asarray(raw_NxV, np.float64)
    v_N = np.nan_to_num(np.where(zero_NxV, np.abs(out_NxV), 0.0).sum(-1), nan=np.inf)
    i = int(np.argmax(v_N))
    if v_N[i] > worst[0]:
      worst = (float(v_N[i]), dict(p=p_NxV[i], T=T, output=out_NxV[i]))
  return CheckResult("support", worst[0] <= tol_used, worst[0], tol_used, worst[1])


TopK = Callable[[jax.Array, Any, int], jax.Array]


def check_top_k(
  top_k: TopK,
  p_NxV: np.ndarray,
  temperatures: Sequence[float],
  ks: Sequence[int],
  tol: float | None = None,
) -> CheckResult:
  """Partial access: `top_k(p_xV, T, k)` truncates p to its k largest classes, renormalises,
  softens over the kept classes and returns a distribution over all V classes (what the train
  step calls: `functools.partial(operators.soften_top_k, family)`).

  Judged on that full output, so mass leaked after the k softened values are scattered back among
  the V classes is seen. Violation: the larger of (a) the mass on classes whose p lies strictly
  below the k-th largest p (cut whichever way ties at the k-th value are broken) and (b) the mass
  outside the output's k largest entries (at most k classes may carry mass). The tolerance
  defaults to the unit roundoff of the output dtype: the cut entries of a faithful pipeline are
  exact zeros.
  """
  p_NxV = np.asarray(p_NxV, np.float64)
  num_classes = p_NxV.shape[-1]
  worst, tol_used = (-1.0, None), 0.0 if tol is None else tol
  for k in ks:
    if not 1 <= k <= num_classes:
      raise ValueError(f"top-k needs 1 <= k <= {num_classes}, got k = {k}")
    kth_N1 = -np.sort(-p_NxV, axis=-1)[:, k - 1 : k]
    cut_NxV = p_NxV < kth_N1
    for T in temperatures:
      raw_NxV = top_k(jnp.asarray(p_NxV), T, k)
      tol_used = _roundoff(raw_NxV) if tol is None else tol
      out_NxV = np.asarray(raw_NxV, np.float64)
      on_cut_N = np.where(cut_NxV, np.abs(out_NxV), 0.0).sum(-1)
      beyond_k_N = np.abs(-np.sort(-out_NxV, axis=-1)[:, k:]).sum(-1)
      v_N = np.nan_to_num(np.maximum(on_cut_N, beyond_k_N), nan=np.inf)
      i = int(np.argmax(v_N))
      if v_N[i] > worst[0]:
        worst = (float(v_N[i]), dict(p=p_NxV[i], T=T, k=k, output=out_NxV[i]))
  return CheckResult("top_k", worst[0] <= tol_used, worst[0], tol_used, worst[1])


def top_k_sizes(num_classes: int) -> list[int]:
  """k = 1, about V / 2 and V - 1: one revealed class, half of them, all but one."""
  return sorted({k for k in (1, num_classes // 2, num_classes - 1) if 1 <= k <= num_classes})


def check_family(
  family: operators.OperatorFamily,
  p_NxV: np.ndarray,
  temperatures: Sequence[float] | None = None,
  seed: int = 0,
) -> list[CheckResult]:
  """Every softening axiom for a family, on its documented domain and A5 reading (the support
  check for the 'support' reading), and the top-k pipeline built on the family."""
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
  if family.limit_support == "support":
    results.append(check_support(family, p_NxV, temps))
  results.append(
    check_top_k(
      functools.partial(operators.soften_top_k, family),
      p_NxV,
      temps,
      top_k_sizes(np.shape(p_NxV)[-1]),
    )
  )
  return results


def failures(results: Sequence[CheckResult]) -> str:
  """A readable summary of the failed checks ('' when all passed)."""
  return "\n".join(str(r) for r in results if not r.passed)


def random_distributions(
  rng: np.random.Generator, n: int, num_classes: int, levels: int = 12
) -> np.ndarray:
  """Test inputs with zeros and exact ties: integer counts in [0, levels] normalised (at least
  one count is positive). Distinct entries differ by a ratio of at least levels / (levels - 1)."""
  counts_NxV = rng.integers(0, levels + 1, size=(n, num_classes))
  empty_N = counts_NxV.sum(-1) == 0
  counts_NxV[empty_N, 0] = 1
  return counts_NxV / counts_NxV.sum(-1, keepdims=True)
