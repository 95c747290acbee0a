"""Probability-domain softening operators and meta-teacher operators for distillation.

Softening operators follow Flouro & Chadwick, "Sparse Knowledge Distillation: A Mathematical
Framework for Probability-Domain Temperature Scaling and Multi-Stage Compression" (arXiv
2601.03195), which analyses distillation through operators F_T: Delta^V -> Delta^V indexed by a
temperature T and defines them by five axioms (ranking preservation, continuity, entropy
monotonicity, identity at T = 1, boundary behaviour). Only the paper's abstract was available: the
precise axiom statements and the families below are jaxrepr's formalisation of that abstract,
checked executably in `jaxrepr.methods.distill.axioms`.

Every operator has the signature `op(p_xV, T) -> q_xV`, is pure and jittable, and acts on the last
axis. `T` is a scalar or has shape `p.shape[:-1]` (one temperature per distribution).

Families (the registry `FAMILIES`; the A5 reading each satisfies is stored with it):
  power    P_T(p) = p^(1/T) / Z, T in (0, inf). Equals softmax(z / T) when p = softmax(z) (the
           "well known" identity of the paper's abstract). Log-odds scale exactly by 1/T; zeros stay
           zero, so T -> inf gives the uniform distribution over supp(p), T -> 0 over argmax(p).
  mixture  U_T(p) = (1/T) p + (1 - 1/T) u, T in [1, inf). No sharpening branch: for T < 1 some
           entries would go negative, so the domain is [1, inf); a concrete T < 1 raises ValueError
           and a traced T < 1 gives NaN (never a silent clip). T -> inf gives u over all V classes.
  hybrid   sharpen with the power family, smooth with the mixture: H_T = P_T for T <= 1 and U_T for
           T >= 1, T in (0, inf). Both branches are the identity at T = 1, so H is jointly
           continuous; entropy is non-decreasing on each branch, hence on all of (0, inf).
           T -> 0 gives u over argmax(p), T -> inf gives u over V. Non-equivalent to `power`
           (zeros separate them, as for the mixture) and to `mixture` (no increasing bijection
           phi with phi(1) = 1 maps (0, inf) onto [1, inf)).

Partial-access teachers (the abstract's "black-box teacher" and "top-k truncation" settings):
  `soften_top_k` / `soften_revealed` truncate to the k revealed classes, renormalise, then soften
  *over the kept classes only*: no family places mass on a cut class (the plain mixture applied
  after truncation would give each cut class (1 - 1/T) / V). `hard_label_teacher` softens a one-hot
  label: the power family leaves it one-hot, the mixture turns it into label smoothing with
  epsilon = 1 - 1/T.

Meta-teacher operators for recursive distillation (Flouro & Chadwick, "Recursive Meta-Distillation:
An Axiomatic Framework for Iterative Knowledge Refinement", arXiv 2601.13100; the operators are
jaxrepr's formalisation of the anchoring to base teachers named in its abstract, their requirements
are checked in `meta_axioms`), signature `G(p_base_xV, q_prev_xV, alpha) -> t_xV`, registry
`META_TEACHERS`:
  anchored_mixture    t = alpha p_base + (1 - alpha) q_prev (the default). A convex combination, so
                      KL(p_base || t) <= (1 - alpha) KL(p_base || q_prev) by convexity of KL.
  geometric           t ∝ p_base^alpha q_prev^(1 - alpha) (log-linear anchoring). By Hoelder,
                      KL(p_base || t) = (1 - alpha) KL(p_base || q_prev) + log sum p^a q^(1-a)
                      <= (1 - alpha) KL(p_base || q_prev): the same bound, but the weight on p_base
                      is in the log domain, so t_i >= alpha p_base_i (M2 in the probability
                      sense) can fail, and t is no convex combination of p_base and q_prev (M3).
                      Kept as the documented alternative.
  anchored_geometric  t = alpha p_base + (1 - alpha) r, r ∝ sqrt(p_base q_prev): a convex
                      combination of p_base and r in the probability domain (satisfies M2; not M3,
                      r being no argument) that contracts at rate (1 - alpha) / 2, since
                      KL(p || r) = KL(p || q) / 2 + log sum sqrt(p q) <= KL(p || q) / 2.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Literal
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Temperature = float | jax.Array
Operator = Callable[[jax.Array, Temperature], jax.Array]
MetaTeacher = Callable[[jax.Array, jax.Array, Temperature], jax.Array]


def _temperature(T: Temperature, p_xV: jax.Array) -> jax.Array:
  """T as an array that broadcasts against p without implicit rank promotion."""
  T = jnp.asarray(T, dtype=p_xV.dtype)
  if T.ndim == 0:
    return T
  if T.shape != p_xV.shape[:-1]:
    raise ValueError(f"temperature shape {T.shape} must be () or p.shape[:-1] = {p_xV.shape[:-1]}")
  return T[..., None]


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_min_temperature(T: Temperature, t_min: float, closed: bool, name: str) -> None:
  """Raises for a concrete temperature outside the family's domain (traced values give NaN)."""
  if not _is_concrete(T):
    return
  T_np = np.asarray(T)
  bad = (T_np < t_min) if closed else (T_np <= t_min)
  if np.any(bad) or np.any(np.isnan(T_np)):
    bound = f">= {t_min}" if closed else f"> {t_min}"
    raise ValueError(f"{name} operator: temperature must be {bound}, got {T_np.min()}")


