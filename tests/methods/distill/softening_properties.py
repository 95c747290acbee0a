"""Softening properties on drawn inputs: the family claims, continuity in T and in p (top-k:
top_k_properties.py).

Each property returns a hypothesis test over the inputs of `distill_testlib`; a failed claim raises
`AxiomViolation` naming it, so the regression list can say which claim rejected an operator.
Continuity in T is searched to cells of width ~1e-10 in log T, so a jump anywhere in the domain is
found.

Tolerances come from a floating-point error model of each family (`_reference`), not a guessed
epsilon: softmax(x) computed in precision eps errs by at most eps (10 max|x| + V + 8) relative per
entry (the rounding of x = l / T, of x - max x and of exp, each a few ulp of |x|, plus the sum of V
terms that normalises), plus a few times the smallest normal number, below which XLA flushes
results to zero. The uniform mixture errs by 6 eps relative plus 4 eps / V. Every registered
operator stays inside these bounds (also over 400 examples per property with random seeds); every
operator in the regression list leaves them by orders of magnitude. Support and top-k need no error
model: a faithful operator computes the entries of zero-probability and cut classes as exact zeros.
"""

import dataclasses
from collections.abc import Callable

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis.extra import numpy as hnp

from jaxrepr.methods.distill import axioms
from jaxrepr.methods.distill import operators as ops
from tests.methods.distill.distill_testlib import (
  CI,
  CLASS_COUNTS,
  LOG_T_DOMAIN,
  ROWS,
  _logit_input,
  _probs,
  _require,
  _rows,
  log_temperatures,
  logit_vectors,
)

# ----------------------------------------------------------------------------------------------
# Candidates: an operator together with the family whose claims it is held to.


@dataclasses.dataclass(frozen=True)
class Candidate:
  """`apply(x_RxV, T_R)`: x are probabilities (inputs='probs') or logits (inputs='logits').

  `rule` is the family whose claims apply ('power', 'mixture', 'hybrid'); `formula` also compares
  with that family's defining formula (only for registered operators: a user operator is held to
  the axioms, not to one family's numbers).
  """

  name: str
  apply: Callable
  rule: str
  inputs: str = "probs"
  formula: bool = True

  def __str__(self) -> str:
    return self.name


REGISTERED = [Candidate(name, ops.FAMILIES[name], name) for name in sorted(ops.FAMILIES)]
# The train step's own path for the power family without top-k or meta-teacher.
LOGIT_PATH = Candidate("soften_logits", jax.jit(ops.soften_logits), "power", inputs="logits")
SOFTENING = REGISTERED + [LOGIT_PATH]


def _reference(
  rule: str, l_RxV: np.ndarray, p_RxV: np.ndarray, T_R: np.ndarray, eps: float, tiny: float
):
  """Float64 reference outputs of family `rule`, with the error model of an implementation in
  precision `eps`: returns (reference, relative bound, absolute bound), each broadcastable to RxV.

  l is the log-domain input (log p with -inf at zeros, or logits), p the probabilities.
  """
  V = l_RxV.shape[-1]
  T_Rx1 = T_R[:, None]
  with np.errstate(invalid="ignore", divide="ignore"):
    x_RxV = l_RxV / T_Rx1
    power_RxV = _probs(x_RxV)
    x_max_R = np.max(np.where(np.isfinite(x_RxV), np.abs(x_RxV), 0.0), axis=-1)
  power_rel_Rx1 = (eps * (10.0 * x_max_R + V + 8.0))[:, None]
  power_abs = 4.0 * tiny
  mix_RxV = p_RxV / T_Rx1 + (1.0 - 1.0 / T_Rx1) / V
  mix_rel, mix_abs = 6.0 * eps, 4.0 * eps / V + 4.0 * tiny
  if rule == "power":
    return power_RxV, power_rel_Rx1, power_abs
  if rule == "mixture":
    return mix_RxV, mix_rel, mix_abs
  sharp_Rx1 = T_Rx1 < 1.0
  return (
    np.where(sharp_Rx1, power_RxV, mix_RxV),
    np.where(sharp_Rx1, power_rel_Rx1, mix_rel),
    np.where(sharp_Rx1, power_abs, mix_abs),
  )


def _entropy(F_RxV: np.ndarray) -> np.ndarray:
  safe_RxV = np.where(F_RxV > 0, F_RxV, 1.0)
  return -np.sum(np.where(F_RxV > 0, F_RxV * np.log(safe_RxV), 0.0), axis=-1)


