"""`launch/keep_runs.py`: finished runs' records copied where they are committed, so that a results
table is regenerated from them on a fresh clone, with the same grouping as from the workdirs."""

import json
import os
import subprocess
import sys

import pytest

from jaxrepr.errors import ConfigError
from launch import _run_tables, keep_runs
from tests.core.helpers import REPO

SCRIPT = os.path.join(REPO, "launch", "keep_runs.py")


def _run(path, final_step, steps=100, value=0.9):
  """A run directory configured for `steps` steps whose last evaluation is at `final_step`, with
  a checkpoint directory that must not be kept."""
  os.makedirs(os.path.join(path, "checkpoints", "100"))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"train": {"steps": steps, "batch_size": 8}, "commit": "abc1234"}, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 50, "train/loss": 1.0}) + "\n")
    f.write(json.dumps({"step": final_step, "test/accuracy": value}) + "\n")
  return path


def _keep(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=REPO)


def _table(pattern):
  groups = _run_tables.group_runs(_run_tables.expand([pattern]), r"_s(\d+)$")
  return _run_tables.table(groups, ["test/accuracy"], 100.0, 1, False)[0]


def test_kept_runs_give_the_same_table_and_only_the_record_files(tmp_path):
  runs, kept = tmp_path / "runs", tmp_path / "results"
  _run(runs / "cnn_s0", 100, value=0.90)
  _run(runs / "cnn_s1", 100, value=0.94)
  for seed, value in ((0, 0.5), (1, 0.7)):  # a multi-seed workdir keeps its s<seed> layout
    _run(runs / "chain" / f"s{seed}", 100, value=value)
  done = _keep(f"--runs={runs}/*", f"--into={kept}")
  assert done.returncode == 0, done.stderr
  assert sorted(os.listdir(kept)) == ["chain", "cnn_s0", "cnn_s1"]
  assert sorted(os.listdir(kept / "chain")) == ["s0", "s1"]
  assert sorted(os.listdir(kept / "cnn_s0")) == ["config.json", "metrics.jsonl"]
  assert _table(f"{kept}/*") == _table(f"{runs}/*")
  assert "92.0 +- 2.8" in _table(f"{kept}/*")


def test_an_unfinished_run_is_refused_or_skipped_by_name(tmp_path):
  runs, kept = tmp_path / "runs", tmp_path / "results"
  _run(runs / "cnn_s0", 100)
  _run(runs / "cnn_s1", 60)  # stopped before its final evaluation
  training = _run(runs / "cnn_s2", 60)  # still training: no evaluation logged yet
  with open(os.path.join(training, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 50, "train/loss": 1.0}) + "\n")
  refused = _keep(f"--runs={runs}/*", f"--into={kept}")
  assert refused.returncode != 0
  assert "cnn_s1" in refused.stderr and "--skip_incomplete" in refused.stderr
  assert not kept.exists()  # nothing kept when one run is refused
  skipped = _keep(f"--runs={runs}/*", f"--into={kept}", "--skip_incomplete")
  assert skipped.returncode == 0, skipped.stderr
  assert os.listdir(kept) == ["cnn_s0"]
  assert "skipped" in skipped.stderr and "cnn_s1" in skipped.stderr and "cnn_s2" in skipped.stderr


def test_a_kept_record_is_only_overwritten_when_asked(tmp_path):
  run, dest = str(_run(tmp_path / "runs" / "cnn_s0", 100, value=0.90)), tmp_path / "kept"
  assert keep_runs.keep(run, str(dest), replace=False) == "kept"
  assert keep_runs.keep(run, str(dest), replace=False) == "unchanged"
  with open(os.path.join(run, "metrics.jsonl"), "a") as f:  # the run was resumed and extended
    f.write(json.dumps({"step": 100, "test/accuracy": 0.95}) + "\n")
  with pytest.raises(ConfigError, match="--replace"):
    keep_runs.keep(run, str(dest), replace=False)
  assert "0.95" not in (dest / "metrics.jsonl").read_text()
  assert keep_runs.keep(run, str(dest), replace=True) == "replaced"
  assert "0.95" in (dest / "metrics.jsonl").read_text()


