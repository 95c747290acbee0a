"""The pattern task generator ("Searching Latent Program Spaces", §5.2; the reference code's
`PatternTaskGenerator`): shapes, pattern at the marker, density, determinism, resumable and
shard-independent iterators."""

import chex
import numpy as np
import pytest

from jaxrepr.data import pattern


def _cfg(**kw):
  c = pattern.default_config()
  c.update(kw)
  return c


def _check_task(grids_NxRxCx2, shapes_Nx2x2, rows, cols, p):
  """Each input holds one marker; each output is the task's one pattern pasted at that marker."""
  patterns = []
  for g, s in zip(grids_NxRxCx2, shapes_Nx2x2):
    assert s.tolist() == [[rows, rows], [cols, cols]]
    inp, out = g[..., 0], g[..., 1]
    assert (inp != 0).sum() == 1 and inp.max() == pattern.MARKER_COLOUR
    r, c = np.argwhere(inp)[0]
    assert r <= rows - p and c <= cols - p
    window = out[r : r + p, c : c + p].copy()
    rest = out.copy()
    rest[r : r + p, c : c + p] = 0
    assert not rest.any(), "output has colour outside the pattern window"
    patterns.append(window)
  for w in patterns[1:]:
    np.testing.assert_array_equal(w, patterns[0])
  return patterns[0]


def test_batch_shapes_and_pattern_at_marker():
  it = pattern.train_iterator(_cfg(), batch_size=16, seed=0)
  b = next(it)
  chex.assert_shape(b["grids"], (16, 4, 10, 10, 2))
  chex.assert_shape(b["shapes"], (16, 4, 2, 2))
  assert b["grids"].dtype == np.int32 and b["shapes"].dtype == np.int32
  for g, s in zip(b["grids"], b["shapes"]):
    pat = _check_task(g, s, 10, 10, 4)
    assert (pat != 0).all() and pat.max() <= 9  # density 1.0: every cell coloured


def test_padding_and_small_variant():
  cfg = _cfg(grid_rows=4, grid_cols=4, pattern_size=2, max_rows=6, max_cols=5)
  b = next(pattern.train_iterator(cfg, batch_size=4, seed=1))
  chex.assert_shape(b["grids"], (4, 4, 6, 5, 2))
  assert not b["grids"][:, :, 4:].any() and not b["grids"][:, :, :, 4:].any()
  for g, s in zip(b["grids"], b["shapes"]):
    _check_task(g[:, :4, :4], s, 4, 4, 2)


@pytest.mark.parametrize("density", [0.5, 0.75])
def test_density(density):
  data = pattern.eval_set(_cfg(), num_tasks=256, seed=3, density=density)
  patterns = np.stack([_check_task(g, s, 10, 10, 4) for g, s in zip(data["grids"], data["shapes"])])
  frac = (patterns != 0).mean()
  assert abs(frac - density) < 0.04, frac  # 4096 cells: std about 0.008
  colours = patterns[patterns != 0]
  assert set(np.unique(colours)) == set(range(1, 10))


def test_eval_set_fixed_ood_and_separate_from_training():
  cfg = _cfg(density=0.5, eval_density=1.0, eval_num_tasks=32)
  a, b = pattern.eval_set(cfg), pattern.eval_set(cfg)
  chex.assert_shape(a["grids"], (32, 4, 10, 10, 2))
  np.testing.assert_array_equal(a["grids"], b["grids"])
  assert (a["grids"][..., 1].reshape(32, -1) != 0).sum(
    1
  ).min() == 4 * 16  # eval density 1.0, 4 pairs
  train = next(pattern.train_iterator(cfg, batch_size=32, seed=cfg.eval_seed))
  assert not np.array_equal(train["grids"], a["grids"])


def test_iterator_deterministic_resumable_and_shard_independent():
  cfg = _cfg()
  it = pattern.train_iterator(cfg, batch_size=8, seed=5)
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  nxt = next(it)
  again = pattern.train_iterator(cfg, batch_size=8, seed=5)
  for ref in first:
    np.testing.assert_array_equal(next(again)["grids"], ref["grids"])
  resumed = pattern.train_iterator(cfg, batch_size=8, seed=5)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["grids"], nxt["grids"])
  shards = [
    pattern.train_iterator(cfg, batch_size=8, seed=5, shard_index=i, shard_count=2)
    for i in range(2)
  ]
  for ref in first:
    parts = [next(s) for s in shards]
    np.testing.assert_array_equal(np.concatenate([p["grids"] for p in parts]), ref["grids"])
    np.testing.assert_array_equal(np.concatenate([p["shapes"] for p in parts]), ref["shapes"])
  other = pattern.train_iterator(cfg, batch_size=8, seed=6)
  assert not np.array_equal(next(other)["grids"], first[0]["grids"])


@pytest.mark.parametrize(
  "field, value", [("pattern_size", 11), ("density", 1.5), ("max_rows", 5), ("num_pairs", 0)]
)
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    pattern.train_iterator(_cfg(**{field: value}), batch_size=2, seed=0)
