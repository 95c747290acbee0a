"""The regression list: deliberately broken operators that the axiom properties must reject.

Each entry is an operator that breaks one claim, the property that rejects it, and that claim.
Hypothesis must find the break with the CI strategies, settings and example budget of the property
(no hand-picked example; shrinking is off only because the first failing example is all this
needs), so every property is shown to fail on a deliberate violation before it is trusted.
"""

import functools

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods import distill
from jaxrepr.methods.distill import operators as ops
from tests.methods.distill.distill_testlib import (
  CI,
  JUMP_EXAMPLES,
  META_CONTINUITY_EXAMPLES,
  META_EXAMPLES,
  P_CONTINUITY_EXAMPLES,
  SWEEP_EXAMPLES,
  TOP_K_EXAMPLES,
  AxiomViolation,
  _column,
)
from tests.methods.distill.meta_properties import (
  MetaCandidate,
  meta_continuity_property,
  meta_property,
)
from tests.methods.distill.top_k_properties import (
  TopKCandidate,
  target_config,
  top_k_property,
)
from tests.methods.distill.softening_properties import (
  Candidate,
  jump_property,
  p_continuity_property,
  sweep_property,
)


# ----------------------------------------------------------------------------------------------
# Softening operators.


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
def _tiny_mass_leak_onto_zeros(p, T):
  # 1e-12 of the mass on the zero-probability classes: far below any tolerance of the limits.
  F = ops.power(p, T)
  zeros = (p == 0).astype(p.dtype)
  count = zeros.sum(-1, keepdims=True)
  leak = jnp.where(count > 0, 1e-12, 0.0)
  return (1.0 - leak) * F + leak * zeros / jnp.maximum(count, 1.0)


# ----------------------------------------------------------------------------------------------
# Top-k teachers: leaks made after the k softened values are scattered back to all classes.


@functools.partial(jax.jit, static_argnums=2)
def _leak_after_scatter(p, T, k):
  # A 1e-12 floor on every class once the target is back over all V classes (say, a guard
  # against log 0 in the loss applied to the target instead of the student).
  F = distill.soft_target(target_config("power", T, k), ops.log_prob(p))
  return (F + 1e-12 / F.shape[-1]) / (1.0 + 1e-12)


@functools.partial(jax.jit, static_argnums=2)
def _soften_over_all_classes(p, T, k):
  # Truncate and renormalise, then soften over all V classes: the mixture gives the cut classes
  # (1 - 1/T) / V each.
  return ops.mixture(ops.top_k_truncate(p, k), T)


@functools.partial(jax.jit, static_argnums=2)
def _smoothed_before_softening(p, T, k):
  # Renormalising the revealed values with a 1e-12 floor (a guard against a zero sum) gives kept
  # zero-probability classes mass that the power family never creates.
  values, indices = jax.lax.top_k(p, k)
  kept = (values + 1e-12) / jnp.sum(values + 1e-12, axis=-1, keepdims=True)
  return ops.soften_revealed(ops.power, kept, indices, T, p.shape[-1])


# ----------------------------------------------------------------------------------------------
# Meta-teachers.


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


@jax.jit
def _classwise_max_anchor(p, q, a):
  # max(alpha p, (1 - alpha) q), renormalised: anchored (t_i >= alpha p_i), a fixed point at
  # q = p, continuous, but a different weight for every class, so off the segment from q to p.
  a = _column(a, p)
  t = jnp.maximum(a * p, (1.0 - a) * q)
  return t / t.sum(-1, keepdims=True)


@jax.jit
def _extra_anchor_where_q_misses_support(p, q, a):
  # Anchors harder, (1 + alpha) / 2, when the previous student gives zero to a class of p: convex,
  # anchored and contracting, but it jumps as that zero becomes positive.
  a = _column(a, p)
  misses = jnp.any((p > 0) & (q == 0), axis=-1, keepdims=True)
  a = jnp.where(misses, 0.5 * (1.0 + a), a)
  return a * p + (1.0 - a) * q


def _bad(name, apply, rule, inputs="probs"):
  return Candidate(name, apply, rule, inputs=inputs, formula=False)


def _bad_meta(name, apply, rule="anchored_mixture"):
  return MetaCandidate(name, apply, rule, formula=False)


def _sweep32(cand, enabled, settings):
  return sweep_property(cand, enabled, settings, dtype=np.float32)


