"""`launch/summarize_runs.py --at_steps`: a learning curve over seeds from run directories, for
claims such as "the baseline has plateaued by step S", with runs still training read at the steps
they have logged."""

import json
import os
import subprocess
import sys

import pytest

from jaxrepr.errors import DataError
from launch import _run_tables
from tests.core.helpers import REPO

SCRIPT = os.path.join(REPO, "launch", "summarize_runs.py")


def _curve_run(path, values: dict[int, float], steps=1200):
  """A run whose test/accuracy is `values` {step: value}, configured for `steps` steps."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"train": {"steps": steps, "batch_size": 64}}))
  rows = [{"step": s, "test/accuracy": v} for s, v in sorted(values.items())]
  rows.insert(1, {"step": 50, "train/loss": 1.0})  # other metrics between the evaluations
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _curve(patterns, steps, skip=False):
  groups = _run_tables.group_runs(_run_tables.expand(patterns), r"_s(\d+)$")
  return _run_tables.curve_table(groups, "test/accuracy", steps, 100.0, 1, skip)


def _rows(text):
  rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
  return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}


def test_the_curve_has_each_steps_mean_and_std_over_seeds_and_runs_in_progress_count(tmp_path):
  _curve_run(tmp_path / "cnn_s0", {400: 0.80, 800: 0.90, 1200: 0.92})
  _curve_run(tmp_path / "cnn_s1", {400: 0.84, 800: 0.88, 1200: 0.94})
  _curve_run(tmp_path / "chain_s0", {400: 0.50, 800: 0.70}, steps=4800)  # still training
  text, skipped, _ = _curve([str(tmp_path / "*")], [400, 800])
  rows = _rows(text)
  assert text.splitlines()[:1] == _run_tables.curve_header([400, 800])[:1]
  assert rows["cnn"][1:4] == ["82.0 +- 2.8", "89.0 +- 1.4", "2"]
  assert rows["chain"][1:4] == ["50.0", "70.0", "1"]  # it has both steps
  assert rows["chain"][4] == "4800 steps x 64"  # the budget it is configured for
  assert skipped == []


def test_a_step_not_reached_is_blank_and_one_not_logged_or_a_missing_metric_is_named(tmp_path):
  _curve_run(tmp_path / "cnn_s0", {400: 0.80, 800: 0.90, 1200: 0.92})
  _curve_run(tmp_path / "cnn_s1", {400: 0.84, 800: 0.88}, steps=1200)  # still training
  _curve_run(tmp_path / "chain_s0", {400: 0.50, 800: 0.70}, steps=4800)
  text, skipped, _ = _curve([str(tmp_path / "*")], [400, 1200])
  rows = _rows(text)
  assert rows["cnn"][1:4] == ["82.0 +- 2.8", "92.0 (1 of 2)", "2"]
  assert rows["chain"][1:4] == ["50.0", "-", "1"]
  with pytest.raises(DataError, match="cnn_s0: train.steps is 1200, so it never reaches step 1600"):
    _curve([str(tmp_path / "cnn_s0")], [1600])  # a finished run is not a run in progress
  with pytest.raises(DataError, match=r"not logged at step 600 \(logged at 400, 800, 1200\)"):
    _curve([str(tmp_path / "cnn_s0")], [600])
  (tmp_path / "new_s0").mkdir()  # started, no metrics yet
  with pytest.raises(DataError, match="metrics.jsonl does not exist"):
    _curve([str(tmp_path / "*")], [400])
  text, skipped, _ = _curve([str(tmp_path / "*")], [400], skip=True)
  assert "new" not in _rows(text) and [os.path.basename(w) for w, _ in skipped] == ["new_s0"]


def test_a_step_logged_twice_after_a_resume_gives_its_newest_value(tmp_path):
  w = _curve_run(tmp_path / "r_s0", {400: 0.80, 800: 0.90})
  with open(os.path.join(w, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 800, "test/accuracy": 0.91}) + "\n")
  assert _rows(_curve([w], [800])[0])["r"][1] == "91.0"


def test_the_command_writes_a_curve_and_refuses_two_metrics(tmp_path):
  _curve_run(tmp_path / "runs" / "cnn_s0", {400: 0.80, 800: 0.90})
  base = [sys.executable, SCRIPT, f"--runs={tmp_path}/runs/*", "--scale=100"]
  res = subprocess.run(base + ["--at_steps=400,800"], capture_output=True, text=True, cwd=REPO)
  assert res.returncode == 0, res.stderr
  assert "| cnn | 80.00 | 90.00 | 1 |" in res.stdout
  two = base + ["--at_steps=400", "--metric=test/accuracy", "--metric=train/loss"]
  res = subprocess.run(two, capture_output=True, text=True, cwd=REPO)
  assert res.returncode != 0 and "--at_steps tabulates one --metric" in res.stderr