def _check_softening(
  cand: Candidate,
  x_V: np.ndarray,
  T_R: np.ndarray,
  F_RxV: np.ndarray,
  eps: float,
  tiny: float,
  enabled: frozenset,
) -> None:
  """Every claim of `cand.rule` on rows (x, T_r) with outputs F; raises AxiomViolation."""
  V = x_V.shape[-1]
  x_V = np.asarray(x_V, np.float64)
  if cand.inputs == "logits":
    l_V, p_V = x_V, _probs(x_V)
  else:
    with np.errstate(divide="ignore"):
      l_V, p_V = np.log(x_V), x_V
  l_RxV = np.broadcast_to(l_V, F_RxV.shape)
  p_RxV = np.broadcast_to(p_V, F_RxV.shape)
  ref_RxV, rel, abs_ = _reference(cand.rule, l_RxV, p_RxV, T_R, eps, tiny)
  finite_R = np.all(np.isfinite(F_RxV), axis=-1)
  F_RxV = np.where(np.isfinite(F_RxV), F_RxV, 0.0)
  err_RxV = rel * np.maximum(np.abs(F_RxV), ref_RxV) + abs_
  where = lambda r: f"T={T_R[r]:.9g}, V={V}, x={x_V}, output={F_RxV[r]}"

  # Simplex. The sum of V rounded terms, renormalised, is within (V + 2) eps of 1; the input's own
  # normalisation adds up to V eps more.
  sum_err_R = np.abs(F_RxV.sum(-1) - 1.0)
  bad_R = ~finite_R | (F_RxV.min(-1) < 0) | (sum_err_R > (2 * V + 8) * eps)
  _require(not bad_R.any(), "simplex", lambda: where(int(np.argmax(bad_R))), enabled)

  # A4 identity: F_1(p) = p up to the family's rounding and p's normalisation slack.
  one_R = T_R == 1.0
  dev_RxV = np.abs(F_RxV - p_RxV) - (err_RxV + (V + 2) * eps * p_RxV)
  bad_R = one_R & (dev_RxV.max(-1) > 0)
  _require(not bad_R.any(), "identity", lambda: where(int(np.argmax(bad_R))), enabled)

  # A1 ranking, on the levels of the input sorted once (O(V log V), so V = 1000 is cheap). Levels
  # of x itself: float64 log maps up to ~700 neighbouring small p to one value.
  order_V = np.argsort(x_V, kind="stable")
  key_V = x_V[order_V]
  starts = np.flatnonzero(np.r_[True, key_V[1:] != key_V[:-1]])
  Fs_RxV = F_RxV[:, order_V]
  level_max_RxL = np.maximum.reduceat(Fs_RxV, starts, axis=1)
  level_min_RxL = np.minimum.reduceat(Fs_RxV, starts, axis=1)
  # Ties: equal inputs go through identical elementwise arithmetic, so outputs are bitwise equal;
  # any spread means the operator treats classes by position.
  spread_R = np.max(level_max_RxL - level_min_RxL, axis=-1)
  _require(
    not (spread_R > 0).any(),
    "ranking",
    lambda: "tie broken: " + where(int(np.argmax(spread_R))),
    enabled,
  )
  ref_L = ref_RxV[:, order_V][:, starts]
  err_L = np.maximum.reduceat(err_RxV[:, order_V], starts, axis=1)
  lower, upper = level_max_RxL[:, :-1], level_min_RxL[:, 1:]
  slack = err_L[:, :-1] + err_L[:, 1:]
  # Never reversed beyond both entries' rounding; strictly ordered wherever the exact gap (the
  # reference, itself within one error bound) exceeds twice the rounding of both entries.
  reversed_RxL = lower - upper > slack
  merged_RxL = (ref_L[:, 1:] - ref_L[:, :-1] > 2 * slack) & (upper <= lower)
  bad_R = (reversed_RxL | merged_RxL).any(-1)
  _require(
    not bad_R.any(), "ranking", lambda: "order lost: " + where(int(np.argmax(bad_R))), enabled
  )

  # A3 entropy, between consecutive drawn temperatures. |dH| <= sum_i |1 + log F_i| |dF_i|
  # <= rel (H + 1) <= rel (log V + 2) for relative errors rel, plus the numpy sum's V eps.
  H_R = _entropy(F_RxV)
  rel_R = np.broadcast_to(rel, (len(T_R), 1))[:, 0]
  abs_R = np.broadcast_to(abs_, (len(T_R), 1))[:, 0]
  # Entries at the absolute bound (below ~1e-15) contribute |F log F| <= abs (800 + log V) each.
  tol_H_R = (rel_R + V * eps) * (np.log(V) + 2.0) + V * abs_R * (800.0 + np.log(V))
  drop_R = H_R[:-1] - H_R[1:] - (tol_H_R[:-1] + tol_H_R[1:])
  _require(
    not (drop_R > 0).any(),
    "entropy",
    lambda: (
      f"H drops by {H_R[np.argmax(drop_R)] - H_R[np.argmax(drop_R) + 1]:.3g} from "
      f"{where(int(np.argmax(drop_R)))} to T={T_R[np.argmax(drop_R) + 1]:.9g}"
    ),
    enabled,
  )

  S_V = np.isfinite(l_V)
  power_rows_R = (
    np.ones_like(T_R, bool)
    if cand.rule == "power"
    else (T_R < 1.0 if cand.rule == "hybrid" else np.zeros_like(T_R, bool))
  )
  # Support, on the power branch at every T: exp(-inf) = 0, so a zero-probability class keeps an
  # exact zero and any mass there is created (no rounding tolerance needed).
  leak_R = np.where(power_rows_R, np.abs(F_RxV[:, ~S_V]).sum(-1), 0.0)
  _require(
    not (leak_R > 0).any(),
    "support",
    lambda: f"mass {leak_R.max():.3g} on zero-probability classes: {where(int(np.argmax(leak_R)))}",
    enabled,
  )

  # A5 as rates that hold at every T of the branch, so both limits are approached at the rate the
  # family claims. Power: exp(l_i / T) / Z lies within a factor exp(s / T) of 1 / |S| on the
  # support S (s the log-odds range), so |F - u_S|_1 <= expm1(s / T); and the mass off the argmax
  # set A is at most sum_{i not in A} exp((l_i - l_max) / T) / |A|, so |F - u_A|_1 <= twice that.
  # Mixture: |F - u|_1 = |p - u|_1 / T.
  total_err_R = err_RxV.sum(-1)
  A_V = l_V == l_V.max()
  s = l_V[S_V].max() - l_V[S_V].min()
  with np.errstate(over="ignore"):
    high_bound_R = np.expm1(s / T_R)
  gap_V = np.where(S_V & ~A_V, l_V - l_V.max(), -np.inf)  # <= 0, so exp cannot overflow
  off_A_R = np.sum(np.exp(gap_V[None] / T_R[:, None]), axis=-1) / A_V.sum()
  u_S, u_A, u = S_V / S_V.sum(), A_V / A_V.sum(), np.full(V, 1.0 / V)
  l1 = lambda a, b: np.abs(a - b).sum(-1)
  bad_R = power_rows_R & (
    (l1(F_RxV, u_S) > high_bound_R + total_err_R) | (l1(F_RxV, u_A) > 2.0 * off_A_R + total_err_R)
  )
  bad_R |= ~power_rows_R & (l1(F_RxV, u) > l1(p_V, u) / T_R + total_err_R + (V + 2) * eps)
  _require(not bad_R.any(), "limits", lambda: where(int(np.argmax(bad_R))), enabled)

  if cand.formula:
    dev_RxV = np.abs(F_RxV - ref_RxV) - 2.0 * err_RxV
    bad_R = (dev_RxV > 0).any(-1)
    _require(not bad_R.any(), "formula", lambda: where(int(np.argmax(bad_R))), enabled)