def log_prob(p_xV: jax.Array) -> jax.Array:
  """log p with log 0 = -inf, differentiable where p > 0 (the double `where` keeps grads finite)."""
  positive = p_xV > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, p_xV, 1.0)), -jnp.inf)


@jax.jit
def _power(p_xV: jax.Array, T: jax.Array) -> jax.Array:
  T = _temperature(T, p_xV)
  positive_xV = p_xV > 0
  # Divide only finite logs: d(-inf / T)/dT = inf would turn the zero-probability gradients NaN.
  safe_log_xV = jnp.log(jnp.where(positive_xV, p_xV, 1.0))
  logits_xV = jnp.where(positive_xV, safe_log_xV / T, -jnp.inf)
  out_xV = jax.nn.softmax(logits_xV, axis=-1)
  return jnp.where(T > 0, out_xV, jnp.nan)


@jax.jit
def _mixture(p_xV: jax.Array, T: jax.Array) -> jax.Array:
  T = _temperature(T, p_xV)
  inv_T = 1.0 / T
  num_classes = p_xV.shape[-1]
  out_xV = inv_T * p_xV + (1.0 - inv_T) / num_classes
  return jnp.where(T >= 1, out_xV, jnp.nan)


@jax.jit
def _hybrid(p_xV: jax.Array, T: jax.Array) -> jax.Array:
  T = jnp.asarray(T, dtype=p_xV.dtype)
  # Both branches are evaluated at in-domain temperatures; `where` selects, so neither makes NaN.
  sharp_xV = _power(p_xV, jnp.minimum(T, 1.0))
  smooth_xV = _mixture(p_xV, jnp.maximum(T, 1.0))
  return jnp.where(_temperature(T, p_xV) < 1, sharp_xV, smooth_xV)


# The public operators check a concrete temperature's domain in Python (a clear error), then call
# the jitted kernels, so that eager use (the axiom checks) compiles once per shape, not per op.


def power(p_xV: jax.Array, T: Temperature) -> jax.Array:
  """Power family P_T(p)_i = p_i^(1/T) / sum_j p_j^(1/T), T in (0, inf) (module docstring).

  Computed in log space, softmax(log p / T), so that P_T(softmax(z)) = softmax(z / T) to rounding
  and zeros stay exactly zero for every T (exp(-inf) = 0).
  """
  _check_min_temperature(T, 0.0, closed=False, name="power")
  return _power(p_xV, T)


def soften_logits(z_xV: jax.Array, T: Temperature) -> jax.Array:
  """softmax(z / T): the power family applied to softmax(z), without forming p first."""
  return jax.nn.softmax(z_xV / _temperature(T, z_xV), axis=-1)


def mixture(p_xV: jax.Array, T: Temperature) -> jax.Array:
  """Uniform mixture U_T(p) = (1/T) p + (1 - 1/T) u, T in [1, inf) (module docstring).

  Outside the domain the output is NaN (traced T) or a ValueError (concrete T).
  """
  _check_min_temperature(T, 1.0, closed=True, name="mixture")
  return _mixture(p_xV, T)


def hybrid(p_xV: jax.Array, T: Temperature) -> jax.Array:
  """Power below T = 1, uniform mixture above it; T in (0, inf). See the module docstring."""
  _check_min_temperature(T, 0.0, closed=False, name="hybrid")
  return _hybrid(p_xV, T)


