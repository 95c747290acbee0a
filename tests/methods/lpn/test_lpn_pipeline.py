"""LPN through the framework: 1 vs 8 devices, the evaluators' outputs, the training modes."""

import json
import os
import re

import numpy as np
import pytest

from jaxrepr import train
from tests.core.helpers import load_config
from tests.core.test_train import losses


def tiny(arg="tiny", steps=4):
  config = load_config("lpn", arg)
  config.train.update(dict(steps=steps, batch_size=16, log_every=1, checkpoint_every=0))
  return config


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  out = {}
  for n in (1, 8):
    config = tiny("tiny,grad1")
    config.evals = {}
    config.num_devices = n
    train.train_and_evaluate(config, str(tmp_path / str(n)))
    out[n] = losses(tmp_path / str(n))
  steps = sorted(out[1])
  assert steps == [1, 2, 3, 4]
  np.testing.assert_allclose([out[8][s] for s in steps], [out[1][s] for s in steps], rtol=1e-4)


def test_each_arc_evaluator_of_a_config_writes_into_a_directory_of_its_own():
  """`:arc` and `:arc_small` score the evaluation and the training set with two lpn_arc
  evaluators: their submissions must not overwrite each other (they once shared `arc/`)."""
  from jaxrepr.evaluators import lpn_arc

  for variant in ("arc", "arc_small", "overfit"):
    evals = {n: e for n, e in load_config("lpn", variant).evals.items() if e.kind == "lpn_arc"}
    dirs = {n: lpn_arc.output_dir("W", e.split, e.get("tag")) for n, e in evals.items()}
    assert len(set(dirs.values())) == len(dirs), (variant, dirs)
    assert dirs["arc"] == os.path.join("W", "arc"), (variant, dirs)  # beside the metrics' name
    if "arc_train" in dirs:
      assert dirs["arc_train"] == os.path.join("W", "arc_train")


@pytest.mark.heavy
def test_arc_pipeline_writes_scores_submission_and_renderings(tmp_path, capsys):
  config = tiny("arc_small,tiny", steps=2)
  config.num_devices = 1  # 15x15 grids: keep the batch (and memory) small
  config.train.batch_size = 2
  for name in ("arc", "arc_train"):
    config.evals[name].update(dict(max_tasks=2, render=1, batch_size=2))
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["eval"]["arc/mean/tasks"] == 2
  assert re.search(
    r"lpn_arc grad2: (\d+)/\1 test inputs of 2 tasks \| .* ETA 0:00:00", capsys.readouterr().out
  )  # the progress line at the end of a search
  tasks = {}
  for name in ("arc", "arc_train"):  # the evaluation and the training set, each in its own dir
    for search in ("mean", "grad2"):
      assert 0.0 <= summary["eval"][f"{name}/{search}/top2"] <= 1.0
      sub = json.load(open(tmp_path / name / f"{search}_step2_submission.json"))
      assert len(sub) == 2
      tasks[name] = set(sub)
      for attempts in sub.values():
        for a in attempts:
          grid = np.asarray(a["attempt_1"])
          assert grid.ndim == 2 and grid.min() >= 0 and grid.max() <= 9
    pngs = [f for f in os.listdir(tmp_path / name) if f.endswith(".png")]
    assert len(pngs) == 2  # one task rendered per search
  assert not tasks["arc"] & tasks["arc_train"]  # ARC-AGI-1's evaluation and training tasks


def test_heldout_variants_split_the_data_and_add_a_seen_test_set():
  """configs/lpn.py:heldout,position_ood: the data splits are on, `test` scores held-out programs
  and marker rows, `seen` the training side; `latent2d` (every program everywhere) has no split,
  the default (the main job) splits the programs."""
  plain = load_config("lpn", "latent2d")
  assert (plain.data.program_split, plain.data.position_split) == ("none", "none")
  assert "seen" not in plain.evals
  main = load_config("lpn")
  assert (main.data.program_split, main.data.position_split) == ("heldout", "none")
  assert main.evals.seen.data.eval_programs == "train" and "data" not in main.evals.test
  assert "data" not in main.evals.budget and main.evals.budget.budgets
  config = load_config("lpn", "heldout,position_ood")
  assert (config.data.program_split, config.data.position_split) == ("heldout", "heldout")
  assert config.evals.seen.data.eval_programs == "train" and "data" not in config.evals.test
  assert config.evals.seen.searches == config.evals.test.searches
  assert load_config("lpn", "heldout,pattern").data.program_split == "heldout"


@pytest.mark.heavy
def test_heldout_variant_trains_and_tests_on_both_sides_of_the_splits(tmp_path):
  config = tiny("heldout,position_ood,tiny", steps=2)
  config.num_devices = 1
  summary = train.train_and_evaluate(config, str(tmp_path))
  for name in ("test", "seen"):
    assert 0.0 <= summary["eval"][f"{name}/mean/exact"] <= 1.0
