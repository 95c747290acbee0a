"""Procedural ARC-like generators: validity, determinism, one hidden program per task."""

import numpy as np
import pytest

from jaxrepr.data import arc_gen
from jaxrepr.data.arc_gen import base

NAMES = sorted(arc_gen.GENERATORS)


def test_registry_has_at_least_30_families():
  assert len(NAMES) >= 30
  for name, gen in arc_gen.GENERATORS.items():
    assert gen.name == name and gen.doc, name


@pytest.mark.parametrize("name", NAMES)
def test_valid_deterministic_and_never_identity(name):
  for seed in range(8):
    for difficulty in (0.0, 0.4, 1.0):
      pairs = arc_gen.make_task(np.random.default_rng([seed]), name, 4, difficulty)
      again = arc_gen.make_task(np.random.default_rng([seed]), name, 4, difficulty)
      assert len(pairs) == 4
      for (i, o), (i2, o2) in zip(pairs, again):
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(o, o2)
        for g in (i, o):
          assert g.dtype == np.int32 and g.ndim == 2
          assert 1 <= g.shape[0] <= 30 and 1 <= g.shape[1] <= 30
          assert g.min() >= 0 and g.max() <= 9
        assert not (i.shape == o.shape and np.array_equal(i, o)), "identity pair"
      # the pairs of a task are different examples, not one pair repeated
      assert len({p[0].tobytes() + bytes(p[0].shape) for p in pairs}) > 1


@pytest.mark.parametrize("name", NAMES)
def test_small_max_size_is_respected(name):
  for seed in range(3):
    for i, o in arc_gen.make_task(np.random.default_rng(seed), name, 3, 1.0, (10, 12)):
      assert i.shape[0] <= 10 and i.shape[1] <= 12 and o.shape[0] <= 10 and o.shape[1] <= 12


def test_difficulty_scales_grid_size():
  def mean_cells(d):
    return np.mean(
      [
        i.size
        for s in range(20)
        for i, _ in arc_gen.make_task(np.random.default_rng(s), "flip", 2, d)
      ]
    )

  assert mean_cells(0.0) < mean_cells(1.0) / 4


@pytest.mark.parametrize("name", NAMES)
def test_hidden_parameters_drawn_once_per_task(name, monkeypatch):
  gen = arc_gen.GENERATORS[name]
  calls = []

  def counted(rng, difficulty):
    calls.append(difficulty)
    return gen.sample_params(rng, difficulty)

  monkeypatch.setitem(arc_gen.GENERATORS, name, base.Generator(name, counted, gen.sample_pair))
  arc_gen.make_task(np.random.default_rng(0), name, 5, 0.5)
  assert len(calls) == 1


def _dihedral_ref(name, p):
  if name == "flip":
    return lambda g: np.flip(g, p["v"])
  if name == "rotate":
    return lambda g: np.rot90(g, -p["v"])
  if name == "transpose":
    return (lambda g: g.T) if p["v"] == "main" else (lambda g: g[::-1, ::-1].T)
  if name == "scale_up":
    return lambda g: np.repeat(np.repeat(g, p["v"], 0), p["v"], 1)
  if name == "scale_down":
    return lambda g: g[:: p["v"], :: p["v"]]
  if name == "shift_wrap":
    return lambda g: np.roll(np.roll(g, p["dr"], 0), p["dc"], 1)
  if name == "recolour_all":
    return lambda g: np.where(g > 0, p["c"], 0)
  if name == "remove_colour":
    return lambda g: np.where(g == p["c"], 0, g)
  if name == "fill_background":
    return lambda g: np.where(g == 0, p["c"], g)
  if name == "colour_map":
    return lambda g: p["perm"][g]
  if name == "frame":

    def frame(g):
      g = g.copy()
      g[0, :] = g[-1, :] = g[:, 0] = g[:, -1] = p["c"]
      return g

    return frame
  if name == "gravity":

    def fall(g):  # reference: sort each line by "is coloured", stable, towards the edge
      axis = 0 if p["v"] in ("down", "up") else 1
      towards_end = p["v"] in ("down", "right")
      key = (g != 0) if towards_end else (g == 0)
      order = np.argsort(key, axis=axis, kind="stable")
      return np.take_along_axis(g, order, axis)

    return fall
  raise KeyError(name)


@pytest.mark.parametrize(
  "name",
  [
    "flip",
    "rotate",
    "transpose",
    "scale_up",
    "scale_down",
    "shift_wrap",
    "recolour_all",
    "remove_colour",
    "fill_background",
    "colour_map",
    "frame",
    "gravity",
  ],
)
def test_all_pairs_follow_the_one_hidden_program(name):
  for seed in range(6):
    pairs, params = arc_gen.make_task(np.random.default_rng(seed), name, 4, 0.6, return_params=True)
    program = _dihedral_ref(name, params)
    for i, o in pairs:
      np.testing.assert_array_equal(program(i), o, err_msg=f"{name} {params}")


@pytest.mark.parametrize("name", ["colour_map", "swap_colours", "invert", "recolour_all"])
def test_colour_families_are_one_consistent_cellwise_map(name):
  """Whatever the hidden map, one input colour always goes to one output colour in a task."""
  for seed in range(6):
    pairs = arc_gen.make_task(np.random.default_rng(seed), name, 4, 1.0)
    mapping = {}
    for i, o in pairs:
      assert i.shape == o.shape
      for a, b in zip(i.reshape(-1), o.reshape(-1)):
        assert mapping.setdefault(int(a), int(b)) == int(b)
    if name != "recolour_all":
      assert 0 not in mapping or mapping[0] == 0 or name == "invert"


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown ARC generator"):
    arc_gen.make_task(np.random.default_rng(0), "nope", 4, 0.5)
  with pytest.raises(ValueError, match="difficulty"):
    arc_gen.make_task(np.random.default_rng(0), "flip", 4, 1.5)
  with pytest.raises(ValueError, match="no valid pair"):
    arc_gen.make_task(np.random.default_rng(0), "scale_up", 2, 0.5, 1)