@dataclasses.dataclass(frozen=True)
class OperatorFamily:
  """A softening operator family with its documented domain and A5 reading.

  Attributes:
    name: registry key.
    apply: (p_xV, T) -> q_xV.
    t_min: lower end of the temperature domain; `t_min_closed` says whether it is included.
    limit_support: the A5 reading for T -> inf: 'support' (uniform over supp(p)) or 'full'
      (uniform over all classes).
    sharpens: whether the domain contains T < 1, so that the T -> 0 limit (uniform over the
      argmax set) is part of A5.
  """

  name: str
  apply: Operator
  t_min: float
  t_min_closed: bool
  limit_support: Literal["support", "full"]
  description: str = ""

  @property
  def sharpens(self) -> bool:
    return self.t_min < 1.0

  def __call__(self, p_xV: jax.Array, T: Temperature) -> jax.Array:
    return self.apply(p_xV, T)

  def in_domain(self, T: float) -> bool:
    return (T >= self.t_min) if self.t_min_closed else (T > self.t_min)

  def temperature_grid(self, t_max: float = 20.0, num: int = 9) -> np.ndarray:
    """Geometric grid of in-domain temperatures, always containing T = 1."""
    lo = max(self.t_min, 0.1) if self.sharpens else 1.0
    grid = np.geomspace(lo, t_max, num)
    return np.unique(np.concatenate([grid, [1.0]]))


FAMILIES = types.MappingProxyType(
  {
    "power": OperatorFamily(
      "power", power, 0.0, False, "support", "p^(1/T)/Z = softmax(log p / T)"
    ),
    "mixture": OperatorFamily("mixture", mixture, 1.0, True, "full", "(1/T) p + (1 - 1/T) u"),
    "hybrid": OperatorFamily(
      "hybrid", hybrid, 0.0, False, "full", "power for T <= 1, uniform mixture for T >= 1"
    ),
  }
)


def get_family(name: str) -> OperatorFamily:
  """Looks a family up by name, naming the registered ones on a miss."""
  if name not in FAMILIES:
    raise KeyError(f"unknown softening family {name!r}; registered: {sorted(FAMILIES)}")
  return FAMILIES[name]


# ----------------------------------------------------------------------------------------------
# Partial-access teachers.


def _scatter_last(values_xK: jax.Array, indices_xK: jax.Array, num_classes: int) -> jax.Array:
  zeros_xV = jnp.zeros(values_xK.shape[:-1] + (num_classes,), values_xK.dtype)
  return jnp.put_along_axis(zeros_xV, indices_xK, values_xK, axis=-1, inplace=False)


def soften_revealed(
  op: Operator, values_xK: jax.Array, indices_xK: jax.Array, T: Temperature, num_classes: int
) -> jax.Array:
  """Black-box top-k teacher: renormalise the k revealed probabilities, soften them over the k
  revealed classes, and place them back among `num_classes`; cut classes get exactly zero.

  `indices_xK` must be distinct within each row (as an API returning the top k gives them).
  """
  if values_xK.shape != indices_xK.shape:
    raise ValueError(f"values {values_xK.shape} and indices {indices_xK.shape} differ in shape")
  if values_xK.shape[-1] > num_classes:
    raise ValueError(
      f"k = {values_xK.shape[-1]} revealed classes exceed num_classes = {num_classes}"
    )
  kept_xK = values_xK / jnp.sum(values_xK, axis=-1, keepdims=True)
  soft_xK = op(kept_xK, T)
  return _scatter_last(soft_xK, indices_xK, num_classes)


