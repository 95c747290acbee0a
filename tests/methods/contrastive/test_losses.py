"""The contrastive losses against definitions written out here in numpy: the multilinear inner
product, CLIP's symmetric InfoNCE, ConVIRT's weighting, pairwise CLIP, Symile's two negative
layouts and its M = 2 reduction to CLIP, loss >= 0, invariance to a joint permutation of the batch
and the zero-shot scores (Symile, Saporta et al., NeurIPS 2024; CLIP, Radford et al., 2021;
ConVIRT, Zhang et al., 2020)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods.contrastive import loss as L


def _reps(m, n=6, d=4, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(n, d)).astype(np.float32) for _ in range(m)]


def _ce(logits, labels):
  """Mean softmax cross-entropy in float64."""
  logits = np.asarray(logits, np.float64)
  lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
  return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def _clip_np(u, v, s):
  lab = np.arange(len(u))
  return 0.5 * (_ce(s * u @ v.T, lab) + _ce(s * v @ u.T, lab))


def test_mip_is_the_sum_of_coordinate_products_and_symmetric():
  a, b, c = _reps(3)
  want = np.einsum("nd,nd,nd->n", a, b, c)
  np.testing.assert_allclose(L.mip(a, b, c), want, rtol=1e-5)
  for order in itertools.permutations((a, b, c)):
    np.testing.assert_allclose(L.mip(*order), want, rtol=1e-5)
  np.testing.assert_allclose(L.mip(a, b), np.sum(a * b, -1), rtol=1e-5)  # M = 2: dot product


@pytest.mark.parametrize("scheme", L.NEGATIVE_SAMPLING)
def test_symile_with_two_modalities_is_clip(scheme):
  a, b = _reps(2, n=8)
  s = jnp.float32(2.7)
  want = _clip_np(a, b, 2.7)
  got = L.symile([a, b], s, scheme, jax.random.key(3))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(L.infonce(a, b, s), want, rtol=1e-6)


def test_n_squared_layout_for_three_modalities():
  x, y, z = _reps(3, n=5)
  n = len(x)
  logits = np.asarray(L.symile_logits_n_squared(x, [y, z]))
  assert logits.shape == (n, n * n)
  pairs = set()
  for b, j in itertools.product(range(n), range(n)):
    want = np.einsum("nd,d,d->n", x, y[j], z[(j - b) % n])
    np.testing.assert_allclose(logits[:, b * n + j], want, rtol=1e-5, atol=1e-6)
    pairs.add((j, (j - b) % n))
  assert len(pairs) == n * n  # every (y, z) pair once per row
  np.testing.assert_allclose(np.diag(logits[:, :n]), L.mip(x, y, z), rtol=1e-5)  # labels arange


def _reference_products(tensors):
  """The Symile reference code's recursion (`compute_non_anchor_products`), in numpy."""
  if len(tensors) == 2:
    y, z = tensors
    out = []
    for _ in range(len(y)):
      out.append(y * z)
      z = np.roll(z, 1, axis=0)
    return out
  x, partial = tensors[0], _reference_products(tensors[1:])
  out = []
  for _ in range(len(x)):
    out.extend(p * x for p in partial)
    x = np.roll(x, 1, axis=0)
  return out


@pytest.mark.parametrize("m", [3, 4, 5])
def test_n_squared_products_follow_the_reference_recursion(m):
  reps = _reps(m - 1, n=3, d=2, seed=m)
  want = np.concatenate(_reference_products(reps), 0)
  np.testing.assert_allclose(L.all_combination_products(reps), want, rtol=1e-6)
  assert want.shape[0] == 3 ** (m - 1)


