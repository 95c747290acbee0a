"""lpn_arc scores over the tasks that fit and over all tasks of the split (skipped = failures)."""

import json

import jax
import jax.numpy as jnp
import pytest

from jaxrepr import parallel
from jaxrepr.data import arc
from jaxrepr.evaluators import lpn_arc
from jaxrepr.methods import lpn
from tests.methods.lpn.lpn_testlib import tiny_config


def _grid(side, seed):
  return [[(i * 3 + j * 5 + seed) % 4 for j in range(side)] for i in range(side)]


def _write(tmp_path):
  """a_fit: identity on 3x3 (solved by an identity prediction); b_big: identity on 5x5 (over 4x4,
  skipped); c_fit: a left-right flip on 3x3 (not solved); d_big: 5x5 with no test output (neither
  scored nor counted)."""
  d = tmp_path / "tasks"
  d.mkdir()

  def pair(side, seed, flip=False, output=True):
    g = _grid(side, seed)
    return {"input": g} | ({"output": [r[::-1] for r in g] if flip else g} if output else {})

  tasks = {
    "a_fit": (3, False, True),
    "b_big": (5, False, True),
    "c_fit": (3, True, True),
    "d_big": (5, False, False),
  }
  for name, (side, flip, out) in tasks.items():
    task = {
      "train": [pair(side, s, flip) for s in (1, 2)],
      "test": [pair(side, 7, flip, output=out)],
    }
    (d / f"{name}.json").write_text(json.dumps(task))
  return d


def _data_cfg(d):
  cfg = arc.default_config()
  cfg.update(dict(source="path", eval_path=str(d), max_rows=4, max_cols=4))
  return cfg


def test_summary_divides_the_credits_by_all_tasks_for_the_all_figures():
  per_task = {
    "a": dict(top2=1.0, exact=1.0, shape=1.0, pixel=1.0, latent_evals=3),
    "b": dict(top2=0.5, exact=0.0, shape=1.0, pixel=0.5, latent_evals=3),
  }
  s = lpn_arc.summarize("m", per_task, skipped=2)
  assert (s["m/top2"], s["m/top1"], s["m/tasks"]) == (0.75, 0.5, 2.0)
  assert (s["m/top2_all"], s["m/top1_all"]) == (1.5 / 4, 1.0 / 4)
  assert (s["m/tasks_all"], s["m/tasks_skipped"]) == (4.0, 2.0)
  assert lpn_arc.summarize("m", {}, skipped=3)["m/top2_all"] == 0.0


def test_selection_counts_skipped_tasks_with_outputs_up_to_the_last_evaluated(tmp_path):
  cfg = _data_cfg(_write(tmp_path))
  ids = lambda ts: [t.id for t in ts]  # noqa: E731
  tasks, skipped = lpn_arc.select_tasks(cfg, "eval")
  assert ids(tasks) == ["a_fit", "c_fit"] and skipped == 1  # d_big has no output to score
  tasks, skipped = lpn_arc.select_tasks(cfg, "eval", max_tasks=1)
  assert ids(tasks) == ["a_fit"] and skipped == 0
  tasks, skipped = lpn_arc.select_tasks(cfg, "eval", task_ids="b_big,c_fit")
  assert ids(tasks) == ["c_fit"] and skipped == 1
  cfg.skip_oversize = False
  with pytest.raises(ValueError, match="task b_big: grid of 5x5 is larger"):
    lpn_arc.select_tasks(cfg, "eval")


def test_the_training_split_of_a_re_arc_run_is_arcs_own_training_set(tmp_path):
  """re-ARC's files have no test pairs: the in-distribution column scores ARC's training tasks."""
  d = tmp_path / "re_arc"
  d.mkdir()
  (d / "007bbfb7.json").write_text(
    json.dumps([{"input": _grid(3, s), "output": _grid(3, s)} for s in range(3)])
  )
  cfg = arc.default_config()
  cfg.update(dict(source="re_arc", re_arc_path=str(d), max_rows=30, max_cols=30))
  arckit_cfg = arc.default_config()
  arckit_cfg.update(dict(max_rows=30, max_cols=30))
  tasks, skipped = lpn_arc.select_tasks(cfg, "train")
  expected, expected_skipped = lpn_arc.select_tasks(arckit_cfg, "train")
  assert [t.id for t in tasks] == [t.id for t in expected] and len(tasks) == 400
  assert skipped == expected_skipped == 0
  assert all(t.test and t.test[0][1] is not None for t in tasks)


def _copy_input(encoder, decoder, params, sg, ss, sm, test_grids, test_shapes, rng, eval_cfg):
  """A stand-in for lpn.solve_task whose attempts copy the test input."""
  k = test_grids.shape[0]
  zeros = jnp.zeros((k,), jnp.int32)
  return dict(
    grids=test_grids,
    grids_2=test_grids,
    shapes=test_shapes,
    shapes_2=test_shapes,
    score=zeros.astype(jnp.float32),
    score_2=zeros.astype(jnp.float32),
    latent_evals=zeros,
    decoder_calls=zeros,
  )


def test_evaluators_of_the_two_splits_write_into_directories_of_their_own(tmp_path, monkeypatch):
  """The evaluation and the training set of one run (`arc`, `arc_train` of configs/lpn.py:arc):
  each submission lands in its own directory, the later one overwriting nothing."""
  monkeypatch.setattr(lpn, "solve_task", _copy_input)
  config = tiny_config(size=4)
  config.data = _data_cfg(_write(tmp_path))
  train_dir = tmp_path / "train_tasks"
  train_dir.mkdir()
  (train_dir / "t_fit.json").write_text((tmp_path / "tasks" / "a_fit.json").read_text())
  config.data.train_path = str(train_dir)
  work = tmp_path / "work"
  for split in ("eval", "train"):
    ev = lpn_arc.Evaluator(
      config=config,
      method=None,
      mesh=parallel.make_mesh(1),
      workdir=str(work),
      split=split,
      batch_size=1,
      render=0,
    )
    ev.run({}, jax.random.key(0), step=0)
  assert set(json.load(open(work / "arc" / "mean_step0_submission.json"))) == {"a_fit", "c_fit"}
  assert set(json.load(open(work / "arc_train" / "mean_step0_submission.json"))) == {"t_fit"}


def test_evaluator_reports_both_figures(tmp_path, monkeypatch):
  """Through Evaluator.run: a prediction that copies the test input solves a_fit only."""
  monkeypatch.setattr(lpn, "solve_task", _copy_input)
  config = tiny_config(size=4)
  config.data = _data_cfg(_write(tmp_path))
  ev = lpn_arc.Evaluator(
    config=config,
    method=None,
    mesh=parallel.make_mesh(1),
    workdir=str(tmp_path / "work"),
    batch_size=1,
    render=0,
  )
  out = ev.run({}, jax.random.key(0), step=0)
  assert out["mean/top2"] == 0.5 and out["mean/tasks"] == 2.0
  assert out["mean/top2_all"] == pytest.approx(1 / 3) and out["mean/top1_all"] == pytest.approx(
    1 / 3
  )
  assert (out["mean/tasks_all"], out["mean/tasks_skipped"]) == (3.0, 1.0)
  saved = json.load(open(tmp_path / "work" / "arc" / "mean_step0.json"))
  assert saved["summary"]["mean/top2_all"] == pytest.approx(1 / 3)
