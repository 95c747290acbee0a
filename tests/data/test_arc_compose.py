"""The compositional ARC family, the bit-identity of the 40 single families, and the diversity
measure (jaxrepr/data/arc_gen/compose.py, diversity.py)."""

import hashlib
import json
import os

import numpy as np
import pytest
from scipy import ndimage

from jaxrepr.data import arc, arc_gen
from jaxrepr.data.arc_gen import base, compose, diversity

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "arc_gen_golden.json")))
SINGLE = sorted(GOLDEN["families"])  # the 40 families as they were before compose existed


def _digest_family(name, seed):
  """sha256 (first 16 hex digits) of 4-pair tasks of one seed at 3 difficulties and 2 size limits;
  arc_gen_golden.json holds what the code gave before compose, `accept` and `sized` existed."""
  h = hashlib.sha256()
  for d in (0.0, 0.5, 1.0):
    for size in (30, (10, 12)):
      for i, o in arc_gen.make_task(np.random.default_rng([seed, 7]), name, 4, d, size):
        for g in (i, o):
          h.update(np.asarray(g.shape, np.int64).tobytes())
          h.update(g.astype(np.int32).tobytes())
  return h.hexdigest()[:16]


def _digest_stream(weight):
  cfg = arc.default_config()
  cfg.generators = ",".join(SINGLE)
  cfg.arc_weight = weight
  it = arc.train_iterator(cfg, batch_size=8, seed=3)
  h = hashlib.sha256()
  for _ in range(6):
    b = next(it)
    for k in sorted(b):
      h.update(k.encode())
      h.update(np.ascontiguousarray(b[k]).tobytes())
  return h.hexdigest()[:16]


def _changed(seeds):
  return [n for n in SINGLE for s in seeds if _digest_family(n, s) != GOLDEN["families"][n][s]]


def test_the_40_single_families_are_bit_identical_to_before():
  assert len(SINGLE) == 40 and set(SINGLE) < set(arc_gen.GENERATORS)
  assert not _changed([0]), "families whose tasks changed"


@pytest.mark.heavy
def test_the_40_single_families_are_bit_identical_to_before_on_all_saved_seeds():
  assert not _changed(range(6)), "families whose tasks changed"


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_the_training_stream_of_the_single_families_is_bit_identical_to_before(weight):
  """Without a split, the sampler draws family, difficulty and task with the same rng calls."""
  assert _digest_stream(weight) == GOLDEN["sampler"][str(weight)]


def _tasks(n, difficulty=0.6, size=30):
  for seed in range(n):
    yield arc_gen.make_task(
      np.random.default_rng([seed, 1]), "compose", 4, difficulty, size, return_params=True
    )


def test_programs_are_2_or_3_primitives_of_distinct_groups_with_fills_last():
  lengths, kinds = set(), set()
  for _, p in _tasks(30):
    names = [n for n, _ in p["steps"]]
    groups = [compose.PRIMITIVES[n].group for n in names]
    assert 2 <= len(names) <= 3 and len(set(groups)) == len(groups), names
    fills = [compose.PRIMITIVES[n].fills for n in names]
    assert fills == sorted(fills), names  # nothing after a step that fills the background
    if any(compose.PRIMITIVES[n].scene for n in names):
      assert p["input"] == "scene", names
    lengths.add(len(names))
    kinds.add(p["input"])
  assert lengths == {2, 3} and kinds == {"scene", "noise"}


def test_every_pair_is_the_one_program_and_every_step_acts():
  for pairs, p in _tasks(40):
    for i, o in pairs:
      np.testing.assert_array_equal(compose.run_program(i, p, strict=False), o, err_msg=str(p))
      g = i
      for name, q in p["steps"]:
        out = compose.PRIMITIVES[name].apply(g, q)
        assert not (out.shape == g.shape and np.array_equal(out, g)), f"{name} did nothing: {p}"
        g = out


def test_scene_inputs_are_several_objects_on_black():
  """Scene inputs: at least 2 objects, each one colour, apart from each other (no two touch even
  diagonally), on a black background."""
  objects = []
  for pairs, p in _tasks(30):
    if p["input"] != "scene":
      continue
    for i, _ in pairs:
      labels, n = base.components(i)
      assert all(len(np.unique(i[labels == k])) == 1 for k in range(1, n + 1))
      assert ndimage.label(i != 0, structure=np.ones((3, 3)))[1] == n
      assert (i == 0).mean() > 0.3
      objects.append(n)
  assert len(objects) > 30 and np.mean(np.asarray(objects) >= 2) > 0.9


def _reference(name, p):
  """Independent versions of the primitives that repeat a single family."""
  return {
    "flip": lambda g: g[::-1] if p.get("axis") == 0 else g[:, ::-1],
    "rotate": lambda g: np.rot90(g, 4 - p.get("k", 0)),
    "scale_up": lambda g: np.repeat(np.repeat(g, p.get("f", 1), 0), p.get("f", 1), 1),
    "recolour_all": lambda g: (g > 0) * p.get("c", 0),
    "remove_colour": lambda g: g * (g != p.get("c")),
    "fill_background": lambda g: g + (g == 0) * p.get("c", 0),
    "shift_wrap": lambda g: np.roll(np.roll(g, p.get("dr", 0), 0), p.get("dc", 0), 1),
    "gravity": lambda g: np.take_along_axis(
      g,
      np.argsort(
        (g != 0) if p.get("dir") in ("down", "right") else (g == 0),
        axis=0 if p.get("dir") in ("down", "up") else 1,
        kind="stable",
      ),
      0 if p.get("dir") in ("down", "up") else 1,
    ),
  }.get(name)