def test_n_layout_diagonal_is_positive_and_columns_are_permuted_products():
  """Through the function the loss calls: the diagonal holds the positive MIPs; every off-diagonal
  column j is a_n . (y_p * z_q) for one (p, q), and p, q run over permutations of the rows."""
  x, y, z = _reps(3, n=7, seed=1)
  n = len(x)
  logits = np.asarray(L.symile_anchor_logits([x, y, z], 0, "n", jax.random.key(5)))
  assert logits.shape == (n, n)
  np.testing.assert_allclose(np.diag(logits), L.mip(x, y, z), rtol=1e-5)
  off = ~np.eye(n, dtype=bool)
  ps, qs = [], []
  for j in range(n):
    match = [
      (p, q)
      for p, q in itertools.product(range(n), range(n))
      if np.allclose(logits[off[:, j], j], (x @ (y[p] * z[q]))[off[:, j]], rtol=1e-4, atol=1e-5)
    ]
    assert len(match) == 1, (j, match)
    ps.append(match[0][0])
    qs.append(match[0][1])
  # row j of a permuted modality appears once; the diagonal overwrite drops nothing from the rest
  assert sorted(ps) == list(range(n)) and sorted(qs) == list(range(n))
  assert ps != qs  # one independent permutation per non-anchor modality
  again = L.symile_anchor_logits([x, y, z], 0, "n", jax.random.key(5))
  np.testing.assert_array_equal(again, logits)  # fixed permutations: deterministic


def test_n_layout_with_given_permutations():
  x, y, z = _reps(3, n=6, seed=2)
  p1, p2 = np.array([3, 0, 5, 1, 4, 2]), np.array([1, 2, 0, 5, 3, 4])
  logits = np.asarray(L.symile_logits_n(x, [y, z], [p1, p2]))
  want = x @ (y[p1] * z[p2]).T
  np.fill_diagonal(want, np.einsum("nd,nd,nd->n", x, y, z))
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", L.NEGATIVE_SAMPLING)
def test_symile_is_the_mean_over_anchors_of_the_cross_entropy(scheme):
  reps = _reps(3, n=5, seed=4)
  s, rng = 1.7, jax.random.key(8)
  keys = jax.random.split(rng, 3)
  want = np.mean(
    [
      _ce(s * np.asarray(L.symile_anchor_logits(reps, m, scheme, keys[m])), np.arange(5))
      for m in range(3)
    ]
  )
  np.testing.assert_allclose(L.symile(reps, jnp.float32(s), scheme, rng), want, rtol=1e-5)
  if scheme == "n_squared":  # anchor a's row n is the positive among all N^2 (b, c) pairs
    x, y, z = reps
    all_bc = np.einsum("nd,jd,kd->njk", x, y, z).reshape(5, 25)
    want_a = _ce(s * all_bc, np.arange(5) * 6)  # the aligned pair (n, n) is column n * 5 + n
    got_a = _ce(s * np.asarray(L.symile_anchor_logits(reps, 0, scheme, None)), np.arange(5))
    np.testing.assert_allclose(got_a, want_a, rtol=1e-5)


def test_convirt_weights_the_two_directions():
  v, u = _reps(2, n=6, seed=5)
  lab = np.arange(6)
  for lam in (0.0, 0.5, 0.75, 1.0):
    want = lam * _ce(v @ u.T / 0.1, lab) + (1 - lam) * _ce(u @ v.T / 0.1, lab)
    np.testing.assert_allclose(L.convirt(v, u, 0.1, lam), want, rtol=1e-5)
  np.testing.assert_allclose(L.convirt(v, u, 0.1, 0.5), _clip_np(v, u, 10.0), rtol=1e-5)
  assert abs(float(L.convirt(v, u, 0.1, 0.75)) - float(L.convirt(v, u, 0.1, 0.25))) > 1e-3


