"""The axiom checks can fail, meta-teacher failures are caught, the anchored recursion converges.

The same axioms on drawn inputs: test_distill_softening_axioms.py, test_distill_meta_axioms.py;
operators each check must reject: test_distill_regressions.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods.distill import axioms, meta_axioms
from jaxrepr.methods.distill import operators as ops

P_NxV = axioms.random_distributions(np.random.default_rng(0), 16, 5)
TEMPS = [0.25, 0.5, 1.0, 2.0, 5.0]


def _rank_reversing(p, T):
  return ops.power(p, T)[..., ::-1]


def _non_monotone_entropy(p, T):
  # Temperature goes up then back down to 1: entropy rises then falls, ranking and identity hold.
  return ops.power(p, 1.0 + (T - 1.0) * np.exp(1.0 - T))


def _support_mixture(p, T):
  # Mixing with the uniform over supp(p) jumps when a zero entry becomes positive.
  support = (p > 0).astype(p.dtype)
  return p / T + (1.0 - 1.0 / T) * support / support.sum(-1, keepdims=True)


def test_rank_reversal_is_caught_with_a_witness():
  with jax.enable_x64(True):
    result = axioms.check_ranking(_rank_reversing, P_NxV, TEMPS)
  assert not result.passed and result.worst_violation > 0
  p, out = result.witness["p"], result.witness["output"]
  i, j = np.argmax(p), np.argmin(p)
  assert p[i] > p[j] and out[i] <= out[j]
  assert str(result).startswith("ranking: FAILED")


def test_non_monotone_entropy_is_caught_while_other_axioms_hold():
  temps = [1.0, 1.5, 2.0, 3.0, 5.0, 10.0]
  with jax.enable_x64(True):
    assert axioms.check_ranking(_non_monotone_entropy, P_NxV, temps)
    assert axioms.check_identity(_non_monotone_entropy, P_NxV)
    result = axioms.check_entropy_monotone(_non_monotone_entropy, P_NxV, temps)
  assert not result.passed and result.worst_violation > 1e-3
  assert result.witness["T_low"] >= 2.0  # the effective temperature turns down after T = 2


def test_discontinuity_is_caught():
  with jax.enable_x64(True):
    p_NxV = np.array([[0.7, 0.3, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    result = axioms.check_continuity(_support_mixture, p_NxV, [2.0])
    assert axioms.check_continuity(ops.mixture, p_NxV, [2.0])
  assert not result.passed and result.worst_violation > 0.1
  np.testing.assert_array_equal(result.witness["p"], p_NxV[0])
  assert result.witness["l1_changes"][-1] > 0.1  # the change does not shrink with eps


def test_identity_and_limit_violations_are_caught():
  with jax.enable_x64(True):
    assert not axioms.check_identity(lambda p, T: ops.power(p, 2.0 * T), P_NxV)
    # A family that never sharpens fails the T -> 0 limit.
    no_sharpening = lambda p, T: ops.mixture(p, jnp.maximum(T, 1.0))
    assert not axioms.check_low_temperature_limit(no_sharpening, P_NxV)
    assert not axioms.check_simplex(lambda p, T: 2.0 * ops.power(p, T), P_NxV, TEMPS)
    assert not axioms.check_simplex(lambda p, T: ops.power(p, T) * jnp.nan, P_NxV, TEMPS)


def _leak_onto_zeros(p, T):
  # 1e-9 of the mass moves onto the zero-probability classes.
  zeros = (p == 0).astype(p.dtype)
  count = zeros.sum(-1, keepdims=True)
  leak = jnp.where(count > 0, 1e-9, 0.0)
  return (1.0 - leak) * ops.power(p, T) + leak * zeros / jnp.maximum(count, 1.0)


def test_support_check_catches_a_leak_far_below_the_limit_tolerance():
  with jax.enable_x64(True):
    # The A5 limit check's 1e-3 tolerance cannot see it; the support check's float rounding does.
    assert axioms.check_high_temperature_limit(_leak_onto_zeros, P_NxV, "support")
    result = axioms.check_support(_leak_onto_zeros, P_NxV, TEMPS)
    assert axioms.check_support(ops.power, P_NxV, TEMPS)
  assert not result.passed and result.tolerance == np.finfo(np.float64).eps
  assert result.worst_violation == pytest.approx(1e-9)
  assert np.any(result.witness["p"] == 0)


def _leak_after_scatter(p, T, k):
  # A floor of 1e-12 on every class once the k softened values are back among all V classes.
  F = ops.soften_top_k(ops.power, p, T, k)
  return (F + 1e-12 / p.shape[-1]) / (1.0 + 1e-12)


@pytest.mark.parametrize("name", sorted(ops.FAMILIES))
def test_top_k_check_sees_a_leak_made_after_scattering(name):
  family = ops.FAMILIES[name]
  temps = [T for T in TEMPS if family.in_domain(T)]
  with jax.enable_x64(True):
    assert axioms.check_top_k(functools.partial(ops.soften_top_k, family), P_NxV, temps, [1, 2, 4])
    leaky = axioms.check_top_k(_leak_after_scatter, P_NxV, temps, [2])
    # Softening over all classes after truncating: the mixture's uniform share reaches cut classes.
    over_all = axioms.check_top_k(
      lambda p, T, k: ops.mixture(ops.top_k_truncate(p, k), T), P_NxV, [2.0], [2]
    )
  assert not leaky.passed and leaky.worst_violation < 1e-11
  assert leaky.witness["k"] == 2 and np.count_nonzero(leaky.witness["output"]) == 5
  assert not over_all.passed and over_all.worst_violation > 0.1


@pytest.mark.parametrize("name", sorted(ops.FAMILIES))
def test_check_family_accepts_every_registered_family(name):
  # The library's own checks must not flag a correct family (inputs with zeros and ties); the
  # axioms themselves are tested on drawn inputs in test_distill_softening_axioms.py.
  family = ops.FAMILIES[name]
  with jax.enable_x64(True):
    results = axioms.check_family(family, P_NxV)
  expected = {
    "simplex",
    "ranking",
    "continuity",
    "entropy_monotone",
    "identity",
    f"high_temperature_limit[{family.limit_support}]",
    "top_k",
  }
  if family.sharpens:
    expected.add("low_temperature_limit")
  if family.limit_support == "support":
    expected.add("support")
  assert {r.name for r in results} == expected
  assert all(results), axioms.failures(results)


def test_check_family_rejects_temperatures_outside_the_domain():
  with pytest.raises(ValueError, match="outside the domain of family 'mixture'"):
    axioms.check_family(ops.FAMILIES["mixture"], P_NxV, temperatures=[0.5, 1.0])
  with pytest.raises(ValueError, match="support must be"):
    axioms.check_high_temperature_limit(ops.power, P_NxV, "supp")


def test_kl_and_entropy_match_numpy():
  rng = np.random.default_rng(3)
  p_NxV, q_NxV = rng.dirichlet(np.ones(6), 8), rng.dirichlet(np.ones(6), 8)
  p_NxV[:, 0] = 0.0
  p_NxV /= p_NxV.sum(-1, keepdims=True)
  with jax.enable_x64(True):
    kl_N = axioms.kl(jnp.asarray(p_NxV), jnp.asarray(q_NxV))
    h_N = axioms.entropy(jnp.asarray(p_NxV))
    inf_kl = axioms.kl(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]))
  pos = p_NxV > 0
  ref_kl = np.sum(np.where(pos, p_NxV * np.log(np.where(pos, p_NxV / q_NxV, 1.0)), 0.0), -1)
  np.testing.assert_allclose(kl_N, ref_kl, rtol=1e-12)
  np.testing.assert_allclose(
    h_N, -np.sum(np.where(pos, p_NxV * np.log(np.where(pos, p_NxV, 1)), 0.0), -1), rtol=1e-12
  )
  assert float(inf_kl) == np.inf


def _pair(seed, num_classes=6, n=16):
  rng = np.random.default_rng(seed)
  return rng.dirichlet(np.ones(num_classes), n), rng.dirichlet(0.3 * np.ones(num_classes), n)


def test_geometric_anchoring_fails_probability_domain_anchoring():
  # Log-linear anchoring weights p_base in the log domain: where q_prev is tiny, t_i < alpha p_i.
  p_NxV = np.array([[0.5, 0.5, 0.0]])
  q_NxV = np.array([[1e-6, 0.5, 0.5 - 1e-6]])
  with jax.enable_x64(True):
    result = meta_axioms.check_meta_anchoring(ops.geometric, p_NxV, q_NxV, 0.5)
  assert not result.passed and result.worst_violation > 0.1


def test_user_meta_teachers_that_break_requirements_are_caught():
  p_NxV, q_NxV = _pair(7, num_classes=4)
  towards_uniform = lambda p, q, a: a * p + (1 - a) * jnp.full_like(q, 0.25)
  unnormalised = lambda p, q, a: a * p + q
  too_little_anchor = lambda p, q, a: 0.5 * a * p + (1 - 0.5 * a) * q
  with jax.enable_x64(True):
    assert not meta_axioms.check_meta_fixed_point(towards_uniform, p_NxV, 0.3)
    assert not meta_axioms.check_meta_simplex(unnormalised, p_NxV, q_NxV, 0.3)
    assert not meta_axioms.check_meta_anchoring(too_little_anchor, p_NxV, q_NxV, 0.3)
    assert not meta_axioms.check_contraction(too_little_anchor, p_NxV, q_NxV, 0.3)


def _classwise_max_anchor(p, q, a):
  # Anchored, continuous, a fixed point at q = p, but one weight per class: off the segment.
  t = jnp.maximum(a * p, (1.0 - a) * q)
  return t / t.sum(-1, keepdims=True)


def _extra_anchor_where_q_misses_support(p, q, a):
  # Convex and anchored, but the weight jumps as a zero of q on supp(p) becomes positive.
  misses = jnp.any((p > 0) & (q == 0), axis=-1, keepdims=True)
  a = jnp.where(misses, 0.5 * (1.0 + a), a)
  return a * p + (1.0 - a) * q


META_REQUIREMENTS = [
  "meta_simplex",
  "meta_anchoring",
  "meta_convexity",
  "meta_continuity",
  "meta_fixed_point",
]


@pytest.mark.parametrize(
  "meta, failing",
  [
    (ops.anchored_mixture, set()),
    # Documented: log-domain anchoring (M2) and no convex combination of the arguments (M3).
    (ops.geometric, {"meta_anchoring", "meta_convexity"}),
    (ops.anchored_geometric, {"meta_convexity"}),
    (_classwise_max_anchor, {"meta_convexity"}),
    (_extra_anchor_where_q_misses_support, {"meta_continuity"}),
  ],
  ids=[
    "anchored_mixture",
    "geometric",
    "anchored_geometric",
    "classwise_max_anchor",
    "extra_anchor_where_q_misses_support",
  ],
)
def test_check_meta_teacher_checks_all_five_requirements(meta, failing):
  # Moderate inputs with zeros and ties, supports meeting (the log-linear operators' domain).
  rng = np.random.default_rng(4)
  p_NxV = axioms.random_distributions(rng, 16, 5)
  q_NxV = axioms.random_distributions(rng, 16, 5)
  q_NxV[:4] = np.array([0.0, 0.25, 0.25, 0.25, 0.25])  # misses class 0 where p_NxV may not
  p_NxV[:4, 0] = 0.5
  p_NxV[:4] /= p_NxV[:4].sum(-1, keepdims=True)
  with jax.enable_x64(True):
    results = meta_axioms.check_meta_teacher(meta, p_NxV, q_NxV, [0.1, 0.5, 0.9])
  assert [r.name for r in results] == META_REQUIREMENTS * 3
  assert {r.name for r in results if not r.passed} == failing, axioms.failures(results)


def test_convexity_and_continuity_failures_name_their_witness():
  p_NxV = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
  q_NxV = np.array([[0.0, 0.5, 0.5], [0.5, 0.3, 0.2]])
  with jax.enable_x64(True):
    convexity = meta_axioms.check_meta_convexity(_classwise_max_anchor, p_NxV, q_NxV, 0.3)
    continuity = meta_axioms.check_meta_continuity(
      _extra_anchor_where_q_misses_support, p_NxV, q_NxV, 0.3
    )
  assert not convexity.passed and convexity.worst_violation > 0.01
  assert 0.0 <= convexity.witness["nearest_weight"] <= 1.0
  # The jump (alpha 0.3 -> 0.65 on |p - q|_1 = 1) does not shrink with eps.
  assert not continuity.passed and continuity.witness["perturbed"] == "q_prev"
  np.testing.assert_allclose(continuity.witness["l1_changes"][-3:], 0.35, rtol=1e-9)


def test_alpha_zero_gives_no_contraction():
  p_NxV, q_NxV = _pair(11)
  with jax.enable_x64(True):
    ratio_N = meta_axioms.contraction_ratio(ops.anchored_mixture, p_NxV, q_NxV, 0.0)
    qs_KxNxV = ops.realisable_recursion(
      ops.anchored_mixture, jnp.asarray(p_NxV), jnp.asarray(q_NxV), 0.0, 5
    )
    kl_KxN = axioms.kl(jnp.asarray(p_NxV)[None], qs_KxNxV)
  np.testing.assert_allclose(ratio_N, 1.0, rtol=1e-12)
  np.testing.assert_allclose(kl_KxN, np.broadcast_to(kl_KxN[0], kl_KxN.shape), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_realisable_recursion_converges_geometrically_to_the_base_teacher(alpha):
  rng = np.random.default_rng(5)
  p_NxV = jnp.asarray(rng.dirichlet(np.ones(5), 4))
  num_gen = 30
  with jax.enable_x64(True):
    p_NxV = jnp.asarray(p_NxV, jnp.float64)
    finals = []
    for q0 in (rng.dirichlet(np.ones(5), 4), rng.dirichlet(0.2 * np.ones(5), 4)):
      q0_NxV = jnp.asarray(q0, jnp.float64)
      qs = np.asarray(ops.realisable_recursion(ops.anchored_mixture, p_NxV, q0_NxV, alpha, num_gen))
      assert qs.shape == (num_gen + 1, 4, 5)
      l1_KxN = np.abs(qs - np.asarray(p_NxV)[None]).sum(-1)
      decay_K = (1.0 - alpha) ** np.arange(num_gen + 1)
      np.testing.assert_allclose(l1_KxN, decay_K[:, None] * l1_KxN[0][None], rtol=1e-9, atol=1e-12)
      kl_KxN = np.asarray(axioms.kl(p_NxV[None], jnp.asarray(qs)))
      assert np.all(kl_KxN <= decay_K[:, None] * kl_KxN[0][None] + 1e-15)
      finals.append(qs[-1])
  # The limit (the anchor) does not depend on the initial student.
  np.testing.assert_allclose(finals[0], finals[1], atol=2 * (1.0 - alpha) ** num_gen)


def test_noisy_recursion_stays_below_the_eps_over_alpha_floor():
  rng = np.random.default_rng(2)
  alpha, eps, num_gen = 0.3, 1e-2, 40
  p_V = rng.dirichlet(np.ones(6))
  q_V = rng.dirichlet(np.ones(6))
  l1_0 = np.abs(q_V - p_V).sum()
  for k in range(1, num_gen + 1):
    with jax.enable_x64(True):
      t_V = np.asarray(ops.anchored_mixture(jnp.asarray(p_V), jnp.asarray(q_V), alpha))
    # An imperfect generation: move eps/2 of mass between two classes (L1 error eps).
    i, j = np.argmax(t_V), np.argmin(t_V)
    delta_V = np.zeros(6)
    delta_V[i], delta_V[j] = -eps / 2, eps / 2
    q_V = t_V + delta_V
    bound = (1 - alpha) ** k * l1_0 + eps * (1 - (1 - alpha) ** k) / alpha
    assert np.abs(q_V - p_V).sum() <= bound + 1e-6


def test_aggregate_teachers():
  p_MxNxV = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
  np.testing.assert_allclose(
    ops.aggregate_teachers(p_MxNxV, jnp.array([0.25, 0.75])), [[0.25, 0.75]]
  )
  with pytest.raises(ValueError, match="simplex"):
    ops.aggregate_teachers(p_MxNxV, jnp.array([0.5, 0.6]))
  with pytest.raises(ValueError, match="alpha must lie in"):
    ops.anchored_mixture(p_MxNxV[0], p_MxNxV[1], 1.5)
  with pytest.raises(KeyError, match="registered"):
    ops.get_meta_teacher("ema")
