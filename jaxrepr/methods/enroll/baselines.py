"""Threshold baselines and binary metrics for open-set enrollment (host numpy, positive = known).

Baselines, from an episode's context (the K gallery samples nearest the probe, sorted by distance):
* NN distance threshold: known iff d(probe, nearest gallery sample) <= tau. tau is tuned to the
  maximum accuracy on training-source episodes and then frozen ("nn"), or re-tuned on episodes of
  the test source itself ("oracle": what a threshold method needs retraining to reach).
* kNN vote: among the `k` nearest gallery samples, v counts those within radius tau that carry the
  nearest neighbour's identity; known iff v / min(k, enrolled walks of that identity) >= m. (tau,
  m) are tuned jointly on training-source episodes (tau over quantiles of the nearest distance, m
  in {0.2, 0.4, ..., 1}) and frozen. With one walk per identity it reduces to the NN threshold; with
  several it also asks the probe to sit among its identity's walks. Its ROC score is v / min(k, w).

Metrics: accuracy, F1 of the "known" class, ROC-AUC (the Mann-Whitney statistic, ties counted one
half, equal to sklearn.metrics.roc_auc_score) and the equal error rate (where the false-accept and
false-reject rates cross on the piecewise-linear ROC curve, as the usual sklearn roc_curve + brentq
recipe computes it).
"""

from __future__ import annotations

import numpy as np

VOTE_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
  return float(np.mean(np.asarray(pred, bool) == np.asarray(y, bool)))


def f1(pred: np.ndarray, y: np.ndarray) -> float:
  pred, y = np.asarray(pred, bool), np.asarray(y, bool)
  tp = np.sum(pred & y)
  denom = 2 * tp + np.sum(pred & ~y) + np.sum(~pred & y)
  return float(2 * tp / denom) if denom else 0.0


def roc_auc(score: np.ndarray, y: np.ndarray) -> float:
  """P(score of a random positive > score of a random negative) + half the ties."""
  from scipy.stats import rankdata

  score, y = np.asarray(score, np.float64), np.asarray(y, bool)
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if not n_pos or not n_neg:
    return float("nan")
  ranks = rankdata(score)  # average ranks for ties
  return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_points(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
  score, y = np.asarray(score, np.float64), np.asarray(y, bool)
  order = np.argsort(-score, kind="stable")
  s, yy = score[order], y[order]
  last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
  tp = np.cumsum(yy)[last_of_run]
  fp = np.cumsum(~yy)[last_of_run]
  return (np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)])


def eer(score: np.ndarray, y: np.ndarray) -> float:
  """Equal error rate: FPR where FPR = 1 - TPR on the linearly interpolated ROC curve."""
  y = np.asarray(y, bool)
  if y.all() or not y.any():
    return float("nan")
  fpr, tpr = roc_points(score, y)
  g = tpr + fpr - 1.0  # nondecreasing along the curve, -1 at (0, 0) and +1 at (1, 1)
  i = int(np.argmax(g >= 0.0))
  if g[i] == 0.0:
    return float(fpr[i])
  t = -g[i - 1] / (g[i] - g[i - 1])
  return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tune_threshold(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(t, accuracy) maximising the accuracy of "known iff score >= t"; t is a midpoint between
  consecutive distinct scores (or beyond the extremes); the first best threshold wins."""
  score, y = np.asarray(score, np.float64), np.asarray(y, bool)
  u = np.unique(score)
  cands = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2.0, u[-1] + 1.0]
  s_sorted = np.sort(score)
  pos_sorted = np.sort(score[y])
  n_pos_ge = len(pos_sorted) - np.searchsorted(pos_sorted, cands, side="left")
  n_neg_lt = np.searchsorted(np.sort(score[~y]), cands, side="left")
  acc = (n_pos_ge + n_neg_lt) / len(s_sorted)
  best = int(np.argmax(acc))
  return float(cands[best]), float(acc[best])


def nn_distance(ctx_dist: np.ndarray, ctx_mask: np.ndarray) -> np.ndarray:
  return np.min(np.where(ctx_mask, ctx_dist, np.inf), axis=1)


def knn_vote(
  ctx_dist: np.ndarray,
  ctx_label: np.ndarray,
  ctx_walks: np.ndarray,
  ctx_mask: np.ndarray,
  k: int,
  tau: float,
) -> np.ndarray:
  """v / min(k, walks of the nearest identity), per episode (module docstring)."""
  order = np.argsort(np.where(ctx_mask, ctx_dist, np.inf), axis=1, kind="stable")[:, :k]
  take = lambda a: np.take_along_axis(a, order, axis=1)
  d, lab, walks, m = take(ctx_dist), take(ctx_label), take(ctx_walks), take(ctx_mask)
  votes = np.sum(m & (lab == lab[:, :1]) & (d <= tau), axis=1)
  return votes / np.maximum(np.minimum(k, walks[:, 0]), 1)


def tune_knn(
  ctx: dict[str, np.ndarray], y: np.ndarray, k: int, num_radii: int = 64
) -> tuple[float, float, float]:
  """(tau, m, accuracy) of the best kNN vote on tuning episodes (module docstring)."""
  d0 = nn_distance(ctx["ctx_dist"], ctx["ctx_mask"])
  radii = np.unique(np.quantile(d0, np.linspace(0.0, 1.0, num_radii)))
  best = (float(radii[0]), VOTE_FRACTIONS[0], -1.0)
  for tau in radii:
    frac = knn_vote(ctx["ctx_dist"], ctx["ctx_label"], ctx["ctx_walks"], ctx["ctx_mask"], k, tau)
    for m in VOTE_FRACTIONS:
      acc = accuracy(frac >= m - 1e-9, y)
      if acc > best[2]:
        best = (float(tau), m, acc)
  return best


def scores(pred: np.ndarray, score: np.ndarray, y: np.ndarray) -> dict[str, float]:
  """accuracy, F1, AUC and EER of hard predictions `pred` and ranking scores `score`."""
  return {
    "accuracy": accuracy(pred, y),
    "f1": f1(pred, y),
    "auc": roc_auc(score, y),
    "eer": eer(score, y),
  }