def test_pairwise_clip_sums_the_pairs_and_averages_on_request():
  a, b, c = _reps(3, n=6, seed=6)
  want = _clip_np(a, b, 3.0) + _clip_np(b, c, 3.0) + _clip_np(a, c, 3.0)
  np.testing.assert_allclose(L.pairwise_infonce([a, b, c], jnp.float32(3.0)), want, rtol=1e-5)
  mean = L.pairwise_infonce([a, b, c], jnp.float32(3.0), "mean")
  np.testing.assert_allclose(mean, want / 3, rtol=1e-5)
  np.testing.assert_allclose(L.pairwise_infonce([a, b], 3.0), _clip_np(a, b, 3.0), rtol=1e-5)


def test_logit_scale_is_clipped_at_the_flag_value():
  assert math.isclose(L.CLIP_LOGIT_SCALE_INIT, math.log(1 / 0.07))
  t = jnp.float32(math.log(1000.0))
  np.testing.assert_allclose(L.logit_scale(t, 100.0), 100.0, rtol=1e-6)
  np.testing.assert_allclose(L.logit_scale(t, 0.0), 1000.0, rtol=1e-5)
  np.testing.assert_allclose(L.logit_scale(jnp.float32(1.0), 100.0), math.e, rtol=1e-6)
  assert float(jax.grad(lambda t: L.logit_scale(t, 100.0))(t)) == 0.0


def _all_losses(reps, rng):
  s = jnp.float32(5.0)
  out = {f"symile_{k}": L.symile(reps, s, k, rng) for k in L.NEGATIVE_SAMPLING}
  out["clip"] = L.pairwise_infonce(reps, s)
  out["convirt"] = L.convirt(reps[0], reps[1], 0.1, 0.75)
  return out


def test_losses_are_non_negative_even_at_a_perfect_match():
  reps = _reps(3, n=6, seed=7)
  one_hot = [np.eye(6, 6, dtype=np.float32)] * 3  # each row matches only itself
  for r in (reps, one_hot):
    for name, value in _all_losses(r, jax.random.key(0)).items():
      assert float(value) >= 0.0, name
  assert float(L.symile(one_hot, jnp.float32(50.0), "n_squared", None)) < 1e-6


def test_losses_are_invariant_to_a_joint_permutation_of_the_rows():
  reps = _reps(3, n=6, seed=8)
  perm = np.array([4, 2, 0, 5, 1, 3])
  moved = [r[perm] for r in reps]
  base, permuted = _all_losses(reps, jax.random.key(1)), _all_losses(moved, jax.random.key(1))
  for name in ("symile_n_squared", "clip", "convirt"):  # exactly
    np.testing.assert_allclose(permuted[name], base[name], rtol=1e-5, err_msg=name)
  # O(N): in distribution, over the random permutations
  keys = jax.random.split(jax.random.key(2), 400)
  f = jax.jit(jax.vmap(lambda r, k: L.symile(r, jnp.float32(5.0), "n", k), in_axes=(None, 0)))
  a, b = np.asarray(f(reps, keys)), np.asarray(f(moved, keys))
  assert abs(a.mean() - b.mean()) < 4 * np.hypot(a.std(), b.std()) / math.sqrt(400)
  assert a.std() > 0  # fresh permutations per key


def test_zeroshot_argmax_is_the_mip_argmax_and_ignores_the_scale():
  rng = np.random.default_rng(9)
  qa, qc = rng.normal(size=(2, 10, 4)).astype(np.float32)
  cand = rng.normal(size=(12, 4)).astype(np.float32)
  want = np.argmax(np.einsum("bd,bd,kd->bk", qa, qc, cand), -1)
  for s in (0.3, 1.0, 100.0):
    got = np.argmax(L.zeroshot_scores(cand, [qa, qc], jnp.float32(s), "symile"), -1)
    np.testing.assert_array_equal(got, want)
  pairwise = np.argmax((qa + qc) @ cand.T, -1)
  for s in (0.3, 100.0):
    got = np.argmax(L.zeroshot_scores(cand, [qa, qc], jnp.float32(s), "pairwise"), -1)
    np.testing.assert_array_equal(got, pairwise)
  assert (pairwise != want).any()  # the two scores differ
