"""Meta-teacher requirements and KL contraction on drawn inputs.

The requirements M1-M5 and the contraction bound are jaxrepr's formalisation of the structural
axioms and the contraction theorem named in the abstract of Flouro & Chadwick, "Recursive
Meta-Distillation: An Axiomatic Framework for Iterative Knowledge Refinement" (arXiv 2601.13100),
stated in `jaxrepr.methods.distill.meta_axioms`; the inputs are those of `distill_testlib`. As for
the softening properties, tolerances come from a floating-point error model of each registered
operator (`_meta_reference`), and a failed claim raises `AxiomViolation` naming it.
"""

import dataclasses
from collections.abc import Callable

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis.extra import numpy as hnp

from jaxrepr.methods.distill import meta_axioms
from jaxrepr.methods.distill import operators as ops
from tests.methods.distill.distill_testlib import (
  CI,
  CLASS_COUNTS,
  ROWS,
  _flush,
  _probs,
  _require,
  logit_vectors,
)


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
META_REGISTERED = [
  MetaCandidate(name, jax.jit(ops.META_TEACHERS[name]), name) for name in sorted(ops.META_TEACHERS)
]
# M2 (probability-domain anchoring) is claimed by the two convex ones; `geometric` anchors in the
# log domain only (operators docstring), and the regression list shows hypothesis finding that.
# M3 (t on the segment from q to p*) is claimed by anchored_mixture alone: the other two combine
# p* with a distribution derived from both arguments. M4 is claimed on drawn inputs by
# anchored_mixture, which is Lipschitz (|dt|_1 <= |dp*|_1 + |dq|_1); the log-linear ones are
# continuous where their supports meet, but with a modulus that degrades without bound near the
# edge of that domain (a near-empty overlap), so their M4 is checked on moderate inputs only
# (test_distill_axioms).
META_CLAIMS = {
  "anchored_mixture": {
    "meta_simplex",
    "meta_fixed_point",
    "meta_anchoring",
    "meta_convexity",
    "meta_continuity",
    "contraction",
    "reverse_contraction",
    "formula",
  },
  "geometric": {"meta_simplex", "meta_fixed_point", "contraction", "formula"},
  "anchored_geometric": {
    "meta_simplex",
    "meta_fixed_point",
    "meta_anchoring",
    "contraction",
    "formula",
  },
}
META_AXIOMS = frozenset(
  {
    "meta_simplex",
    "meta_fixed_point",
    "meta_anchoring",
    "meta_convexity",
    "contraction",
    "reverse_contraction",
    "formula",
  }
)


