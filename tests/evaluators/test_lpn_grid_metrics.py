"""Grid metrics against a direct per-pair computation."""

import numpy as np

from jaxrepr.evaluators._lpn_grid_metrics import attempts_metrics, pair_metrics


def _reference(pred, pshape, true, tshape):
  if tuple(pshape) != tuple(tshape):
    return 0.0, 0.0, 0.0
  r, c = tshape
  same = pred[:r, :c] == true[:r, :c]
  return float(same.all()), 1.0, float(same.mean())


def test_pair_metrics_match_a_direct_computation():
  rng = np.random.default_rng(0)
  n, R, C = 64, 6, 5
  true = rng.integers(0, 3, (n, R, C))
  tshape = np.stack([rng.integers(1, R + 1, n), rng.integers(1, C + 1, n)], -1)
  pred = np.where(rng.random((n, R, C)) < 0.9, true, rng.integers(0, 3, (n, R, C)))
  pshape = np.where(rng.random((n, 1)) < 0.8, tshape, rng.integers(1, 5, (n, 2)))
  out = pair_metrics(pred, pshape, true, tshape)
  ref = np.array([_reference(pred[i], pshape[i], true[i], tshape[i]) for i in range(n)])
  np.testing.assert_allclose(np.asarray(out["exact"]), ref[:, 0])
  np.testing.assert_allclose(np.asarray(out["shape"]), ref[:, 1])
  np.testing.assert_allclose(np.asarray(out["pixel"]), ref[:, 2], rtol=1e-6)
  assert 0 < ref[:, 0].mean() < 1  # the draw exercises both outcomes


def test_cells_outside_the_true_shape_do_not_count():
  true = np.zeros((1, 4, 4), int)
  pred = np.full((1, 4, 4), 7)
  pred[0, :2, :3] = 0
  out = pair_metrics(pred, np.array([[2, 3]]), true, np.array([[2, 3]]))
  assert float(out["exact"][0]) == 1.0


def test_top2_counts_either_attempt():
  true = np.ones((2, 3, 3), int)
  shapes = np.full((2, 2), 3)
  wrong = np.zeros((2, 3, 3), int)
  pred = {
    "grids": np.stack([true[0], wrong[1]]),
    "shapes": shapes,
    "grids_2": np.stack([wrong[0], true[1]]),
    "shapes_2": shapes,
  }
  out = attempts_metrics(pred, true, shapes)
  np.testing.assert_array_equal(np.asarray(out["exact"]), [1, 0])
  np.testing.assert_array_equal(np.asarray(out["top2"]), [1, 1])
