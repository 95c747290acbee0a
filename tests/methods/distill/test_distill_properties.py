"""Property tests of the distillation axioms over drawn inputs, and operators they must reject.

The softening axioms A1-A5 (Flouro & Chadwick, arXiv 2601.03195) and the meta-teacher requirements
with their KL contraction (Flouro & Chadwick, arXiv 2601.13100) are stated in
`jaxrepr.methods.distill.axioms`; each family's formula, limits and contraction rate in
`operators`. Hypothesis draws every input:
  class counts   2, 17 or 1000 classes (one compiled shape each), with up to V - 1
                 zero-probability classes, so supports of every size from 1 to 1000;
  logits         Gaussian of a drawn scale (1e-9 .. 1e4) around a drawn shift (0, +-1e4, ...),
                 with drawn ties (shared levels, a filled fraction up to all-equal, rounding to a
                 quantum), a spike up to 1e4 (one-hot-like), float32 rounding and -inf classes;
  temperatures   63 per example, log-uniform over the family's domain ([1e-4, 1e8], [1, 1e8] for
                 the mixture), half value by value, half spread from a drawn seed; plus T = 1;
  anchoring      alpha per row in [0, 1] (rows 0 and 1 hold the endpoints 1 and 0).
Each example evaluates 64 rows per operator call, so a window as narrow as 3 < T < 5 is hit in most
examples, and the shapes (64 rows by 2, 17 or 1000 classes) compile once per operator. Continuity in
T is searched to cells of width ~1e-10 in log T, so a jump anywhere in the domain is found.

Tolerances come from a floating-point error model of each family (`_reference`), not a guessed
epsilon: softmax(x) computed in precision eps errs by at most eps (10 max|x| + V + 8) relative per
entry (the rounding of x = l / T, of x - max x and of exp, each a few ulp of |x|, plus the sum of V
terms that normalises), plus a few times the smallest normal number, below which XLA flushes
results to zero. The uniform mixture errs by 6 eps relative plus 4 eps / V. Every registered
operator stays inside these bounds (also over 400 examples per property with random seeds); every
operator in `BAD_OPERATORS` leaves them by orders of magnitude.

Known edge case, kept out of the inputs: XLA's CPU backend flushes subnormal numbers to zero
(log(1e-310) = -inf there), so a subnormal probability or alpha is an exact zero to every operator:
P_T maps (1 - 1e-310, 1e-310) to (1, 0) at every T instead of moving mass to the second class. The
generators hand the operators that zero instead (`_flush`); the float32 softmax of the train step
flushes the same way before a family ever sees its output.
"""

import dataclasses
from typing import Callable

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis.extra import numpy as hnp

from jaxrepr.methods.distill import axioms
from jaxrepr.methods.distill import operators as ops

ROWS = 64
CLASS_COUNTS = (2, 17, 1000)
# Moderate logits keep many classes above float64 underflow (a log-odds gap of 745); the wide
# range gives the extremes, where all but a few classes underflow.
LOGITS = st.floats(-30.0, 30.0) | st.floats(-300.0, 300.0) | st.floats(-1e4, 1e4)
# One temperature domain per family, in log T. Wide enough that both limits of A5 are reached
# (T = 1e-4 turns a log-odds gap of 1e-3 into 10; T = 1e8 flattens the largest float64 log-odds
# gap, 745, to 7e-6), narrow enough that l / T cannot overflow (745 / 1e-4 = 7.5e6).
LOG_T_DOMAIN = {"power": (np.log(1e-4), np.log(1e8)), "mixture": (0.0, np.log(1e8)),
                "hybrid": (np.log(1e-4), np.log(1e8))}
# Derandomised: the examples are a function of each test's code, so CI is reproducible and a
# regression run explores exactly the examples the real operator passed. No example database.
CI = hypothesis.settings(deadline=None, derandomize=True, database=None,
                         suppress_health_check=[hypothesis.HealthCheck.too_slow,
                                                hypothesis.HealthCheck.data_too_large])
SWEEP_EXAMPLES = 40
JUMP_EXAMPLES = 30
P_CONTINUITY_EXAMPLES = 15
META_EXAMPLES = 40


class AxiomViolation(AssertionError):
  """A property failed; `axiom` names it, so a regression can say which property rejected it."""

  def __init__(self, axiom: str, message: str):
    super().__init__(f"{axiom}: {message}")
    self.axiom = axiom