def top_k_truncate(p_xV: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest entries (ties broken by lower index), renormalised; the rest are zero."""
  return soften_top_k(lambda q, _: q, p_xV, 1.0, k)


def soften_top_k(op: Operator, p_xV: jax.Array, T: Temperature, k: int) -> jax.Array:
  """Truncate to the top k classes, renormalise, then soften over the kept classes only."""
  num_classes = p_xV.shape[-1]
  if not 1 <= k <= num_classes:
    raise ValueError(f"top-k needs 1 <= k <= {num_classes}, got k = {k}")
  values_xK, indices_xK = jax.lax.top_k(p_xV, k)
  return soften_revealed(op, values_xK, indices_xK, T, num_classes)


def hard_label_teacher(
  op: Operator, labels_x: jax.Array, num_classes: int, T: Temperature
) -> jax.Array:
  """A teacher that reveals only its argmax label: soften the one-hot distribution.

  With the power family the target stays one-hot for every T (its support is one class); with the
  mixture it is label smoothing, 1/T + (1 - 1/T)/V on the label and (1 - 1/T)/V elsewhere.
  """
  one_hot_xV = jax.nn.one_hot(labels_x, num_classes)
  return op(one_hot_xV, T)


# ----------------------------------------------------------------------------------------------
# Meta-teacher operators (recursive anchored distillation).


def _check_alpha(alpha: Temperature) -> None:
  if _is_concrete(alpha):
    a = np.asarray(alpha)
    if np.any(a < 0) or np.any(a > 1) or np.any(np.isnan(a)):
      raise ValueError(f"anchoring weight alpha must lie in [0, 1], got {a}")


def _weight(alpha: Temperature, p_xV: jax.Array) -> jax.Array:
  a = jnp.asarray(alpha, dtype=p_xV.dtype)
  return a if a.ndim == 0 else a[..., None]


def anchored_mixture(p_base_xV: jax.Array, q_prev_xV: jax.Array, alpha: Temperature) -> jax.Array:
  """t = alpha p_base + (1 - alpha) q_prev: the canonical anchored meta-teacher."""
  _check_alpha(alpha)
  a = _weight(alpha, p_base_xV)
  return a * p_base_xV + (1.0 - a) * q_prev_xV


def geometric(p_base_xV: jax.Array, q_prev_xV: jax.Array, alpha: Temperature) -> jax.Array:
  """t ∝ p_base^alpha q_prev^(1 - alpha), in log space. Needs supp(p_base) ∩ supp(q_prev) != {}.

  0^0 is taken as 1, so alpha = 1 returns p_base and alpha = 0 returns q_prev exactly. Along alpha
  this is not continuous at the endpoints where the supports differ: for every alpha > 0 the
  classes outside supp(p_base) get zero, at alpha = 0 they get q_prev's mass.
  """
  _check_alpha(alpha)
  a = _weight(alpha, p_base_xV)
  log_p, log_q = log_prob(p_base_xV), log_prob(q_prev_xV)
  # a * (-inf) with a = 0 is NaN; the where keeps 0^0 = 1.
  term_p = jnp.where(a > 0, a * log_p, 0.0)
  term_q = jnp.where(a < 1, (1.0 - a) * log_q, 0.0)
  return jax.nn.softmax(term_p + term_q, axis=-1)


def anchored_geometric(p_base_xV: jax.Array, q_prev_xV: jax.Array, alpha: Temperature) -> jax.Array:
  """t = alpha p_base + (1 - alpha) r with r ∝ sqrt(p_base q_prev) (rate (1 - alpha) / 2)."""
  _check_alpha(alpha)
  a = _weight(alpha, p_base_xV)
  r_xV = geometric(p_base_xV, q_prev_xV, 0.5)
  return a * p_base_xV + (1.0 - a) * r_xV


META_TEACHERS = types.MappingProxyType(
  {
    "anchored_mixture": anchored_mixture,
    "geometric": geometric,
    "anchored_geometric": anchored_geometric,
  }
)


def get_meta_teacher(name: str) -> MetaTeacher:
  if name not in META_TEACHERS:
    raise KeyError(f"unknown meta-teacher {name!r}; registered: {sorted(META_TEACHERS)}")
  return META_TEACHERS[name]


def aggregate_teachers(p_MxxV: jax.Array, weights_M: jax.Array) -> jax.Array:
  """Arithmetic anchor p* = sum_m w_m p_m over M base teachers stacked on the leading axis."""
  weights_M = jnp.asarray(weights_M, p_MxxV.dtype)
  if weights_M.shape != p_MxxV.shape[:1]:
    raise ValueError(f"weights {weights_M.shape} must match the {p_MxxV.shape[0]} teachers")
  if _is_concrete(weights_M):
    w = np.asarray(weights_M)
    if np.any(w < 0) or not math.isclose(float(w.sum()), 1.0, rel_tol=1e-6):
      raise ValueError(f"teacher weights must be on the simplex, got {w}")
  return jnp.tensordot(weights_M, p_MxxV, axes=1)


def realisable_recursion(
  meta: MetaTeacher,
  p_base_xV: jax.Array,
  q0_xV: jax.Array,
  alpha: Temperature,
  num_generations: int,
) -> jax.Array:
  """Generations q_{k+1} = G(p_base, q_k, alpha) for a realisable student (q_{k+1} = t_{k+1}).

  Returns q_0..q_K stacked on a new leading axis, shape (K + 1,) + q0.shape.
  """

  def step(q_xV, _):
    q_next_xV = meta(p_base_xV, q_xV, alpha)
    return q_next_xV, q_next_xV

  _, qs = jax.lax.scan(step, q0_xV, None, length=num_generations)
  return jnp.concatenate([q0_xV[None], qs], axis=0)
