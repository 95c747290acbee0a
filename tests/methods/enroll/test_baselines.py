"""Enrollment metrics against sklearn, and the baselines against brute-force numpy."""

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as skm

from jaxrepr.methods.enroll import baselines


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_auc_eer_f1_match_sklearn(seed, ties):
  rng = np.random.default_rng(seed)
  y = rng.random(300) < 0.4
  score = rng.standard_normal(300) + 1.2 * y
  if ties:
    score = np.round(score * 2) / 2
  np.testing.assert_allclose(baselines.roc_auc(score, y), skm.roc_auc_score(y, score), rtol=1e-12)
  fpr, tpr, _ = skm.roc_curve(y, score)
  want = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
  np.testing.assert_allclose(baselines.eer(score, y), want, atol=1e-9)
  pred = score > 0.3
  np.testing.assert_allclose(baselines.f1(pred, y), skm.f1_score(y, pred), rtol=1e-12)
  np.testing.assert_allclose(baselines.accuracy(pred, y), skm.accuracy_score(y, pred))
  assert np.isnan(baselines.roc_auc(score, np.ones(300, bool)))
  # a perfect ranking
  assert baselines.roc_auc(y.astype(float), y) == 1.0 and baselines.eer(y.astype(float), y) == 0.0


def test_threshold_tuning_matches_brute_force():
  rng = np.random.default_rng(3)
  for _ in range(20):
    n = rng.integers(2, 40)
    y = rng.random(n) < 0.5
    score = np.round(rng.standard_normal(n) + y, 1)
    t, acc = baselines.tune_threshold(score, y)
    grid = np.r_[np.unique(score) - 1e-9, np.unique(score).max() + 1.0]
    best = max(np.mean((score >= g) == y) for g in grid)
    np.testing.assert_allclose(acc, best)
    np.testing.assert_allclose(np.mean((score >= t) == y), acc)


def _episodes(rng, n, K):
  d = np.sort(rng.uniform(0.0, 1.0, (n, K)), axis=1)
  lab = rng.integers(0, 3, (n, K))
  walks = rng.integers(1, 6, (n, K))
  mask = np.arange(K)[None, :] < rng.integers(1, K + 1, n)[:, None]
  perm = np.stack([rng.permutation(K) for _ in range(n)])  # the vote must not rely on the order
  take = lambda a: np.take_along_axis(a, perm, axis=1)
  return {
    "ctx_dist": take(d),
    "ctx_label": take(lab),
    "ctx_walks": take(walks),
    "ctx_mask": take(mask),
  }


def test_knn_vote_and_nn_distance_match_brute_force():
  rng = np.random.default_rng(4)
  ctx = _episodes(rng, 50, 7)
  k, tau = 4, 0.6
  got = baselines.knn_vote(
    ctx["ctx_dist"], ctx["ctx_label"], ctx["ctx_walks"], ctx["ctx_mask"], k, tau
  )
  d0 = baselines.nn_distance(ctx["ctx_dist"], ctx["ctx_mask"])
  for b in range(50):
    m = ctx["ctx_mask"][b]
    d, lab, walks = ctx["ctx_dist"][b][m], ctx["ctx_label"][b][m], ctx["ctx_walks"][b][m]
    order = np.argsort(d, kind="stable")
    assert d0[b] == d[order[0]]
    nn_label, nn_walks = lab[order[0]], walks[order[0]]
    votes = sum(1 for j in order[:k] if lab[j] == nn_label and d[j] <= tau)
    np.testing.assert_allclose(got[b], votes / min(k, nn_walks))
  y = rng.random(50) < 0.5
  tau_best, m_best, acc = baselines.tune_knn(ctx, y, k)
  frac = baselines.knn_vote(
    ctx["ctx_dist"], ctx["ctx_label"], ctx["ctx_walks"], ctx["ctx_mask"], k, tau_best
  )
  np.testing.assert_allclose(baselines.accuracy(frac >= m_best - 1e-9, y), acc)
  # no (radius, fraction) on the grid does better
  for r in np.unique(np.quantile(d0, np.linspace(0, 1, 64))):
    f = baselines.knn_vote(
      ctx["ctx_dist"], ctx["ctx_label"], ctx["ctx_walks"], ctx["ctx_mask"], k, r
    )
    for m in baselines.VOTE_FRACTIONS:
      assert baselines.accuracy(f >= m - 1e-9, y) <= acc + 1e-12