def _require(ok: bool, axiom: str, message: Callable[[], str], enabled: frozenset) -> None:
  if axiom in enabled and not ok:
    raise AxiomViolation(axiom, message())


# ----------------------------------------------------------------------------------------------
# Inputs.


def _flush(x: np.ndarray) -> np.ndarray:
  """Subnormal values to zero, as XLA sees them (module docstring)."""
  return np.where(np.abs(x) < np.finfo(np.float64).tiny, 0.0, x)


def _probs(x_xV: np.ndarray) -> np.ndarray:
  """softmax over the last axis in float64 numpy; -inf logits give exact zeros, subnormal results
  are flushed."""
  x_xV = np.asarray(x_xV, np.float64)
  with np.errstate(invalid="ignore"):
    e_xV = np.exp(x_xV - np.max(x_xV, axis=-1, keepdims=True))
  return _flush(e_xV / np.sum(e_xV, axis=-1, keepdims=True))


def _logits(draw, num_classes: int) -> np.ndarray:
  """Logits with ties, extremes, spikes and -inf (zero-probability) classes; at least one finite.

  A Gaussian vector of a drawn scale (3, 100 .. 1e4 .. 1e-9) around a drawn shift (0, +-1e4, ...),
  then drawn structure on top:
    ties      'levels': all classes share 2-6 of the values; 'fill': a drawn fraction of the
              classes (up to all: all-equal logits) takes one drawn value; 'quantum': rounding to
              a drawn fraction of the spread;
    spike     one class raised by up to 1e4 (one-hot-like);
    float32   rounding to float32 (ties and near-ties at its ulp);
    zeros     up to V - 1 classes at -inf.
  """
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
  # Typical magnitudes first: hypothesis tends to start from the first entry.
  scale = draw(st.sampled_from((3.0, 100.0, 30.0, 0.3, 300.0, 1e4, 1e-3, 1e-9))
               | st.floats(-9.0, 4.0).map(lambda e: 10.0**e), label="scale")
  shift = draw(st.sampled_from((0.0, 1e4, -1e4)) | LOGITS, label="shift")
  z_V = shift + scale * rng.standard_normal(num_classes)
  ties = draw(st.sampled_from(("none", "levels", "fill", "quantum")), label="ties")
  if ties == "levels":
    levels = rng.choice(z_V, draw(st.integers(2, 6), label="num_levels"))
    z_V = levels[rng.integers(0, levels.size, num_classes)]
  elif ties == "fill":
    fraction = draw(st.floats(0.0, 1.0), label="fill_fraction")
    z_V[rng.random(num_classes) < fraction] = draw(LOGITS, label="fill_value")
  elif ties == "quantum":  # equal quotients give exactly equal logits
    quantum = max(np.ptp(z_V), 1e-300) * 10.0 ** draw(st.floats(-4.0, 0.0), label="log10_quantum")
    z_V = np.round(z_V / quantum) * quantum
  if draw(st.booleans(), label="spike"):
    z_V[rng.integers(num_classes)] += 10.0 ** draw(st.floats(-3.0, 4.0), label="log10_spike")
  if draw(st.booleans(), label="float32"):
    z_V = z_V.astype(np.float32).astype(np.float64)
  if draw(st.booleans(), label="zero_probabilities"):  # from 1 to V - 1 of them
    z_V[rng.permutation(num_classes)[:rng.integers(1, num_classes)]] = -np.inf
  return z_V


logit_vectors = st.composite(_logits)