def _kl(a_RxV, b_RxV):
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(
      a_RxV > 0, a_RxV * (np.log(np.where(a_RxV > 0, a_RxV, 1.0)) - np.log(b_RxV)), 0.0
    )
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
    rel_R = eps * (
      10.0
      * (
        np.abs(np.where(np.isfinite(log_p), log_p, 0.0))
        + np.abs(np.where(np.isfinite(log_q), log_q, 0.0))
      ).max(-1)
      + V
      + 8.0
    )
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

  bad_R = meet_R & (
    ~np.all(np.isfinite(t_RxV), -1)
    | (np.nan_to_num(t_RxV).min(-1) < 0)
    | (np.abs(np.nan_to_num(t_RxV).sum(-1) - 1.0) > (2 * V + 8) * eps)
  )
  _require(not bad_R.any(), "meta_simplex", lambda: where(int(np.argmax(bad_R))), enabled)

  # M5: G(p, p, alpha) = p, within the operator's rounding and p's normalisation slack.
  dev_RxV = np.abs(t_pp_RxV - p_RxV) - (
    rel * np.maximum(t_pp_RxV, p_RxV) + 4 * tiny + (V + 2) * eps * p_RxV
  )
  bad_R = (dev_RxV > 0).any(-1)
  _require(
    not bad_R.any(),
    "meta_fixed_point",
    lambda: (
      f"alpha={a_R[np.argmax(bad_R)]!r}, p={p_RxV[np.argmax(bad_R)]}, "
      f"G(p, p)={t_pp_RxV[np.argmax(bad_R)]}"
    ),
    enabled,
  )

  # M2: t_i >= alpha p_i; each side carries a few roundings, and below the smallest normal
  # number XLA flushes alpha p_i to zero.
  short_RxV = a_Rx1 * p_RxV - t_RxV - 4 * eps * np.maximum(a_Rx1 * p_RxV, t_RxV) - 4 * tiny
  bad_R = (short_RxV > 0).any(-1)
  _require(not bad_R.any(), "meta_anchoring", lambda: where(int(np.argmax(bad_R))), enabled)

  # M3: t within rounding of the segment from q to p*. Projecting a t that errs by dt moves the
  # distance by at most |dt|_1 + sqrt(V) |dt|_2 (the least-squares weight errs by |dt|_2 / |d|_2,
  # and |d|_1 <= sqrt(V) |d|_2), plus numpy's own sums of V terms.
  w_R = meta_axioms.segment_weight(np.nan_to_num(t_RxV), p_RxV, q_RxV)
  nearest_RxV = w_R[:, None] * p_RxV + (1.0 - w_R[:, None]) * q_RxV
  off_R = np.abs(np.nan_to_num(t_RxV) - nearest_RxV).sum(-1)
  tol_R = (np.sqrt(V) + 1.0) * err_RxV.sum(-1) + 4 * (V + 4) * eps
  bad_R = meet_R & ~(off_R <= tol_R)
  _require(
    not bad_R.any(),
    "meta_convexity",
    lambda: (
      f"L1 distance {off_R[np.argmax(bad_R)]:.3g} from the segment; " + where(int(np.argmax(bad_R)))
    ),
    enabled,
  )

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
      ("reverse_contraction", _kl(t_RxV, p_RxV), _kl(q_RxV, p_RxV), t_RxV),
    ):
      logs = lambda x: np.where(x > 0, np.abs(np.log(np.where(x > 0, x, 1.0))), 0.0)
      scale_R = (
        np.sum(np.where(a > 0, a * (logs(p_RxV) + logs(q_RxV) + logs(t_RxV) + 1.0), 0.0), -1) + 1.0
      )
      rel_R = np.broadcast_to(rel, p_RxV.shape)[:, 0]
      tol_R = rel_R * scale_R + 2 * (V + 4) * eps * scale_R
      rows_R = safe_R & np.isfinite(den_R)
      excess_R = np.where(rows_R, num_R - rate_Rx1[:, 0] * den_R - tol_R, -np.inf)
      _require(
        not (excess_R > 0).any(),
        name,
        lambda num_R=num_R, den_R=den_R, excess_R=excess_R: (
          f"KL ratio {num_R[np.argmax(excess_R)] / den_R[np.argmax(excess_R)]:.6g} above rate "
          f"{rate_Rx1[np.argmax(excess_R), 0]:.6g}; " + where(int(np.argmax(excess_R)))
        ),
        enabled,
      )

  if cand.formula:
    bad_R = meet_R & (np.abs(t_RxV - np.nan_to_num(ref_RxV)) - 2 * err_RxV > 0).any(-1)
    _require(not bad_R.any(), "formula", lambda: where(int(np.argmax(bad_R))), enabled)


def meta_property(cand: MetaCandidate, enabled=META_AXIOMS, settings=CI):
  """M1, M2, M3, M5, contraction (both directions where claimed) and the formula, on drawn rows."""

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_p = data.draw(logit_vectors(num_classes), label="base_logits")
    z_q = data.draw(logit_vectors(num_classes), label="previous_logits")
    if data.draw(st.booleans(), label="previous_has_full_support"):
      z_q = np.where(np.isfinite(z_q), z_q, 0.0)  # KL(p || q) finite unless q underflows
    alphas = data.draw(
      hnp.arrays(np.float64, ROWS // 2 - 2, elements=st.floats(0.0, 1.0)), label="alpha"
    )
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


def meta_continuity_property(
  cand: MetaCandidate, enabled=frozenset({"meta_continuity"}), settings=CI
):
  """M4 through the library check (`meta_axioms.check_meta_continuity`) on drawn rows: p* and q
  with zeros, per-row alpha in [0, 1]."""

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_p = data.draw(logit_vectors(num_classes), label="base_logits")
    z_q = data.draw(logit_vectors(num_classes), label="previous_logits")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    a_R = _flush(np.concatenate([[1.0, 0.0], rng.uniform(0.0, 1.0, ROWS - 2)]))
    c_R, d_R = 10.0 ** rng.uniform(-2.0, 0.5, (2, ROWS))
    p_RxV, q_RxV = _probs(c_R[:, None] * z_p[None]), _probs(d_R[:, None] * z_q[None])
    with jax.enable_x64(True):
      result = meta_axioms.check_meta_continuity(cand.apply, p_RxV, q_RxV, a_R, seed=seed)
    _require(
      result.passed,
      "meta_continuity",
      lambda: str(result),
      frozenset(enabled) & META_CLAIMS[cand.rule],
    )

  return run
