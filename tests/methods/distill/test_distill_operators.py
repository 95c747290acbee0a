"""Softening operator families: non-equivalence, the A5 readings, partial access, shapes.

The families are jaxrepr's formalisation of the operators of Flouro & Chadwick, "Sparse Knowledge
Distillation: A Mathematical Framework for Probability-Domain Temperature Scaling and Multi-Stage
Compression" (arXiv 2601.03195; only its abstract was available). Every family against every
axiom, on drawn inputs: test_distill_softening_axioms.py.
"""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxrepr.methods.distill import axioms
from jaxrepr.methods.distill import operators as ops

SETTINGS = hypothesis.settings(max_examples=8, deadline=None, derandomize=True)


@pytest.mark.parametrize(
  "name, wrong_reading", [("power", "full"), ("mixture", "support"), ("hybrid", "support")]
)
def test_each_family_fails_the_other_reading_of_a5(name, wrong_reading):
  # The A5 support convention (left open by the abstract) decides which families qualify.
  p_NxV = np.array([[0.5, 0.5, 0.0], [0.6, 0.3, 0.1]])
  with jax.enable_x64(True):
    result = axioms.check_high_temperature_limit(ops.FAMILIES[name], p_NxV, wrong_reading)
  assert not result.passed
  np.testing.assert_array_equal(result.witness["p"], p_NxV[0])


def test_power_scales_log_odds_by_inverse_temperature_and_keeps_zeros():
  p_V = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
  with jax.enable_x64(True):
    for T in [1e-3, 0.3, 2.0, 1e3]:
      out_V = np.asarray(ops.power(jnp.asarray(p_V), T))
      assert np.all(np.isfinite(out_V)) and out_V[-1] == 0.0
      if T >= 0.3:  # at T = 1e-3 the small entries underflow, so there are no log-odds to compare
        np.testing.assert_allclose(
          np.log(out_V[:4] / out_V[0]), np.log(p_V[:4] / p_V[0]) / T, rtol=1e-9
        )


def test_power_and_mixture_are_not_reparametrisations_of_each_other():
  """No increasing phi with phi(1) = 1 gives P_T = U_phi(T): the witness (1/2, 1/2, 0) forces
  phi(T) = 1 (only U_1 leaves it unchanged, and P_T always does), and P_2 != U_1 on a second p."""
  witness = jnp.array([0.5, 0.5, 0.0])
  second = jnp.array([0.7, 0.2, 0.1])
  t_grid = np.geomspace(1.0, 1e3, 40)
  for T in [0.5, 2.0, 10.0]:
    np.testing.assert_allclose(ops.power(witness, T), witness, atol=1e-7)
    matches = [
      Tm for Tm in t_grid if np.allclose(ops.mixture(witness, Tm), ops.power(witness, T), atol=1e-6)
    ]
    assert matches == [1.0]
  assert np.abs(ops.power(second, 2.0) - ops.mixture(second, 1.0)).sum() > 0.1
  # The mixture's limit puts mass on the zero class, the power family's never does.
  assert float(ops.mixture(witness, 1e6)[2]) == pytest.approx(1 / 3, abs=1e-5)
  assert float(ops.power(witness, 1e6)[2]) == 0.0