@st.composite
def log_temperatures(draw, rule: str, size: int = ROWS - 1) -> np.ndarray:
  """Sorted log T over the family's domain with log T = 0 (T = 1) included."""
  lo, hi = LOG_T_DOMAIN[rule]
  # Hypothesis-chosen values (boundaries, repeats, values near one another) and an even spread.
  chosen = draw(hnp.arrays(np.float64, size // 2, elements=st.floats(lo, hi)))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  spread = rng.uniform(lo, hi, size - size // 2)
  return np.sort(np.concatenate([[0.0], chosen, spread]))


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


def _reference(rule: str, l_RxV: np.ndarray, p_RxV: np.ndarray, T_R: np.ndarray, eps: float,
               tiny: float):
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
  return (np.where(sharp_Rx1, power_RxV, mix_RxV), np.where(sharp_Rx1, power_rel_Rx1, mix_rel),
          np.where(sharp_Rx1, power_abs, mix_abs))


def _entropy(F_RxV: np.ndarray) -> np.ndarray:
  safe_RxV = np.where(F_RxV > 0, F_RxV, 1.0)
  return -np.sum(np.where(F_RxV > 0, F_RxV * np.log(safe_RxV), 0.0), axis=-1)


def _check_softening(cand: Candidate, x_V: np.ndarray, T_R: np.ndarray, F_RxV: np.ndarray,
                     eps: float, tiny: float, enabled: frozenset) -> None:
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
  _require(not (spread_R > 0).any(), "ranking",
           lambda: "tie broken: " + where(int(np.argmax(spread_R))), enabled)
  ref_L = ref_RxV[:, order_V][:, starts]
  err_L = np.maximum.reduceat(err_RxV[:, order_V], starts, axis=1)
  lower, upper = level_max_RxL[:, :-1], level_min_RxL[:, 1:]
  slack = err_L[:, :-1] + err_L[:, 1:]
  # Never reversed beyond both entries' rounding; strictly ordered wherever the exact gap (the
  # reference, itself within one error bound) exceeds twice the rounding of both entries.
  reversed_RxL = lower - upper > slack
  merged_RxL = (ref_L[:, 1:] - ref_L[:, :-1] > 2 * slack) & (upper <= lower)
  bad_R = (reversed_RxL | merged_RxL).any(-1)
  _require(not bad_R.any(), "ranking", lambda: "order lost: " + where(int(np.argmax(bad_R))),
           enabled)

  # A3 entropy, between consecutive drawn temperatures. |dH| <= sum_i |1 + log F_i| |dF_i|
  # <= rel (H + 1) <= rel (log V + 2) for relative errors rel, plus the numpy sum's V eps.
  H_R = _entropy(F_RxV)
  rel_R = np.broadcast_to(rel, (len(T_R), 1))[:, 0]
  abs_R = np.broadcast_to(abs_, (len(T_R), 1))[:, 0]
  # Entries at the absolute bound (below ~1e-15) contribute |F log F| <= abs (800 + log V) each.
  tol_H_R = (rel_R + V * eps) * (np.log(V) + 2.0) + V * abs_R * (800.0 + np.log(V))
  drop_R = H_R[:-1] - H_R[1:] - (tol_H_R[:-1] + tol_H_R[1:])
  _require(not (drop_R > 0).any(), "entropy", lambda: (
      f"H drops by {H_R[np.argmax(drop_R)] - H_R[np.argmax(drop_R) + 1]:.3g} from "
      f"{where(int(np.argmax(drop_R)))} to T={T_R[np.argmax(drop_R) + 1]:.9g}"), enabled)

  # A5 as rates that hold at every T of the branch, so both limits are approached at the rate the
  # family claims. Power: exp(l_i / T) / Z lies within a factor exp(s / T) of 1 / |S| on the
  # support S (s the log-odds range), so |F - u_S|_1 <= expm1(s / T); zeros stay exactly zero; and
  # the mass off the argmax set A is at most sum_{i not in A} exp((l_i - l_max) / T) / |A|, so
  # |F - u_A|_1 <= twice that. Mixture: |F - u|_1 = |p - u|_1 / T.
  total_err_R = err_RxV.sum(-1)
  S_V = np.isfinite(l_V)
  A_V = l_V == l_V.max()
  s = l_V[S_V].max() - l_V[S_V].min()
  with np.errstate(over="ignore"):
    high_bound_R = np.expm1(s / T_R)
  gap_V = np.where(S_V & ~A_V, l_V - l_V.max(), -np.inf)  # <= 0, so exp cannot overflow
  off_A_R = np.sum(np.exp(gap_V[None] / T_R[:, None]), axis=-1) / A_V.sum()
  u_S, u_A, u = S_V / S_V.sum(), A_V / A_V.sum(), np.full(V, 1.0 / V)
  l1 = lambda a, b: np.abs(a - b).sum(-1)
  power_rows_R = np.ones_like(T_R, bool) if cand.rule == "power" else (
      T_R < 1.0 if cand.rule == "hybrid" else np.zeros_like(T_R, bool))
  bad_R = power_rows_R & ((F_RxV[:, ~S_V] != 0).any(-1)
                          | (l1(F_RxV, u_S) > high_bound_R + total_err_R)
                          | (l1(F_RxV, u_A) > 2.0 * off_A_R + total_err_R))
  bad_R |= ~power_rows_R & (l1(F_RxV, u) > l1(p_V, u) / T_R + total_err_R + (V + 2) * eps)
  _require(not bad_R.any(), "limits", lambda: where(int(np.argmax(bad_R))), enabled)

  if cand.formula:
    dev_RxV = np.abs(F_RxV - ref_RxV) - 2.0 * err_RxV
    bad_R = (dev_RxV > 0).any(-1)
    _require(not bad_R.any(), "formula", lambda: where(int(np.argmax(bad_R))), enabled)


SOFTENING_AXIOMS = frozenset({"simplex", "identity", "ranking", "entropy", "limits", "formula"})


def _rows(x_V, R=ROWS):
  return np.broadcast_to(x_V, (R,) + x_V.shape)


def _logit_input(z_V):
  # A network emits finite logits: -inf classes become one low tie group.
  return np.where(np.isfinite(z_V), z_V, -1e4)


def sweep_property(cand: Candidate, enabled=SOFTENING_AXIOMS, settings=CI,
                   dtype=np.float64):
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
    _check_softening(cand, x_V, T_R.astype(np.float64), F_RxV, float(finfo.eps),
                     float(finfo.tiny), enabled)

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
    F = np.concatenate([np.asarray(apply(jnp.asarray(_rows(x_V)), jnp.asarray(np.exp(t_R))),
                                   np.float64) for t_R in log_T])
    F_CxPxV = F.reshape(grid_CxP.shape + x_V.shape)
    return np.nan_to_num(np.abs(np.diff(F_CxPxV, axis=1)).sum(-1), nan=np.inf)

  cells_C = np.arange(log_T_bounds.size - 1)
  grid_CxP = (log_T_bounds[:-1, None]
              + np.diff(log_T_bounds)[:, None] * np.linspace(0.0, 1.0, scan)[None])
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
        lo, hi, 4)
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
    tol_CxK = ((4.0 * np.log(num_classes) + 2.0) * np.diff(grid_CxP, axis=1) + rounding_CxK
               + 1e-300 * num_classes)
    excess_CxK = change_CxK - tol_CxK
    c, k = np.unravel_index(np.argmax(excess_CxK), excess_CxK.shape)
    _require(excess_CxK[c, k] <= 0, "continuity_T", lambda: (
        f"output jumps by {change_CxK[c, k]:.3g} (tolerance {tol_CxK[c, k]:.3g}) between "
        f"T={np.exp(grid_CxP[c, k]):.17g} and T={np.exp(grid_CxP[c, k + 1]):.17g}, "
        f"V={num_classes}, x={x_V}"), enabled)

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


@pytest.mark.parametrize("cand", SOFTENING, ids=str)
def test_softening_claims_hold_across_drawn_temperatures(cand):
  sweep_property(cand, settings=hypothesis.settings(CI, max_examples=SWEEP_EXAMPLES))()


@pytest.mark.parametrize("cand", SOFTENING, ids=str)
def test_softening_claims_hold_in_float32_on_the_train_step_path(cand):
  """The train step softens float32 targets: soften_logits(z, T), or family(softmax(z), T)."""
  sweep_property(cand, settings=hypothesis.settings(CI, max_examples=SWEEP_EXAMPLES),
                 dtype=np.float32)()


@pytest.mark.parametrize("cand", SOFTENING, ids=str)
def test_softening_is_continuous_in_temperature(cand):
  jump_property(cand, settings=hypothesis.settings(CI, max_examples=JUMP_EXAMPLES))()


@pytest.mark.parametrize("cand", REGISTERED, ids=str)
def test_softening_is_continuous_in_the_distribution(cand):
  p_continuity_property(
      cand, settings=hypothesis.settings(CI, max_examples=P_CONTINUITY_EXAMPLES))()


# ----------------------------------------------------------------------------------------------
# Meta-teachers.


@dataclasses.dataclass(frozen=True)
class MetaCandidate:
  """A meta-teacher G(p_base, q_prev, alpha) with the claims of the registered one `rule`."""

  name: str
  apply: Callable
  rule: str
  formula: bool = True

  def __str__(self) -> str:
    return self.name


# Jitted as inside the train step's loss: one compile per shape.
META_REGISTERED = [MetaCandidate(name, jax.jit(ops.META_TEACHERS[name]), name)
                   for name in sorted(ops.META_TEACHERS)]
# M2 (probability-domain anchoring) is claimed by the two convex ones; `geometric` anchors in the
# log domain only (operators docstring), and the regression list shows hypothesis finding that.
META_CLAIMS = {
    "anchored_mixture": {"meta_simplex", "meta_fixed_point", "meta_anchoring", "contraction",
                         "reverse_contraction", "formula"},
    "geometric": {"meta_simplex", "meta_fixed_point", "contraction", "formula"},
    "anchored_geometric": {"meta_simplex", "meta_fixed_point", "meta_anchoring", "contraction",
                           "formula"},
}


def _kl(a_RxV, b_RxV):
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(a_RxV > 0, a_RxV * (np.log(np.where(a_RxV > 0, a_RxV, 1.0)) - np.log(b_RxV)),
                     0.0)
  return np.sum(terms, axis=-1)


def _meta_reference(rule, p_RxV, q_RxV, a_Rx1):
  """Float64 reference of meta-teacher `rule` with its relative error bound per row (float64)."""
  eps, V = np.finfo(np.float64).eps, p_RxV.shape[-1]
  with np.errstate(divide="ignore", invalid="ignore"):
    log_p, log_q = np.log(p_RxV), np.log(q_RxV)

  def geometric(a):  # softmax(a log p + (1 - a) log q) with 0 * log 0 = 0 (0^0 = 1)
    with np.errstate(invalid="ignore"):
      x_RxV = np.where(a > 0, a * log_p, 0.0) + np.where(a < 1, (1.0 - a) * log_q, 0.0)
    # |x_i| <= |log p_i| + |log q_i| on the common support, the softmax bound's max |x|.
    rel_R = eps * (10.0 * (np.abs(np.where(np.isfinite(log_p), log_p, 0.0))
                           + np.abs(np.where(np.isfinite(log_q), log_q, 0.0))).max(-1)
                   + V + 8.0)
    return _probs(x_RxV), rel_R[:, None]

  if rule == "anchored_mixture":
    return a_Rx1 * p_RxV + (1.0 - a_Rx1) * q_RxV, 4.0 * eps
  if rule == "geometric":
    return geometric(a_Rx1)
  r_RxV, rel_Rx1 = geometric(np.full_like(a_Rx1, 0.5))
  return a_Rx1 * p_RxV + (1.0 - a_Rx1) * r_RxV, 4.0 * eps + rel_Rx1


def _check_meta(cand: MetaCandidate, p_RxV, q_RxV, a_R, t_RxV, t_pp_RxV, enabled):
  eps, tiny, V = np.finfo(np.float64).eps, np.finfo(np.float64).tiny, p_RxV.shape[-1]
  a_Rx1 = a_R[:, None]
  claims = META_CLAIMS[cand.rule]
  enabled = frozenset(enabled) & claims
  where = lambda r: f"alpha={a_R[r]!r}, p={p_RxV[r]}, q={q_RxV[r]}, t={t_RxV[r]}"
  # The geometric teachers need supp(p) and supp(q) to meet (operators docstring).
  meet_R = np.any((p_RxV > 0) & (q_RxV > 0), axis=-1) | (cand.rule == "anchored_mixture")
  ref_RxV, rel = _meta_reference(cand.rule, p_RxV, q_RxV, a_Rx1)
  err_RxV = rel * np.maximum(np.abs(np.nan_to_num(t_RxV)), np.nan_to_num(ref_RxV)) + 4 * tiny

  bad_R = meet_R & (~np.all(np.isfinite(t_RxV), -1) | (np.nan_to_num(t_RxV).min(-1) < 0)
                    | (np.abs(np.nan_to_num(t_RxV).sum(-1) - 1.0) > (2 * V + 8) * eps))
  _require(not bad_R.any(), "meta_simplex", lambda: where(int(np.argmax(bad_R))), enabled)

  # M5: G(p, p, alpha) = p, within the operator's rounding and p's normalisation slack.
  dev_RxV = np.abs(t_pp_RxV - p_RxV) - (rel * np.maximum(t_pp_RxV, p_RxV) + 4 * tiny
                                        + (V + 2) * eps * p_RxV)
  bad_R = (dev_RxV > 0).any(-1)
  _require(not bad_R.any(), "meta_fixed_point", lambda: (
      f"alpha={a_R[np.argmax(bad_R)]!r}, p={p_RxV[np.argmax(bad_R)]}, "
      f"G(p, p)={t_pp_RxV[np.argmax(bad_R)]}"), enabled)

  # M2: t_i >= alpha p_i; each side carries a few roundings, and below the smallest normal
  # number XLA flushes alpha p_i to zero.
  short_RxV = a_Rx1 * p_RxV - t_RxV - 4 * eps * np.maximum(a_Rx1 * p_RxV, t_RxV) - 4 * tiny
  bad_R = (short_RxV > 0).any(-1)
  _require(not bad_R.any(), "meta_anchoring", lambda: where(int(np.argmax(bad_R))), enabled)

  # Contraction (operators docstring): KL(p || t) <= rate KL(p || q), rate 1 - alpha, or
  # (1 - alpha) / 2 for anchored_geometric; reverse KL(t || p) <= (1 - alpha) KL(q || p) for the
  # mixture. Only rows where both sides are finite and no entry of the exact t on supp(p) lies near
  # the flush-to-zero range (there XLA may return t_i = 0 and an infinite KL). Tolerance: t's
  # relative error moves each KL by at most that error; the numpy evaluation of
  # sum p (log p - log t) errs by at most (V + 4) eps sum p (|log p| + |log t|).
  rate_Rx1 = (1.0 - a_Rx1) / (2.0 if cand.rule == "anchored_geometric" else 1.0)
  with np.errstate(divide="ignore", invalid="ignore"):
    t_RxV = np.nan_to_num(t_RxV, nan=0.0)
    safe_R = np.all((p_RxV == 0) | (np.nan_to_num(ref_RxV) > 1e6 * tiny), axis=-1) & meet_R
    for name, num_R, den_R, a in (
        ("contraction", _kl(p_RxV, t_RxV), _kl(p_RxV, q_RxV), p_RxV),
        ("reverse_contraction", _kl(t_RxV, p_RxV), _kl(q_RxV, p_RxV), t_RxV)):
      logs = lambda x: np.where(x > 0, np.abs(np.log(np.where(x > 0, x, 1.0))), 0.0)
      scale_R = np.sum(np.where(a > 0, a * (logs(p_RxV) + logs(q_RxV) + logs(t_RxV) + 1.0), 0.0),
                       -1) + 1.0
      rel_R = np.broadcast_to(rel, p_RxV.shape)[:, 0]
      tol_R = rel_R * scale_R + 2 * (V + 4) * eps * scale_R
      rows_R = safe_R & np.isfinite(den_R)
      excess_R = np.where(rows_R, num_R - rate_Rx1[:, 0] * den_R - tol_R, -np.inf)
      _require(not (excess_R > 0).any(), name, lambda: (
          f"KL ratio {num_R[np.argmax(excess_R)] / den_R[np.argmax(excess_R)]:.6g} above rate "
          f"{rate_Rx1[np.argmax(excess_R), 0]:.6g}; " + where(int(np.argmax(excess_R)))), enabled)

  if cand.formula:
    bad_R = meet_R & (np.abs(t_RxV - np.nan_to_num(ref_RxV)) - 2 * err_RxV > 0).any(-1)
    _require(not bad_R.any(), "formula", lambda: where(int(np.argmax(bad_R))), enabled)


def meta_property(cand: MetaCandidate, enabled=frozenset(
    {"meta_simplex", "meta_fixed_point", "meta_anchoring", "contraction", "reverse_contraction",
     "formula"}), settings=CI):
  """M1, M2, M5, contraction (both directions where claimed) and the formula, on drawn rows."""

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_p = data.draw(logit_vectors(num_classes), label="base_logits")
    z_q = data.draw(logit_vectors(num_classes), label="previous_logits")
    if data.draw(st.booleans(), label="previous_has_full_support"):
      z_q = np.where(np.isfinite(z_q), z_q, 0.0)  # KL(p || q) finite unless q underflows
    alphas = data.draw(hnp.arrays(np.float64, ROWS // 2 - 2, elements=st.floats(0.0, 1.0)),
                       label="alpha")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    a_R = _flush(np.concatenate([[1.0, 0.0], alphas, rng.uniform(0.0, 1.0, ROWS // 2)]))
    # Rows of different sharpness: softmax(c z) for c in [1e-2, 3], independently for p and q.
    c_R, d_R = 10.0 ** rng.uniform(-2.0, 0.5, (2, ROWS))
    p_RxV, q_RxV = _probs(c_R[:, None] * z_p[None]), _probs(d_R[:, None] * z_q[None])
    with jax.enable_x64(True):
      t_RxV = np.asarray(cand.apply(jnp.asarray(p_RxV), jnp.asarray(q_RxV), jnp.asarray(a_R)))
      t_pp_RxV = np.asarray(cand.apply(jnp.asarray(p_RxV), jnp.asarray(p_RxV), jnp.asarray(a_R)))
    _check_meta(cand, p_RxV, q_RxV, a_R, t_RxV, t_pp_RxV, enabled)

  return run


@pytest.mark.parametrize("cand", META_REGISTERED, ids=str)
def test_meta_teacher_claims_hold_for_drawn_alphas_and_distributions(cand):
  meta_property(cand, settings=hypothesis.settings(CI, max_examples=META_EXAMPLES))()


# ----------------------------------------------------------------------------------------------
# Regression list: operators that each break one claim. Hypothesis must find the break with the
# CI strategies, settings and example budget of the property that rejects it (no hand-picked
# example; shrinking is off only because the first failing example is all this needs).


def _column(T, x):
  T = jnp.asarray(T, x.dtype)
  return T[..., None] if T.ndim else T


@jax.jit
def _no_softening_between_3_and_5(p, T):
  t = _column(T, p)
  return jnp.where((t > 3) & (t < 5), p, ops.power(p, T))


@jax.jit
def _frozen_between_3_and_5(p, T):
  return ops.power(p, jnp.where((T > 3) & (T < 5), 3.0, T))


@jax.jit
def _ties_broken_by_index(p, T):
  # A stable-sort style tie-break: a 1e-9 relative tilt by class index.
  F = ops.power(p, T) * (1.0 + 1e-9 * jnp.arange(p.shape[-1], dtype=p.dtype)[None] / p.shape[-1])
  return F / F.sum(-1, keepdims=True)


@jax.jit
def _top_two_swapped_for_large_logits(z, T):
  # A separate code path for large logits (an overflow guard, say) that swaps the top two.
  F = ops.soften_logits(z, T)
  values, idx = jax.lax.top_k(F, 2)
  swapped = jnp.put_along_axis(F, idx, values[..., ::-1], axis=-1, inplace=False)
  return jnp.where(jnp.abs(z).max(-1, keepdims=True) > 1e3, swapped, F)


@jax.jit
def _unnormalised_power(p, T):
  return jnp.exp(ops.log_prob(p) / _column(T, p))  # p^(1/T) without dividing by its sum


@jax.jit
def _temperature_offset(p, T):
  return ops.power(p, T + 1e-6)  # the usual guard against T = 0: identity only approximately


@jax.jit
def _support_mixture(p, T):
  # Mixing with the uniform over supp(p) jumps when a zero entry becomes positive.
  t = _column(T, p)
  support = (p > 0).astype(p.dtype)
  return p / t + (1.0 - 1.0 / t) * support / support.sum(-1, keepdims=True)


@jax.jit
def _no_sharpening(p, T):
  return ops.mixture(p, jnp.maximum(T, 1.0))  # a 'hybrid' without its T < 1 branch


@jax.jit
def _naive_softmax(z, T):
  # softmax without subtracting the max: exp overflows to inf (inf / inf = NaN) in float32.
  e = jnp.exp(z / _column(T, z))
  return e / e.sum(-1, keepdims=True)


@jax.jit
def _near_ties_swapped_when_softening(p, T):
  # For T > 1, the top two entries swap when they are within 2% of each other.
  F = ops.power(p, T)
  values, idx = jax.lax.top_k(F, 2)
  close = (values[..., 1] >= 0.98 * values[..., 0])[..., None] & (_column(T, p) > 1.0)
  swapped = jnp.put_along_axis(F, idx, values[..., ::-1], axis=-1, inplace=False)
  return jnp.where(close, swapped, F)


@jax.jit
def _entropy_dip_with_many_classes(p, T):
  # With 16 or more classes, temperatures in (2, 4) soften only as much as T = 1.5 does.
  t = jnp.where((T > 2) & (T < 4), 1.5, T) if p.shape[-1] >= 16 else T
  return ops.power(p, t)


@jax.jit
def _mass_leak_onto_zeros(p, T):
  # 2e-4 of the mass moves onto the classes p gives probability zero.
  F = ops.power(p, T)
  zeros = (p == 0).astype(p.dtype)
  count = zeros.sum(-1, keepdims=True)
  leak = jnp.where(count > 0, 2e-4, 0.0)
  return (1.0 - leak) * F + leak * zeros / jnp.maximum(count, 1.0)


@jax.jit
def _towards_uniform(p, q, a):
  a = _column(a, p)
  return a * p + (1.0 - a) * jnp.full_like(q, 1.0 / q.shape[-1])


@jax.jit
def _unnormalised_meta(p, q, a):
  return _column(a, p) * p + q


@jax.jit
def _too_little_anchor(p, q, a):
  a = _column(a, p)
  return 0.5 * a * p + (1.0 - 0.5 * a) * q


def _bad(name, apply, rule, inputs="probs"):
  return Candidate(name, apply, rule, inputs=inputs, formula=False)


def _bad_meta(name, apply, rule="anchored_mixture"):
  return MetaCandidate(name, apply, rule, formula=False)


def _sweep32(cand, enabled, settings):
  return sweep_property(cand, enabled, settings, dtype=np.float32)


BAD_OPERATORS = [
    # (candidate, property, its example budget in CI, the claim that must reject it)
    (_bad("no_softening_between_3_and_5", _no_softening_between_3_and_5, "power"),
     sweep_property, SWEEP_EXAMPLES, "entropy"),
    (_bad("frozen_between_3_and_5", _frozen_between_3_and_5, "power"),
     jump_property, JUMP_EXAMPLES, "continuity_T"),
    (_bad("ties_broken_by_index", _ties_broken_by_index, "power"),
     sweep_property, SWEEP_EXAMPLES, "ranking"),
    (_bad("top_two_swapped_for_large_logits", _top_two_swapped_for_large_logits, "power",
          inputs="logits"),
     sweep_property, SWEEP_EXAMPLES, "ranking"),
    (_bad("unnormalised_power", _unnormalised_power, "power"),
     sweep_property, SWEEP_EXAMPLES, "simplex"),
    (_bad("temperature_offset", _temperature_offset, "power"),
     sweep_property, SWEEP_EXAMPLES, "identity"),
    (_bad("support_mixture", _support_mixture, "mixture"),
     p_continuity_property, P_CONTINUITY_EXAMPLES, "continuity_p"),
    (_bad("no_sharpening", _no_sharpening, "hybrid"),
     sweep_property, SWEEP_EXAMPLES, "limits"),
    (_bad("naive_softmax", _naive_softmax, "power", inputs="logits"),
     _sweep32, SWEEP_EXAMPLES, "simplex"),
    (_bad("near_ties_swapped_when_softening", _near_ties_swapped_when_softening, "power"),
     sweep_property, SWEEP_EXAMPLES, "ranking"),
    (_bad("entropy_dip_with_many_classes", _entropy_dip_with_many_classes, "power"),
     sweep_property, SWEEP_EXAMPLES, "entropy"),
    (_bad("mass_leak_onto_zeros", _mass_leak_onto_zeros, "power"),
     sweep_property, SWEEP_EXAMPLES, "limits"),
    (_bad_meta("towards_uniform", _towards_uniform),
     meta_property, META_EXAMPLES, "meta_fixed_point"),
    (_bad_meta("unnormalised_meta", _unnormalised_meta),
     meta_property, META_EXAMPLES, "meta_simplex"),
    (_bad_meta("too_little_anchor", _too_little_anchor),
     meta_property, META_EXAMPLES, "meta_anchoring"),
    (_bad_meta("too_little_anchor", _too_little_anchor),
     meta_property, META_EXAMPLES, "contraction"),
    # Documented, not a defect: log-linear anchoring can put less than alpha p_i on p_base.
    (_bad_meta("geometric", jax.jit(ops.geometric)),
     meta_property, META_EXAMPLES, "meta_anchoring"),
]


@pytest.mark.parametrize("cand, prop, examples, axiom", BAD_OPERATORS,
                         ids=[f"{c.name}-{a}" for c, _, _, a in BAD_OPERATORS])
def test_known_bad_operator_is_rejected(cand, prop, examples, axiom):
  settings = hypothesis.settings(CI, max_examples=examples, phases=[hypothesis.Phase.generate],
                                 report_multiple_bugs=False)
  with pytest.raises(AxiomViolation) as excinfo:
    prop(cand, frozenset({axiom}), settings)()
  assert excinfo.value.axiom == axiom