BAD_OPERATORS = [
  # (candidate, property, its example budget in CI, the claim that must reject it)
  (
    _bad("no_softening_between_3_and_5", _no_softening_between_3_and_5, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "entropy",
  ),
  (
    _bad("frozen_between_3_and_5", _frozen_between_3_and_5, "power"),
    jump_property,
    JUMP_EXAMPLES,
    "continuity_T",
  ),
  (
    _bad("ties_broken_by_index", _ties_broken_by_index, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "ranking",
  ),
  (
    _bad(
      "top_two_swapped_for_large_logits",
      _top_two_swapped_for_large_logits,
      "power",
      inputs="logits",
    ),
    sweep_property,
    SWEEP_EXAMPLES,
    "ranking",
  ),
  (
    _bad("unnormalised_power", _unnormalised_power, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "simplex",
  ),
  (
    _bad("temperature_offset", _temperature_offset, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "identity",
  ),
  (
    _bad("support_mixture", _support_mixture, "mixture"),
    p_continuity_property,
    P_CONTINUITY_EXAMPLES,
    "continuity_p",
  ),
  (_bad("no_sharpening", _no_sharpening, "hybrid"), sweep_property, SWEEP_EXAMPLES, "limits"),
  (
    _bad("naive_softmax", _naive_softmax, "power", inputs="logits"),
    _sweep32,
    SWEEP_EXAMPLES,
    "simplex",
  ),
  (
    _bad("near_ties_swapped_when_softening", _near_ties_swapped_when_softening, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "ranking",
  ),
  (
    _bad("entropy_dip_with_many_classes", _entropy_dip_with_many_classes, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "entropy",
  ),
  (
    _bad("mass_leak_onto_zeros", _mass_leak_onto_zeros, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "limits",
  ),
  (
    _bad("mass_leak_onto_zeros", _mass_leak_onto_zeros, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "support",
  ),
  (
    _bad("tiny_mass_leak_onto_zeros", _tiny_mass_leak_onto_zeros, "power"),
    sweep_property,
    SWEEP_EXAMPLES,
    "support",
  ),
  (
    TopKCandidate("leak_after_scatter", _leak_after_scatter, "power"),
    top_k_property,
    TOP_K_EXAMPLES,
    "top_k",
  ),
  (
    TopKCandidate("soften_over_all_classes", _soften_over_all_classes, "mixture"),
    top_k_property,
    TOP_K_EXAMPLES,
    "top_k",
  ),
  (
    TopKCandidate("smoothed_before_softening", _smoothed_before_softening, "power"),
    top_k_property,
    TOP_K_EXAMPLES,
    "support",
  ),
  (
    _bad_meta("towards_uniform", _towards_uniform),
    meta_property,
    META_EXAMPLES,
    "meta_fixed_point",
  ),
  (
    _bad_meta("unnormalised_meta", _unnormalised_meta),
    meta_property,
    META_EXAMPLES,
    "meta_simplex",
  ),
  (
    _bad_meta("too_little_anchor", _too_little_anchor),
    meta_property,
    META_EXAMPLES,
    "meta_anchoring",
  ),
  (_bad_meta("too_little_anchor", _too_little_anchor), meta_property, META_EXAMPLES, "contraction"),
  (
    _bad_meta("classwise_max_anchor", _classwise_max_anchor),
    meta_property,
    META_EXAMPLES,
    "meta_convexity",
  ),
  (
    _bad_meta("extra_anchor_where_q_misses_support", _extra_anchor_where_q_misses_support),
    meta_continuity_property,
    META_CONTINUITY_EXAMPLES,
    "meta_continuity",
  ),
  # Documented, not defects: log-linear anchoring can put less than alpha p_i on p_base, and
  # neither log-linear operator is a convex combination of its two arguments.
  (_bad_meta("geometric", jax.jit(ops.geometric)), meta_property, META_EXAMPLES, "meta_anchoring"),
  (
    _bad_meta("anchored_geometric", jax.jit(ops.anchored_geometric)),
    meta_property,
    META_EXAMPLES,
    "meta_convexity",
  ),
]


@pytest.mark.parametrize(
  "cand, prop, examples, axiom",
  BAD_OPERATORS,
  ids=[f"{c.name}-{a}" for c, _, _, a in BAD_OPERATORS],
)
def test_known_bad_operator_is_rejected(cand, prop, examples, axiom):
  settings = hypothesis.settings(
    CI, max_examples=examples, phases=[hypothesis.Phase.generate], report_multiple_bugs=False
  )
  with pytest.raises(AxiomViolation) as excinfo:
    prop(cand, frozenset({axiom}), settings)()
  assert excinfo.value.axiom == axiom