SOFTENING_AXIOMS = frozenset(
  {"simplex", "identity", "ranking", "entropy", "support", "limits", "formula"}
)


def sweep_property(cand: Candidate, enabled=SOFTENING_AXIOMS, settings=CI, dtype=np.float64):
  """A1, A3, A4, A5, simplex (and the family formula) on one drawn input across drawn T."""
  finfo = np.finfo(dtype)

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_V = data.draw(logit_vectors(num_classes), label="logits")
    T_R = np.exp(data.draw(log_temperatures(cand.rule), label="log_T")).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
      if cand.inputs == "logits":
        x_V = _logit_input(z_V).astype(dtype)
      elif dtype == np.float64:
        x_V = _probs(z_V)
      else:  # the train step's float32 softmax of finite teacher logits
        x_V = np.asarray(jax.nn.softmax(jnp.asarray(_logit_input(z_V), dtype)))
      F_RxV = np.asarray(cand.apply(jnp.asarray(_rows(x_V)), jnp.asarray(T_R)), np.float64)
    _check_softening(
      cand, x_V, T_R.astype(np.float64), F_RxV, float(finfo.eps), float(finfo.tiny), enabled
    )

  return run


def _jump_search(apply, x_V, log_T_bounds, scan=32, points=8, rounds=12):
  """Searches each region [bounds[i], bounds[i + 1]] (log T) for a discontinuity: scan it at 32
  points, keep the cell with the largest L1 output change, split that into 7, and repeat. A jump
  of size J keeps change J however small its cell gets, a continuous operator's change shrinks
  with the cell; one search per region, so a steep continuous stretch elsewhere cannot crowd a jump
  out. Every call evaluates 64 rows (the shape the other properties compiled).
  Returns the final cells' log T grid (regions x 8) and their changes (regions x 7)."""

  def changes(grid_CxP):
    log_T = grid_CxP.reshape(-1, ROWS)
    F = np.concatenate(
      [
        np.asarray(apply(jnp.asarray(_rows(x_V)), jnp.asarray(np.exp(t_R))), np.float64)
        for t_R in log_T
      ]
    )
    F_CxPxV = F.reshape(grid_CxP.shape + x_V.shape)
    return np.nan_to_num(np.abs(np.diff(F_CxPxV, axis=1)).sum(-1), nan=np.inf)

  cells_C = np.arange(log_T_bounds.size - 1)
  grid_CxP = (
    log_T_bounds[:-1, None] + np.diff(log_T_bounds)[:, None] * np.linspace(0.0, 1.0, scan)[None]
  )
  for _ in range(rounds + 1):
    change_CxP = changes(grid_CxP)
    k_C = np.argmax(change_CxP, axis=1)
    lo_C, hi_C = grid_CxP[cells_C, k_C], grid_CxP[cells_C, k_C + 1]
    grid_CxP = lo_C[:, None] + (hi_C - lo_C)[:, None] * np.linspace(0.0, 1.0, points)[None]
  return grid_CxP, changes(grid_CxP)