def test_hybrid_sharpens_where_mixture_cannot():
  # Mixture entropy never drops below H(p) on its domain; the hybrid goes below it for T < 1, so
  # no reparametrisation maps one onto the other.
  p_NxV = jnp.array([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
  h_p = axioms.entropy(p_NxV)
  for T in [1.0, 1.5, 4.0, 100.0]:
    assert jnp.all(axioms.entropy(ops.mixture(p_NxV, T)) >= h_p - 1e-6)
  assert jnp.all(axioms.entropy(ops.hybrid(p_NxV, 0.5)) < h_p - 1e-2)


@pytest.mark.parametrize("name", sorted(ops.FAMILIES))
@SETTINGS
@hypothesis.given(
  seed=st.integers(0, 2**31 - 1),
  num_classes=st.sampled_from([4, 7]),
  k=st.integers(1, 4),
  log_T=st.floats(-1.0, 3.0),
)
def test_top_k_never_places_mass_on_cut_classes(name, seed, num_classes, k, log_T):
  family = ops.FAMILIES[name]
  T = float(np.exp(log_T))
  T = T if family.in_domain(T) else 1.0 + T
  with jax.enable_x64(True):
    p_NxV = jnp.asarray(np.random.default_rng(seed).dirichlet(np.ones(num_classes), size=6))
    out_NxV = np.asarray(ops.soften_top_k(family, p_NxV, T, k))
    leaked_NxV = np.asarray(ops.mixture(ops.top_k_truncate(p_NxV, k), max(T, 1.0)))
  kept_NxV = np.zeros(out_NxV.shape, bool)
  np.put_along_axis(kept_NxV, np.argsort(-np.asarray(p_NxV), axis=-1)[:, :k], True, axis=-1)
  assert np.all(out_NxV[~kept_NxV] == 0.0)
  np.testing.assert_allclose(out_NxV.sum(-1), 1.0, rtol=1e-12)
  for p_V, o_V, m_V in zip(np.asarray(p_NxV), out_NxV, kept_NxV):
    order = np.argsort(-p_V[m_V])
    assert np.all(np.diff(o_V[m_V][order]) < 0)  # ranking kept strictly among kept classes
  # Softening the truncated distribution over all classes (not the kept ones) would leak mass.
  if name == "mixture" and k < num_classes and T > 1.0 + 1e-6:
    assert np.all(leaked_NxV[~kept_NxV] > 0)


def test_soften_revealed_matches_top_k_and_checks_shapes():
  p_NxV = jnp.array([[0.1, 0.5, 0.15, 0.25], [0.4, 0.3, 0.2, 0.1]])
  values_NxK, indices_NxK = jax.lax.top_k(p_NxV, 2)
  np.testing.assert_allclose(
    ops.soften_revealed(ops.mixture, values_NxK, indices_NxK, 3.0, 4),
    ops.soften_top_k(ops.mixture, p_NxV, 3.0, 2),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    ops.top_k_truncate(p_NxV, 2), [[0, 2 / 3, 0, 1 / 3], [4 / 7, 3 / 7, 0, 0]], rtol=1e-6
  )
  with pytest.raises(ValueError, match="k = 5"):
    ops.soften_top_k(ops.power, p_NxV, 2.0, 5)
  with pytest.raises(ValueError, match="differ in shape"):
    ops.soften_revealed(ops.power, values_NxK, indices_NxK[:, :1], 2.0, 4)


def test_hard_label_teacher_is_one_hot_for_power_and_label_smoothing_for_mixture():
  labels_N = jnp.array([0, 3])
  np.testing.assert_array_equal(
    ops.hard_label_teacher(ops.power, labels_N, 4, 5.0), jax.nn.one_hot(labels_N, 4)
  )
  smooth_NxV = ops.hard_label_teacher(ops.mixture, labels_N, 4, 2.0)
  np.testing.assert_allclose(
    smooth_NxV, [[0.625, 0.125, 0.125, 0.125], [0.125, 0.125, 0.125, 0.625]], rtol=1e-6
  )


def test_out_of_domain_temperatures_are_errors_not_clips():
  p_V = jnp.array([0.7, 0.2, 0.1])
  with pytest.raises(ValueError, match="mixture operator: temperature must be >= 1.0"):
    ops.mixture(p_V, 0.5)
  with pytest.raises(ValueError, match="power operator: temperature must be > 0.0"):
    ops.power(p_V, 0.0)
  assert np.all(np.isnan(jax.jit(ops.mixture)(p_V, 0.5)))
  assert np.all(np.isnan(jax.jit(ops.power)(p_V, -1.0)))
  with pytest.raises(KeyError, match="registered: \\['hybrid', 'mixture', 'power'\\]"):
    ops.get_family("sparsemax")


def test_per_example_temperatures():
  p_NxV = jnp.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
  T_N = jnp.array([2.0, 0.5])
  for family in ops.FAMILIES.values():
    T_N_dom = jnp.where(T_N < 1, 1.0, T_N) if not family.sharpens else T_N
    out_NxV = family(p_NxV, T_N_dom)
    for i in range(2):
      np.testing.assert_allclose(out_NxV[i], family(p_NxV[i], float(T_N_dom[i])), rtol=1e-6)
  with pytest.raises(ValueError, match="temperature shape"):
    ops.power(p_NxV, jnp.ones(3))


class FiniteTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*sorted(ops.FAMILIES))
  def test_shapes_finite_and_on_simplex_across_domain(self, name):
    family = ops.FAMILIES[name]
    p_BxNxV = jnp.array([[[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]] * 2)
    apply = self.variant(family.apply)
    for T in [1e-3, 0.1, 1.0, 7.0, 1e3]:
      if not family.in_domain(T):
        continue
      out = apply(p_BxNxV, T)
      chex.assert_shape(out, (2, 3, 4))
      chex.assert_tree_all_finite(out)
      np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*sorted(ops.FAMILIES))
  def test_gradient_in_temperature_is_finite_with_zeros(self, name):
    p_V = jnp.array([0.6, 0.4, 0.0])
    q_V = jnp.array([0.3, 0.3, 0.4])
    grad = self.variant(jax.grad(lambda T: axioms.kl(ops.FAMILIES[name](p_V, T), q_V)))
    chex.assert_tree_all_finite(grad(2.0))
