"""A run's training time read back from its metrics.jsonl (`jaxrepr.metrics.train_seconds`), and the
`--train_time` column of launch/summarize_runs.py that states it beside a results table."""

import json

import pytest

from jaxrepr.errors import DataError
from jaxrepr.metrics import train_seconds
from launch import _run_tables


def _lines(path, rows, steps=200, log_every=50):
  path.mkdir(parents=True)
  (path / "config.json").write_text(
    json.dumps({"train": {"steps": steps, "batch_size": 8, "log_every": log_every}})
  )
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_the_time_is_the_steps_of_each_interval_over_its_rate(tmp_path):
  run = _lines(
    tmp_path / "a_s0",
    [
      {"step": 50, "train/steps_per_second": 5.0},  # 10 s, compilation included
      {"step": 100, "train/steps_per_second": 10.0},  # 5 s
      {"step": 100, "test/accuracy": 0.5},  # evaluations carry no rate
      {"step": 150, "train/steps_per_second": 2.5},  # 20 s, the evaluation before it included
    ],
  )
  assert train_seconds(run, log_every=50) == pytest.approx(35.0)


def test_after_a_resume_the_steps_trained_again_count_as_one_interval(tmp_path):
  run = _lines(
    tmp_path / "a_s0",
    [
      {"step": 50, "train/steps_per_second": 10.0},  # 5 s
      {"step": 100, "train/steps_per_second": 10.0},  # 5 s; stopped, resumed from step 50
      {"step": 100, "train/steps_per_second": 5.0},  # 50 steps again: 10 s
      {"step": 150, "train/steps_per_second": 10.0},  # 5 s
    ],
  )
  assert train_seconds(run, log_every=50) == pytest.approx(25.0)
  with pytest.raises(DataError, match="no train/steps_per_second"):
    train_seconds(_lines(tmp_path / "b_s0", [{"step": 10, "test/accuracy": 0.5}]), 50)


def test_the_column_gives_each_seeds_minutes(tmp_path):
  for seed, rate in ((0, 1.0), (1, 0.5), (2, 8.0)):
    _lines(
      tmp_path / f"cnn_s{seed}",
      [
        {"step": 100, "train/steps_per_second": rate},
        {"step": 100, "train/steps_per_second": rate},  # resumed: one log interval (100 steps)
        {"step": 200, "train/steps_per_second": rate},
        {"step": 200, "test/accuracy": 0.9},
      ],
      log_every=100,
    )
  groups = _run_tables.group_runs(_run_tables.expand([f"{tmp_path}/*"]), r"_s(\d+)$")
  text = _run_tables.table(groups, ["test/accuracy"], 100.0, 1, False, train_time=True)[0]
  assert text.splitlines()[0] == _run_tables.header(["test/accuracy"], train_time=True)[0]
  assert "| 200 steps x 8 | 5.0 / 10 / 0.6 |" in text  # 300 s, 600 s and 37.5 s
  plain = _run_tables.table(groups, ["test/accuracy"], 100.0, 1, False)[0]
  assert "train min" not in plain