def test_an_evaluators_report_files_are_kept_and_replaced_with_the_record(tmp_path):
  run, dest = _run(tmp_path / "runs" / "enroll", 100), tmp_path / "kept"
  for name in ("enroll_same_step100.json", "enroll_shifted_step100.json"):
    (run / name).write_text('{"metrics": {}}')
  (run / "latent_space_step100.png").write_text("a figure: not a record")
  assert keep_runs.keep(str(run), str(dest), replace=False) == "kept"
  assert sorted(os.listdir(dest)) == [
    "config.json",
    "enroll_same_step100.json",
    "enroll_shifted_step100.json",
    "metrics.jsonl",
  ]
  assert keep_runs.keep(str(run), str(dest), replace=False) == "unchanged"
  (run / "enroll_shifted_step100.json").unlink()  # evaluated again: another set of files
  with pytest.raises(ConfigError, match="--replace"):  # the kept one has a file more
    keep_runs.keep(str(run), str(dest), replace=False)
  (run / "enroll_shifted_step200.json").write_text('{"metrics": {}}')
  with pytest.raises(ConfigError, match="--replace"):
    keep_runs.keep(str(run), str(dest), replace=False)
  assert keep_runs.keep(str(run), str(dest), replace=True) == "replaced"
  assert sorted(os.listdir(dest)) == sorted(keep_runs.record_names(str(run)))
  assert "enroll_shifted_step100.json" not in os.listdir(dest)


def test_a_seed_directory_keeps_its_workdirs_name_and_a_run_named_twice_is_kept_once(tmp_path):
  runs = tmp_path / "runs"
  for seed in (0, 1):
    _run(runs / "chain" / f"s{seed}", 100)
  _run(runs / "sweep" / "optim.lr=0.1" / "s0", 100)
  _run(runs / "cnn_s0", 100)
  named = keep_runs.records(
    [f"{runs}/chain/s*", f"{runs}/chain", f"{runs}/sweep/optim.lr=0.1", f"{runs}/cnn_s0/"]
    + [os.path.relpath(runs / "cnn_s0")]  # the same run, spelt another way
  )
  assert [inner for _, inner in named] == [
    "chain/s0",
    "chain/s1",
    "sweep/optim.lr=0.1/s0",
    "cnn_s0",
  ]
  _run(tmp_path / "other" / "cnn_s0", 100)
  with pytest.raises(ConfigError, match="would both be kept as 'cnn_s0'"):
    keep_runs.records([f"{runs}/cnn_s0", f"{tmp_path}/other/cnn_s0"])


def test_a_conflict_stops_the_command_before_anything_is_copied(tmp_path):
  runs, kept = tmp_path / "runs", tmp_path / "results"
  _run(runs / "a_s0", 100)
  _run(runs / "b_s0", 100)
  os.makedirs(kept / "b_s0")
  (kept / "b_s0" / "metrics.jsonl").write_text("another run\n")
  clash = _keep(f"--runs={runs}/*", f"--into={kept}")
  assert clash.returncode != 0 and "--replace" in clash.stderr
  assert not (kept / "a_s0").exists()


def test_a_directory_that_is_not_a_run_is_named(tmp_path):
  (tmp_path / "notes").mkdir()
  missing = _keep(f"--runs={tmp_path}/notes", f"--into={tmp_path}/results")
  assert missing.returncode != 0 and "notes" in missing.stderr
  assert len(missing.stderr.strip().splitlines()) == 1


def test_runs_of_one_pattern_that_share_a_name_keep_the_path_from_the_patterns_fixed_part(tmp_path):
  runs = tmp_path / "runs" / "distill"
  for workdir in ("n2", "n3"):
    for stage in (0, 1):
      _run(runs / workdir / f"stage_{stage}", 100)
  named = keep_runs.records([f"{runs}/*/stage_*", f"{runs}/n2/stage_1"])
  assert [inner for _, inner in named] == ["n2/stage_0", "n2/stage_1", "n3/stage_0", "n3/stage_1"]
  for workdir in ("n2", "n3"):
    _run(runs / workdir / "teacher", 100)
  named = keep_runs.records([f"{runs}/*/teacher"])  # each 'teacher' alone would clash
  assert [inner for _, inner in named] == ["n2/teacher", "n3/teacher"]
  # a stage keeps its workdir's name, also when a pattern names one workdir's stages
  assert [inner for _, inner in keep_runs.records([f"{runs}/n3/stage_0"])] == ["n3/stage_0"]
  assert [inner for _, inner in keep_runs.records([f"{runs}/n2/stage_*"])] == [
    "n2/stage_0",
    "n2/stage_1",
  ]
  assert [inner for _, inner in keep_runs.records([f"{runs}/*/stage_0"])] == [
    "n2/stage_0",
    "n3/stage_0",
  ]
  _run(tmp_path / "machine_a" / "table" / "x_s0", 100)
  _run(tmp_path / "machine_b" / "table" / "x_s1", 100)
  named = keep_runs.records([f"{tmp_path}/machine_*/table/x_s*"])
  assert [inner for _, inner in named] == ["x_s0", "x_s1"]  # seeds gathered from two places
