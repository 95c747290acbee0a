"""The held-out split of the procedural ARC families (jaxrepr/data/arc_gen/splits.py) through the
training iterator and the fixed evaluation set of jaxrepr/data/arc.py."""

import numpy as np
import pytest

from jaxrepr.data import arc, arc_gen
from jaxrepr.data.arc_gen import compose, splits
from jaxrepr.errors import ConfigError

HELDOUT = ("flip", "rotate")
FRACTION = 0.3


def _cfg(**kw):
  cfg = arc.default_config()
  cfg.update(
    dict(
      arc_weight=0.0,
      generators="flip,rotate,gravity,frame,compose",
      heldout_generators=",".join(HELDOUT),
      heldout_combo_fraction=FRACTION,
      max_rows=12,
      max_cols=12,
      difficulty_max=0.3,
    )
  )
  cfg.update(kw)
  return cfg


@pytest.fixture
def drawn(monkeypatch):
  """(family, hidden parameters) of every task the code under test draws, in order."""
  seen = []
  real = arc_gen.make_task

  def spy(rng, name, *args, **kwargs):
    pairs, params = real(rng, name, *args, **{**kwargs, "return_params": True})
    seen.append((name, params))
    return pairs

  monkeypatch.setattr(arc_gen, "make_task", spy)
  return seen


def _heldout_combo(params):
  return compose.is_heldout(compose.combination(params), FRACTION)


def test_training_never_draws_a_heldout_family_or_combination(drawn):
  it = arc.train_iterator(_cfg(), batch_size=16, seed=0)
  for _ in range(25):
    next(it)
  assert len(drawn) == 400
  names = [n for n, _ in drawn]
  assert not set(names) & set(HELDOUT)
  combos = [p for n, p in drawn if n == compose.NAME]
  assert len(combos) > 100 and not any(_heldout_combo(p) for p in combos)
  assert {"gravity", "frame"} <= set(names)


def test_the_eval_set_draws_only_the_heldout_side_and_the_train_side_on_request(drawn):
  out = arc.eval_set(_cfg(), num_tasks=60)
  assert out["grids"].shape == (60, 4, 12, 12, 2) and out["pair_mask"].all()
  assert {n for n, _ in drawn} == set(HELDOUT) | {compose.NAME}
  assert all(_heldout_combo(p) for n, p in drawn if n == compose.NAME)
  del drawn[:]
  arc.eval_set(_cfg(eval_programs="train"), num_tasks=60)
  assert not {n for n, _ in drawn} & set(HELDOUT)
  assert not any(_heldout_combo(p) for n, p in drawn if n == compose.NAME)


def test_eval_set_is_fixed_by_its_seed():
  a, b = arc.eval_set(_cfg(), num_tasks=8), arc.eval_set(_cfg(), num_tasks=8)
  np.testing.assert_array_equal(a["grids"], b["grids"])
  c = arc.eval_set(_cfg(eval_seed=1), num_tasks=8)
  assert not np.array_equal(a["grids"], c["grids"])


def test_without_a_split_training_draws_every_family_unfiltered():
  cfg = arc.default_config()
  choices = arc.generator_choices(cfg, "train")
  assert [n for n, _ in choices] == sorted(arc_gen.GENERATORS)
  assert all(accept is None for _, accept in choices)
  with pytest.raises(ConfigError, match="eval_programs='heldout' needs a generator split"):
    arc.eval_set(cfg, num_tasks=2)


def test_a_whole_family_held_out_needs_no_combination_filter():
  choices = splits.side_choices(["flip", "compose"], ["compose"], 0.5, "train")
  assert choices == [("flip", None)]
  heldout = splits.side_choices(["flip", "compose"], ["compose"], 0.5, "heldout")
  assert heldout == [("compose", None)]


@pytest.mark.parametrize(
  "fields, message",
  [
    (dict(heldout_generators="nope"), "config.data.heldout_generators: unknown families"),
    (dict(heldout_generators="tile"), "config.data.heldout_generators: .*not in"),
    (dict(heldout_combo_fraction=1.0), "config.data.heldout_combo_fraction=1.0 must be in"),
    (dict(generators="flip,rotate", heldout_combo_fraction=0.2), "splits the 'compose' family"),
    (dict(generators="flip,rotate", heldout_combo_fraction=0.0), "leaves the train side"),
    (dict(eval_programs="both"), "config.data.eval_programs='both' must be"),
  ],
)
def test_bad_split_fields_are_one_line_config_errors(fields, message):
  cfg = _cfg(**fields)
  with pytest.raises(ConfigError, match=message) as e:
    if "eval_programs" in fields:
      arc.eval_set(cfg, num_tasks=1)
    else:
      arc.train_iterator(cfg, batch_size=1, seed=0)
  assert "\n" not in str(e.value)


def test_accept_redraws_only_the_parameters_and_fails_clearly_when_a_side_is_empty():
  pairs, params = arc_gen.make_task(
    np.random.default_rng(0), "flip", 2, 0.5, return_params=True, accept=lambda p: p["v"] == 1
  )
  assert params["v"] == 1 and all(np.array_equal(np.flip(i, 1), o) for i, o in pairs)
  with pytest.raises(ValueError, match="no hidden parameters accepted"):
    arc_gen.make_task(np.random.default_rng(0), "flip", 2, 0.5, accept=lambda p: False)
