"""The pattern task generator ("Searching Latent Program Spaces", §5.2; the reference code's
`PatternTaskGenerator`): shapes, pattern at the marker, density, determinism, resumable and
shard-independent iterators."""

import itertools

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


# ----------------------------------------------------------------------------- splits
SMALL = dict(grid_rows=4, grid_cols=4, pattern_size=2, colours=3)  # 3^4 = 81 programs


def _patterns(grids, p):
  """The pattern of each task (B, N, R, C, 2) -> (B, P, P), read at pair 0's marker."""
  out = []
  for task in grids:
    r, c = np.argwhere(task[0, ..., 0])[0]
    out.append(task[0, r : r + p, c : c + p, 1])
  return np.stack(out)


def _all_small_programs():
  return [np.array(t, np.int32).reshape(2, 2) for t in itertools.product(range(1, 4), repeat=4)]


def test_program_hash_is_stable_and_keyed_on_the_program():
  pat = np.array([[1, 2], [3, 0]])
  # A fixed value: a hash that changed between versions or processes would move the split.
  assert pattern.program_hash(pat) == pytest.approx(0.206640, abs=1e-6)
  assert pattern.program_hash(pat.astype(np.int64)) == pattern.program_hash(pat)
  assert pattern.program_hash(pat.T) != pattern.program_hash(pat)
  assert pattern.program_hash(np.zeros((2, 2))) != pattern.program_hash(np.zeros((4, 1)))
  held = sum(pattern.is_heldout(p, 0.25) for p in _all_small_programs())
  assert 10 <= held <= 30  # about a quarter of 81 (18 with this hash)


def test_heldout_programs_never_appear_in_a_large_training_sample():
  """20,000 training tasks of the 81-program space: none uses a test program, yet they cover every
  program on the training side; the test set uses only held-out programs, several of them."""
  cfg = _cfg(**SMALL, program_split="heldout", heldout_fraction=0.25)
  it = pattern.train_iterator(cfg, batch_size=500, seed=0)
  train = {p.tobytes() for _ in range(40) for p in _patterns(next(it)["grids"], 2)}
  test = {p.tobytes() for p in _patterns(pattern.eval_set(cfg)["grids"], 2)}
  heldout = {p.tobytes() for p in _all_small_programs() if pattern.is_heldout(p, 0.25)}
  assert not train & test
  assert test <= heldout and len(test) >= 10
  assert len(train) == 81 - len(heldout)
  # The default draws every program for training and test alike (the old behaviour).
  plain = _cfg(**SMALL)
  seen = {
    p.tobytes()
    for p in _patterns(next(pattern.train_iterator(plain, batch_size=2000, seed=0))["grids"], 2)
  }
  assert (
    len(seen) == 81
    and {p.tobytes() for p in _patterns(pattern.eval_set(plain)["grids"], 2)} & heldout
  )


def test_eval_programs_train_draws_from_the_training_side():
  cfg = _cfg(**SMALL, program_split="heldout", eval_programs="train")
  pats = _patterns(pattern.eval_set(cfg)["grids"], 2)
  assert not any(pattern.is_heldout(p, cfg.heldout_fraction) for p in pats)


def test_heldout_marker_rows_split_training_and_test_positions():
  cfg = _cfg(position_split="heldout", heldout_marker_rows=2)  # 10x10, P = 4: rows 0..6
  train = next(pattern.train_iterator(cfg, batch_size=500, seed=0))["grids"][..., 0]
  test = pattern.eval_set(cfg)["grids"][..., 0]
  train_rows = set(np.argwhere(train)[:, 2].tolist())
  test_rows = set(np.argwhere(test)[:, 2].tolist())
  assert train_rows == {0, 1, 2, 3, 4} and test_rows == {5, 6}
  cols = set(np.argwhere(test)[:, 3].tolist())
  assert cols == set(range(7))  # columns are not split
  for g, s in zip(
    pattern.eval_set(cfg, num_tasks=16)["grids"], pattern.eval_set(cfg, num_tasks=16)["shapes"]
  ):
    _check_task(g, s, 10, 10, 4)


def test_an_empty_split_side_is_an_error():
  cfg = _cfg(grid_rows=2, grid_cols=2, pattern_size=1, colours=1, program_split="heldout")
  # one program in all (colour 1): one side of the split is empty
  side = "heldout" if not pattern.is_heldout(np.ones((1, 1)), 0.25) else "train"
  with pytest.raises(ValueError, match=f"no {side} program"):
    if side == "heldout":
      pattern.eval_set(cfg, num_tasks=1)
    else:
      next(pattern.train_iterator(cfg, batch_size=1, seed=0))


@pytest.mark.parametrize(
  "field, value",
  [
    ("program_split", "random"),
    ("heldout_fraction", 1.0),
    ("position_split", "cols"),
    ("heldout_marker_rows", 7),
    ("eval_programs", "all"),
  ],
)
def test_bad_split_config_names_the_field(field, value):
  kw = {"program_split": "heldout", "position_split": "heldout", field: value}
  with pytest.raises(ValueError, match=field):
    pattern.train_iterator(_cfg(**kw), batch_size=2, seed=0)