def jump_property(cand: Candidate, enabled=frozenset({"continuity_T"}), settings=CI):
  """A2 in T: no jump anywhere in the domain, searched in 8 regions with drawn boundaries."""

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_V = data.draw(logit_vectors(num_classes), label="logits")
    lo, hi = LOG_T_DOMAIN[cand.rule]
    # 7 interior boundaries: 3 chosen by hypothesis, 4 spread from a drawn seed.
    chosen = data.draw(hnp.arrays(np.float64, 3, elements=st.floats(lo, hi)), label="boundaries")
    spread = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed")).uniform(
      lo, hi, 4
    )
    bounds = np.sort(np.concatenate([[lo, hi], chosen, spread]))
    with jax.enable_x64(True):
      x_V = _logit_input(z_V) if cand.inputs == "logits" else _probs(z_V)
      grid_CxP, change_CxK = _jump_search(cand.apply, x_V, bounds)
    # |dF/dlog T|_1 <= 4 log V + 2 for every family: for softmax(x) with x = l / T it equals
    # E_F|x - E_F x| <= 2 E_F[max x - x] <= 2 (log V + V log V / V) (split at x_max - x = log V,
    # where F_i <= exp(x_i - max x)); for the mixture it is |p - u|_1 / T <= 2. So a continuous
    # operator changes by at most that times the cell width, plus the rounding of both ends (the
    # softmax error bound at the cell's smaller T, the larger one).
    l_V = x_V if cand.inputs == "logits" else np.log(np.where(x_V > 0, x_V, 1.0))
    x_max_CxK = np.max(np.abs(l_V)) / np.exp(grid_CxP[:, :-1])
    rounding_CxK = 4.0 * np.finfo(np.float64).eps * (10.0 * x_max_CxK + num_classes + 8.0)
    tol_CxK = (
      (4.0 * np.log(num_classes) + 2.0) * np.diff(grid_CxP, axis=1)
      + rounding_CxK
      + 1e-300 * num_classes
    )
    excess_CxK = change_CxK - tol_CxK
    c, k = np.unravel_index(np.argmax(excess_CxK), excess_CxK.shape)
    _require(
      excess_CxK[c, k] <= 0,
      "continuity_T",
      lambda: (
        f"output jumps by {change_CxK[c, k]:.3g} (tolerance {tol_CxK[c, k]:.3g}) between "
        f"T={np.exp(grid_CxP[c, k]):.17g} and T={np.exp(grid_CxP[c, k + 1]):.17g}, "
        f"V={num_classes}, x={x_V}"
      ),
      enabled,
    )

  return run


def p_continuity_property(cand: Candidate, enabled=frozenset({"continuity_p"}), settings=CI):
  """A2 in p, through the library check (`axioms.check_continuity`) on drawn rows and T <= 10:
  the power family's change at a zero entry is ~eps^(1/T), below its 1e-4 tolerance at eps =
  1e-128 only for T <= 10 with up to 1000 classes (1000 * 1e-12.8 ~ 2e-10)."""
  lo = LOG_T_DOMAIN[cand.rule][0]

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_V = data.draw(logit_vectors(num_classes), label="logits")
    T = float(np.exp(data.draw(st.floats(lo, np.log(10.0)), label="log_T")))
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    # Rows of different sharpness from one drawn vector: softmax(c z) for c in [1e-2, 3].
    c_R = 10.0 ** np.random.default_rng(seed).uniform(-2.0, 0.5, ROWS)
    p_RxV = _probs(c_R[:, None] * z_V[None])
    # One temperature per row, the shape the other properties compiled the operator for.
    apply = lambda p, T: cand.apply(p, jnp.full(p.shape[:-1], T, p.dtype))
    with jax.enable_x64(True):
      result = axioms.check_continuity(apply, p_RxV, [T], seed=seed)
    _require(result.passed, "continuity_p", lambda: str(result), enabled)

  return run