def test_primitives_match_independent_references():
  rng = np.random.default_rng(0)
  checked = set()
  for _ in range(200):
    name = list(compose.PRIMITIVES)[int(rng.integers(len(compose.PRIMITIVES)))]
    p = compose.PRIMITIVES[name].sample(rng)
    ref = _reference(name, p)
    if ref is None:
      continue
    g = base.dense_grid(rng, int(rng.integers(2, 8)), int(rng.integers(2, 8)), 1.0)
    np.testing.assert_array_equal(compose.PRIMITIVES[name].apply(g, p), ref(g), err_msg=name)
    checked.add(name)
  assert len(checked) == 8


def test_object_primitives_act_on_objects():
  g = np.zeros((7, 7), np.int32)
  g[0:3, 0:3] = 2  # 9 cells, one interior cell
  g[5, 5:7] = 3  # 2 cells
  g[5, 0] = 4  # 1 cell
  run = lambda name, **p: compose.PRIMITIVES[name].apply(g, p)  # noqa: E731
  np.testing.assert_array_equal(run("keep_largest"), np.where(g == 2, 2, 0))
  np.testing.assert_array_equal(run("colour_largest", c=9), np.where(g == 2, 9, g))
  by_size = run("recolour_by_size", by_size=(5, 6, 7, 8))
  assert (by_size[g == 2] == 8).all() and (by_size[g == 3] == 6).all() and by_size[5, 0] == 5
  hollow = run("hollow")
  assert hollow[1, 1] == 0 and (hollow[g == 3] == 3).all() and hollow.sum() == g.sum() - 2
  np.testing.assert_array_equal(run("crop_content"), g[:6])  # row 6 is empty
  corner = np.zeros((4, 4), np.int32)
  corner[0, 0:3], corner[0:3, 2] = 1, 1  # an L: its bounding box is rows 0..2, columns 0..2
  boxes = compose.PRIMITIVES["bounding_boxes"].apply(corner, {"c": 5})
  assert (boxes[:3, :3] == np.where(corner[:3, :3], 1, 5)).all() and (boxes[3] == 0).all()
  tie = np.zeros((4, 4), np.int32)
  tie[0, 0:2], tie[3, 1:3] = 1, 2
  with pytest.raises(base.Retry):  # two objects of one size: no "largest"
    compose.PRIMITIVES["keep_largest"].apply(tie, {})


def test_combinations_are_unordered_and_the_split_is_a_stable_share():
  a = {"steps": (("flip", {"axis": 0}), ("gravity", {"dir": "up"}))}
  b = {"steps": (("gravity", {"dir": "down"}), ("flip", {"axis": 1}))}
  assert compose.combination(a) == compose.combination(b) == ("flip", "gravity")
  combos = compose.all_combinations()
  share = np.mean([compose.is_heldout(c, 0.25) for c in combos])
  assert len(combos) == len(set(combos)) == 810 and 0.2 < share < 0.3
  drawn = {compose.combination(p) for p in diversity.draw_params("compose", 100)}
  assert drawn <= set(combos) and len(drawn) > 50


def test_diversity_counts_parameters_and_compose_has_far_more_programs():
  assert diversity.distinct_programs("flip", 100) == 2
  assert diversity.distinct_programs("crosses", 100) == 1
  counts = diversity.compose_counts(100)
  assert counts["programs"] > 90 and counts["functions"] > 80 and counts["combinations"] > 50
  # equal parameters are one program, whatever their container types
  assert diversity.canonical({"perm": np.arange(3), "v": (1, 2)}) == diversity.canonical(
    {"v": [1, 2], "perm": np.array([0, 1, 2])}
  )


def test_function_fingerprint_tells_functions_apart_and_merges_equal_ones():
  probes = diversity.probe_grids()
  fp = lambda *steps: diversity.function_fingerprint({"steps": steps}, probes)  # noqa: E731
  # flip rows, then rotate 180 == flip columns; both orders of commuting steps are one function
  assert fp(("flip", {"axis": 0}), ("rotate", {"k": 2})) == fp(("flip", {"axis": 1}))
  assert fp(("flip", {"axis": 0}), ("recolour_all", {"c": 3})) == fp(
    ("recolour_all", {"c": 3}), ("flip", {"axis": 0})
  )
  assert fp(("flip", {"axis": 0}), ("recolour_all", {"c": 3})) != fp(
    ("flip", {"axis": 1}), ("recolour_all", {"c": 3})
  )
  # a 1 x 6 row turned into a 6 x 1 column has the same cells in the same order: shape counts
  row = [np.arange(1, 7, dtype=np.int32)[None]]
  same = {"steps": (("colour_map", {"perm": tuple(range(10))}),)}
  turned = {"steps": (("rotate", {"k": 1}),)}
  assert diversity.function_fingerprint(same, row) != diversity.function_fingerprint(turned, row)


def test_diversity_table_has_a_row_per_family():
  text, counts = diversity.table(draws=20)
  assert set(counts) == set(arc_gen.GENERATORS)
  for name in arc_gen.GENERATORS:
    assert f"| {name} |" in text or f"| **{name}** |" in text


def test_programs_are_drawn_to_fit_small_size_limits():
  """A program whose smallest input would not fit is never drawn, so small limits never fail."""
  for pairs, p in _tasks(30, difficulty=1.0, size=(6, 7)):
    assert all(max(g.shape[0] for g in pair) <= 6 for pair in pairs), p
    assert all(max(g.shape[1] for g in pair) <= 7 for pair in pairs), p
